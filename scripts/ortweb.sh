#!/usr/bin/env bash
# Fetches onnxruntime-web (ONNX Runtime compiled to WebAssembly) for the
# reference device plug-in plugins/ort-wasm/plugin.mjs, into a cache
# directory outside the repository. Like scripts/ort.sh: `npm pack` only
# downloads the tarballs (no install scripts run) and we check each against a
# pinned integrity hash, so a changed upstream tarball is an error rather than
# a silently different runtime.
#
# What Node needs, found by trying the dist files: dist/ort.node.min.mjs (the
# package's "node" export) plus the WebAssembly build it loads next to itself,
# dist/ort-wasm-simd-threaded.{mjs,wasm}. ort.node.min.mjs imports the bare
# specifier "onnxruntime-common", which is not bundled, so that package (same
# version, dist/esm) is fetched too and laid out under node_modules/ where
# Node's resolver finds it. (dist/ort.wasm.min.mjs bundles onnxruntime-common
# but fails in Node with more than one thread: "fetch failed".) None of the
# other dependencies of onnxruntime-web (protobufjs, flatbuffers, long, ...)
# is used by the wasm backend.
#
# Idempotent: when the files are already there with the expected checksums,
# nothing is fetched. Prints the directory on the last line of stdout; the
# plug-in finds it there without configuration (or through
# BAYESNAS_ORTWEB_DIR).
set -euo pipefail

version=1.24.1
web_integrity='sha512-i2u395dv+ZEQBdH+aORvlu19Bzvlg5AXJ7wjxnL350hknOP9z0UeP3pVfjkpMEWMPy2T6nCQxetKTmNia6wSzg=='
common_integrity='sha512-UnV15u4p4XxoIV+jFP4hXPsW93s3QrwLSpi20HUDYHoTfI4z4sjzex3L4XDOxGGZJ/M/catrwAG2go958UQq0w=='
cache="${BAYESNAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayesnas}"
dir="$cache/onnxruntime-web-$version"
entry="node_modules/onnxruntime-web/dist/ort.node.min.mjs"

if [ -f "$dir/$entry" ] && [ -f "$dir/SHA256SUMS" ] && (cd "$dir" && sha256sum --quiet -c SHA256SUMS); then
  echo "ortweb.sh: onnxruntime-web $version already in $dir" >&2
  echo "$dir"
  exit 0
fi

command -v npm >/dev/null || { echo "ortweb.sh: npm is needed to fetch onnxruntime-web@$version (apt-get install npm)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "ortweb.sh: openssl is needed to check the tarballs (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$cache"
# Staged next to its final place (same file system), then renamed: an
# interrupted run never leaves a half-extracted runtime where the plug-in
# would pick it up.
tmp=$(mktemp -d "$cache/.onnxruntime-web-$version.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fetch() { # name integrity -> path of the checked tarball
  local name=$1 want=$2 tgz got
  echo "ortweb.sh: fetching $name@$version with npm pack" >&2
  (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null)
  tgz="$tmp/$name-$version.tgz"
  [ -f "$tgz" ] || { echo "ortweb.sh: npm pack did not produce $tgz" >&2; exit 1; }
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$want" ]; then
    echo "ortweb.sh: $tgz has integrity $got, want $want" >&2
    exit 1
  fi
  echo "$tgz"
}
web_tgz=$(fetch onnxruntime-web "$web_integrity")
common_tgz=$(fetch onnxruntime-common "$common_integrity")

stage="$tmp/stage"
web="$stage/node_modules/onnxruntime-web"
common="$stage/node_modules/onnxruntime-common"
mkdir -p "$web" "$common"
chmod 755 "$stage"
tar -xzf "$web_tgz" -C "$web" --strip-components=1 \
  package/package.json package/README.md \
  package/dist/ort.node.min.mjs package/dist/ort-wasm-simd-threaded.mjs package/dist/ort-wasm-simd-threaded.wasm
tar -xzf "$common_tgz" -C "$common" --strip-components=1 --wildcards \
  package/package.json package/README.md 'package/dist/esm/*.js'
for pkg in "$web" "$common"; do
  grep -q '"license": "MIT"' "$pkg/package.json" || { echo "ortweb.sh: $(basename "$pkg")@$version no longer says MIT in package.json; check its license before use" >&2; exit 1; }
done
# Neither tarball has a LICENSE file: their package.json files say MIT and
# the README points at onnxruntime's, so we keep both and write the MIT
# notice out.
{ printf 'ONNX Runtime (https://github.com/microsoft/onnxruntime), distributed as the\nnpm packages onnxruntime-web and onnxruntime-common, is licensed under the\nMIT License:\n\n'
  cat "$(dirname "$0")/onnxruntime-mit.txt"; } > "$stage/LICENSE"
printf 'onnxruntime-web %s from npm onnxruntime-web@%s (%s) and onnxruntime-common@%s (%s), MIT license: see LICENSE\n' \
  "$version" "$version" "$web_integrity" "$version" "$common_integrity" > "$stage/SOURCE"
(cd "$stage" && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)

# Replace a stale or damaged copy. mv -T fails rather than moving the stage
# inside a directory that another run has just put in place; that run's copy
# is then used if it checks out.
rm -rf "$dir"
if ! mv -T "$stage" "$dir" 2>/dev/null; then
  if [ -f "$dir/$entry" ] && (cd "$dir" && sha256sum --quiet -c SHA256SUMS); then
    echo "ortweb.sh: another run installed $dir meanwhile" >&2
  else
    echo "ortweb.sh: could not move the staged files to $dir" >&2
    exit 1
  fi
fi
echo "ortweb.sh: installed onnxruntime-web $version in $dir" >&2
echo "$dir"
