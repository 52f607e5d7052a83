#!/bin/sh
# Issue 15, part 3: the demo's search stage (search, derivation, retraining at
# width 16, the retrained network timed on the device) without latency, with
# latency-scaled op penalties alone, and with two latency targets, then every
# retrained network timed again side by side (bench/searchlat: interleaved
# rounds, so that a slow spell of a shared machine falls on all of them).
#
# usage: bench/searchlat.sh [OUT]         (default runs/slat; about 8 min a run on 2 quiet cores)
#   PROFILE  device profile (default profiles/native-1t.yaml)
#   TARGETS  two or more latency targets in ms (default "0.18 0.14")
#   ROUNDS   interleaved timing rounds (default 9)
# A run directory that already holds a finished search stage is skipped by
# the pipeline (its manifest), so an interrupted sweep picks up where it
# stopped. Time it with nothing else running on the machine.
set -eu
cd "$(dirname "$0")/.."
out=${1:-runs/slat}
profile=${PROFILE:-profiles/native-1t.yaml}
go build -o bin/bayesnas ./cmd/bayesnas
run() {
	name=$1
	shift
	echo "== $name: $* ($(date +%T))"
	env "$@" bin/bayesnas pipeline --config configs/pipeline-demo.yaml --profile "$profile" \
		--run "$out-$name" --stages search >"$out-$name.log" 2>&1 || {
		tail -5 "$out-$name.log" >&2
		exit 1
	}
	tail -1 "$out-$name.log"
}
run free
run w1 BAYESNAS_SEARCH_LATENCY_WEIGHT=1
runs="$out-free $out-w1"
for t in ${TARGETS:-0.18 0.14}; do
	run "t$t" BAYESNAS_SEARCH_LATENCY_TARGET_MS="$t"
	runs="$runs $out-t$t"
done
go run ./bench/searchlat -profile "$profile" -rounds "${ROUNDS:-9}" $runs
