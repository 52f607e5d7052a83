#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library (the C API that
# github.com/yalue/onnxruntime_go v1.27.0 speaks) into a cache directory
# outside the repository. Debian has no onnxruntime package; the npm package
# onnxruntime-node ships the Linux x64 library. `npm pack` only downloads the
# tarball (no install scripts run) and checks it against the registry's
# integrity hash; we pin that hash too, so a changed upstream tarball is an
# error rather than a silently different runtime.
#
# Idempotent: when the library is already there with the expected checksum,
# nothing is fetched. Prints the library path on the last line of stdout;
# bayesnas finds it there without configuration (or through
# ONNXRUNTIME_LIB / the onnxruntime.lib config value).
set -euo pipefail

version=1.24.1
integrity='sha512-Ex/oUXKdhDoxvlNxBT3oYtW0MH88yYpPlXQeVQUXpcJQmN24usd/8RCoPLN5kCHwDsiZ+nqsnjciyFRl423dQw=='
cache="${BAYESNAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayesnas}"
dir="$cache/onnxruntime-$version"
lib="$dir/libonnxruntime.so.1"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "ort.sh: only linux x64 is packaged by onnxruntime-node's napi-v6 build; set ONNXRUNTIME_LIB to your own libonnxruntime" >&2; exit 1 ;;
esac

if [ -f "$lib" ] && [ -f "$dir/SHA256SUMS" ] && (cd "$dir" && sha256sum --quiet -c SHA256SUMS); then
  echo "ort.sh: ONNX Runtime $version already in $dir" >&2
  echo "$lib"
  exit 0
fi

command -v npm >/dev/null || { echo "ort.sh: npm is needed to fetch onnxruntime-node@$version (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "ort.sh: fetching onnxruntime-node@$version with npm pack" >&2
(cd "$tmp" && npm pack --silent "onnxruntime-node@$version" >/dev/null)
tgz="$tmp/onnxruntime-node-$version.tgz"
[ -f "$tgz" ] || { echo "ort.sh: npm pack did not produce $tgz" >&2; exit 1; }
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  echo "ort.sh: $tgz has integrity $got, want $integrity" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1 package/package.json package/README.md
grep -q '"license": "MIT"' "$tmp/package/package.json" || { echo "ort.sh: onnxruntime-node@$version no longer says MIT in package.json; check its license before use" >&2; exit 1; }
mkdir -p "$dir"
# Copy to a temporary name and rename, so an interrupted run never leaves a
# truncated library where the resolver would pick it up.
cp "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$dir/.libonnxruntime.so.1.tmp"
# The tarball has no LICENSE file: its package.json says MIT and its README
# points at onnxruntime's, so we keep both and write the MIT notice out.
cp "$tmp/package/package.json" "$dir/package.json"
cp "$tmp/package/README.md" "$dir/README.md"
{ printf 'ONNX Runtime (https://github.com/microsoft/onnxruntime), distributed as the\nnpm package onnxruntime-node, is licensed under the MIT License:\n\n'
  cat "$(dirname "$0")/onnxruntime-mit.txt"; } > "$dir/LICENSE"
mv "$dir/.libonnxruntime.so.1.tmp" "$lib"
(cd "$dir" && sha256sum libonnxruntime.so.1 LICENSE package.json > SHA256SUMS)
printf 'onnxruntime %s from npm onnxruntime-node@%s (%s), MIT license: see LICENSE\n' \
  "$version" "$version" "$integrity" > "$dir/SOURCE"
echo "ort.sh: installed $lib" >&2
echo "$lib"
