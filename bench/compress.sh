#!/usr/bin/env bash
# Compression to device latency budgets: the Bayesian method against the
# uniform-width and L1 baselines, at equal training (bayes: SPARSITY epochs
# of sparsity training + FT-SPARSITY of fine-tuning; baselines: FT epochs of
# fine-tuning), then every network measured in ONNX Runtime and tabled.
#
#   bench/compress.sh train    BASE OUT     # compress BASE at every budget/method/seed
#   bench/compress.sh measure  BASE OUT     # export --validate BASE and each (quiet machine!)
#   bench/compress.sh table    BASE OUT     # markdown table + accuracy-latency PNG
#
# Env: PROFILE (profiles/native-1t.yaml), BUDGETS ("0.7x 0.5x 0.3x 0.2x"),
# SEEDS ("1"), SEEDS2_AT (budgets with a second seed: "0.5x 0.3x"), FT (2),
# SPARSITY (1), DATA_LIMIT (0: all training images), METHODS, VERIFY (true:
# time selections on the device while compressing; false: the profile alone,
# for accuracy runs on a busy machine, timed together afterwards), DISTILL
# (0: fine-tune on the labels; alpha in (0,1]: against the trained network too),
# REACH (bayes: fraction of the sparsity training at which the switched-off
# groups meet the budget; "": compress's default).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-profiles/native-1t.yaml}
BUDGETS=${BUDGETS:-"0.7x 0.5x 0.3x 0.2x"}
SEEDS2_AT=${SEEDS2_AT:-"0.5x 0.3x"}
METHODS=${METHODS:-"bayes l1 uniform"}
VERIFY=${VERIFY:-true}
FT=${FT:-2}
SPARSITY=${SPARSITY:-1}
DATA_LIMIT=${DATA_LIMIT:-0}
DISTILL=${DISTILL:-0}
REACH=${REACH:-}
bin=bin/bayesnas

case "${1:-}" in
train)
	base=$2 out=$3
	mkdir -p "$out"
	for b in $BUDGETS; do
		seeds=1
		[[ " $SEEDS2_AT " == *" $b "* ]] && seeds="1 2"
		for s in $seeds; do
			for m in $METHODS; do
				dir=$out/$m-$b-s$s
				[[ -f $dir/compression.json ]] && { echo "skip $dir (done)"; continue; }
				epochs=$FT extra=()
				if [[ $m == bayes ]]; then
					epochs=$((FT - SPARSITY))
					extra=(--sparsity-epochs "$SPARSITY")
					[[ -n $REACH ]] && extra+=(--reach "$REACH")
				fi
				echo "== $dir"
				/usr/bin/time -f "$dir: %e s" "$bin" compress --run "$base" --profile "$PROFILE" --budget "$b" \
					--method "$m" --seed "$s" --epochs "$epochs" --data-limit "$DATA_LIMIT" --verify="$VERIFY" --distill "$DISTILL" --out "$dir" "${extra[@]}" \
					>"$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; tail -3 "$dir.log"; }
			done
		done
	done
	;;
measure)
	base=$2 out=$3
	threads=$(awk '/intra_op_threads:/ { print $2; exit }' "$PROFILE")
	for dir in "$base" "$out"/*/; do
		dir=${dir%/}
		[[ -f $dir/summary.json ]] || continue
		echo "== $dir"
		"$bin" export --run "$dir" --validate --threads "${threads:-1}" --repeats 300 >"$dir.export.log" 2>&1 ||
			{ echo "FAILED: $dir"; tail -3 "$dir.export.log"; }
	done
	;;
table)
	go run ./bench/compresstable --base "$2" --out "$3/accuracy-latency.png" "$3"
	;;
*)
	sed -n 2,14p "$0"
	exit 2
	;;
esac
