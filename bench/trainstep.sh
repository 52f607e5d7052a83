#!/usr/bin/env bash
# Training-step throughput of the default PyramidNet at batch 64: ours (Go,
# BenchmarkTrainStepPyramidNetDefault) against PyTorch running the same graph
# file through bench/torch_twin.py, both on 2 threads. Run from anywhere:
#   bench/trainstep.sh
# Needs the nn kernels (branches conv and kernels) and /usr/bin/python3 with torch.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/writegraph" ./bench/writegraph
"$tmp/writegraph" -o "$tmp/graph.json"

# GOMAXPROCS=2: the machine's two cores; OpenBLAS is single-threaded per worker.
bench=$(GOMAXPROCS=2 go test -run '^$' -bench '^BenchmarkTrainStepPyramidNetDefault$' \
	-benchtime 10x -count 1 ./models)
echo "$bench" | grep -E '^Benchmark' || { echo "$bench"; exit 1; }
ours=$(echo "$bench" | awk '/^Benchmark/ { for (i = 2; i <= NF; i++) if ($i == "images/s") print $(i-1) }')

torch=$(/usr/bin/python3 bench/torch_twin.py "$tmp/graph.json" --batch 64 --steps 10 --threads 2)
echo "torch: $torch"
theirs=$(echo "$torch" | awk '{ print $1 }')

awk -v o="$ours" -v t="$theirs" 'BEGIN {
	printf "ours %.1f images/s, PyTorch %.1f images/s, ratio ours/PyTorch %.2f\n", o, t, o / t }'
