#!/usr/bin/env bash
# Measures the committed device profiles of this machine and checks each
# against whole networks (issue 12; BENCHMARKS.md "Device latency profiles"):
#
#   profiles/native-1t.yaml   ONNX Runtime 1.24.1 built in, 1 intra-op thread
#   profiles/native-2t.yaml   the same, 2 threads
#   profiles/wasm-1t.yaml     onnxruntime-web 1.24.1 (WebAssembly) under Node, 1 thread, through the plug-in
#
# For the three spaces (proxy cells, tree cells, random widths of the default
# PyramidNet) and the networks in profiles/networks/ (the demo's retrained
# network: configs/pipeline-demo.yaml's search is deterministic), then
# `profile check` on 30 networks of each space (seed 1, apart from the
# profile's sample seeds 1000 and 1001), writing
# profiles/checks/<device>.json, and the rank correlation of the measured
# latencies between devices. Run it with nothing else on the machine:
# a training run beside it doubles the numbers.
#
#   bash bench/profiles.sh            # all three devices
#   DEVICES=native-1t bash bench/profiles.sh
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/bayesnas ./cmd/bayesnas
spaces=(--space pyramidnet --space proxy --space tree)
# Networks the bundled pipelines retrain beyond the spaces' search widths
# (the demo's derived cell stacked at width 16), measured with the spaces.
nets=()
for a in profiles/networks/*.json; do nets+=(--arch "$a"); done
declare -A dev=(
  [native-1t]="--threads 1"
  [native-2t]="--threads 2"
  [wasm-1t]="--plugin node_plugins/ort-wasm/plugin.mjs_--threads_1"
)
for d in ${DEVICES:-native-1t native-2t wasm-1t}; do
  flags=${dev[$d]}
  args=()
  if [[ $flags == --plugin* ]]; then
    args=(--plugin "$(echo "${flags#--plugin }" | tr _ ' ')")
  else
    args=($flags)
  fi
  rm -f "profiles/$d.yaml"
  start=$(date +%s)
  bin/bayesnas profile measure "${spaces[@]}" "${nets[@]}" "${args[@]}" --out "profiles/$d.yaml"
  echo "$d: profile measured in $(( $(date +%s) - start )) s"
  bin/bayesnas profile check --profile "profiles/$d.yaml" "${spaces[@]}" --n 30 --out "profiles/checks/$d.json" | tail -13
done
/usr/bin/python3 bench/devicerank.py profiles/checks/*.json
