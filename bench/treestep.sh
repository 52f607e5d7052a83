#!/usr/bin/env bash
# Training-step throughput of the default tree-cell supernet
# (models.PyramidTreeDefault) at batch 64: ours (Go,
# BenchmarkTrainStepPyramidTreeDefault) against PyTorch running the same
# graph file through bench/tree_torch.py, both on 2 threads. tree_torch.py
# first checks the twin's per-node parameter counts and output shapes
# against `bayesnas describe --nodes`. Each side is timed RUNS times (Go:
# -count, PyTorch: timed runs after warm-up) and the medians are compared;
# on a shared machine the spread is large, so read the per-run lines too.
#   bench/treestep.sh                 # RUNS=3 STEPS=3
#   RUNS=5 STEPS=2 bench/treestep.sh
# Needs /usr/bin/python3 with torch.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
steps=${STEPS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/bayesnas" ./cmd/bayesnas
"$tmp/bayesnas" describe --builder pyramid-tree --out "$tmp/graph.json" --nodes >"$tmp/describe.txt"
head -3 "$tmp/describe.txt"

# GOMAXPROCS=2: the machine's two cores, as torch.set_num_threads(2).
bench=$(GOMAXPROCS=2 go test -run '^$' -bench '^BenchmarkTrainStepPyramidTreeDefault$' \
	-benchtime "${steps}x" -count "$runs" ./models)
echo "$bench" | grep -E '^Benchmark' || { echo "$bench"; exit 1; }
ours=$(echo "$bench" | awk '/^Benchmark/ { for (i = 2; i <= NF; i++) if ($i == "images/s") print $(i-1) }' |
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2 }')
echo "ours: median $ours images/s over $runs runs of $steps steps"

torch=$(/usr/bin/python3 bench/tree_torch.py "$tmp/graph.json" --describe "$tmp/describe.txt" \
	--batch 64 --steps "$steps" --runs "$runs" --threads 2)
echo "$torch" | sed 's/^/torch: /'
theirs=$(echo "$torch" | awk '/^median/ { print $2 }')

awk -v o="$ours" -v t="$theirs" 'BEGIN {
	printf "ours %.2f images/s, PyTorch %.2f images/s, ratio ours/PyTorch %.2f (medians; noisy on a shared machine)\n", o, t, o / t }'
