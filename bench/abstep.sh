#!/usr/bin/env bash
# Training-step speed of several commits side by side: builds the models
# package's test binary at each revision and runs the step benchmarks
# interleaved (revision after revision, ROUNDS times), so the drift of a
# shared machine falls on all of them alike; prints each revision's median
# images/s, its spread over rounds and its ratio to the first revision.
#
#   bench/abstep.sh REV [REV ...]          # e.g. bench/abstep.sh fc2f417 HEAD
#
# Env: BENCH (regexp of benchmarks, default both step benchmarks: the
# default PyramidNet and the tree supernet), ROUNDS (5), BENCHTIME (10x).
# Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-'^BenchmarkTrainStep(PyramidNetDefault|PyramidTreeDefault)$'}
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-10x}
[[ $# -ge 1 ]] || { sed -n 2,12p "$0"; exit 2; }
tmp=$(mktemp -d)
trap 'for d in "$tmp"/wt-*; do [[ -d $d ]] && git worktree remove --force "$d"; done; rm -rf "$tmp"' EXIT

revs=("$@")
for i in "${!revs[@]}"; do
	git worktree add -q --detach "$tmp/wt-$i" "${revs[$i]}"
	(cd "$tmp/wt-$i" && go test -c -o "$tmp/models-$i.test" ./models)
done
for r in $(seq "$ROUNDS"); do
	for i in "${!revs[@]}"; do
		(cd "$tmp/wt-$i/models" && GOMAXPROCS=2 "$tmp/models-$i.test" -test.run '^$' -test.bench "$BENCH" \
			-test.benchtime "$BENCHTIME" -test.benchmem) |
			awk -v rev="$i" '/^Benchmark/ { for (j = 2; j <= NF; j++) if ($j == "images/s") print rev, $1, $(j-1) }' >>"$tmp/results"
	done
done
awk -v revs="${revs[*]}" '
BEGIN { n = split(revs, name, " ") }
{ sub(/-[0-9]+$/, "", $2); v[$2, $1] = v[$2, $1] " " $3; bench[$2] = 1 }
function median(s,   a, k, i, j, t) {
	k = split(s, a, " ")
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function spread(s,   a, k, i, lo, hi) {
	k = split(s, a, " "); lo = a[1]; hi = a[1]
	for (i = 2; i <= k; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
	return sprintf("%.1f-%.1f", lo, hi)
}
END {
	for (b in bench) {
		print b
		base = median(v[b, 0])
		for (i = 0; i < n; i++) {
			m = median(v[b, i])
			printf "  %-12s median %7.1f images/s  (rounds %s)  ratio %.3f\n", name[i + 1], m, spread(v[b, i]), m / base
		}
	}
}' "$tmp/results"
