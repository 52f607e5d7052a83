#!/usr/bin/env bash
# Installs the Debian packages bayesnas needs, only those that are missing, so
# `go tool task setup` is cheap to run again. Extra package names may be given
# as arguments (the bench task adds the PyTorch peer).
set -euo pipefail

# libopenblas-dev: the GEMM; dataset-fashion-mnist: the default data; gcc: cgo;
# npm + openssl: fetching ONNX Runtime and onnxruntime-web (scripts/ort.sh,
# scripts/ortweb.sh); nodejs: running the WebAssembly device plug-in
# (plugins/ort-wasm); python3-onnx and libonnx-testdata: the export tests'
# onnx.checker and per-op cases.
pkgs=(libopenblas-dev dataset-fashion-mnist gcc npm nodejs openssl python3-onnx libonnx-testdata "$@")
missing=()
for p in "${pkgs[@]}"; do
  # npm and node may come from outside Debian (a Node.js install): any on PATH
  # will do.
  if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
  if [ "$p" = nodejs ] && command -v node >/dev/null; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all Debian packages present (${pkgs[*]})"
  exit 0
fi
echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
