#!/bin/sh
# Retrains the derived network and the random networks that bench/proxycells
# wrote into DIR (derived.json, random1.json, ...), one after the other, with
# the same configuration and seed, then prints every validation and test
# accuracy and the derived network's rank (issue 4: is the searched cell
# better than random cells of the same space and size?).
#
# Selection (issue 15): the rank that decides is the rank by validation
# accuracy (val_acc of summary.json: the CONFIG's data.val_count images carved
# from the training set, the same split for every run as the seed is the
# same); the rank by test accuracy (test_acc) is printed apart, as the report,
# never as the choice. results.tsv in RUNS holds name, params, val_acc,
# test_acc and train_s per network. A CONFIG without a validation split
# (val_count 0) is refused: it could only rank on the test set.
#
# usage: bench/retrain.sh DIR
#   CONFIG   training configuration (default configs/retrain-proxy.yaml)
#   SEED     seed of every run (default 1)
#   RUNS     where the run directories go (default DIR/runs): RUNS/derived, ...
# Any BAYESNAS_* variable reaches every run, e.g. a smoke test of the script:
#   BAYESNAS_DATA_LIMIT=256 RUNS=/tmp/retrain-smoke bench/retrain.sh DIR
# A run directory that already holds a checkpoint is continued with --resume,
# so an interrupted sweep picks up where it stopped; bayesnas refuses to
# continue a run made with other settings (then choose another RUNS). A run
# resumed after its last epoch is only re-evaluated: its "train s" is then ~0.
# The full sweep (6 networks at 3-4 min each on 2 quiet cores) takes 20-30 min;
# the validation pass adds 5,000 evaluated images per epoch per network.
set -eu
if [ $# -ne 1 ]; then
	echo "usage: $0 DIR (a directory written by go run ./bench/proxycells)" >&2
	exit 2
fi
dir=$1
cd "$(dirname "$0")/.."
config=${CONFIG:-configs/retrain-proxy.yaml}
seed=${SEED:-1}
runs=${RUNS:-$dir/runs}
if [ ! -f "$dir/derived.json" ]; then
	echo "$0: $dir/derived.json not found (write it with go run ./bench/proxycells -out $dir)" >&2
	exit 1
fi
if [ ! -f "$config" ]; then
	echo "$0: CONFIG $config not found" >&2
	exit 1
fi
# Numeric order (random10 after random9), derived first.
# OTHERS names other networks of DIR to compare instead (e.g. the tree
# backbones of bench/treecells: OTHERS="identity sep3").
names="derived ${OTHERS:-$(cd "$dir" && ls random*.json 2>/dev/null | sed 's/\.json$//' | sort -k1.7n | tr '\n' ' ')}"
if [ "$names" = "derived " ]; then
	echo "$0: no random*.json in $dir" >&2
	exit 1
fi

# A run without a validation split could only be ranked on the test set.
valcount=$(awk '$1 == "val_count:" { print $2; exit }' "$config")
if [ -z "$valcount" ] || [ "$valcount" = 0 ] || [ "${BAYESNAS_DATA_VAL_COUNT:-}" = 0 ]; then
	echo "$0: CONFIG $config has no validation split (data.val_count ${BAYESNAS_DATA_VAL_COUNT:-${valcount:-unset}}): the networks must be compared on validation accuracy" >&2
	exit 1
fi

go build -o bin/bayesnas ./cmd/bayesnas
mkdir -p "$runs"
# summary.json is indented one key per line: "key": value,
field() {
	awk -v k="\"$2\":" '$1 == k { v = $2; sub(/,$/, "", v); print v; exit }' "$1"
}
for name in $names; do
	run=$runs/$name
	resume=
	if [ -f "$run/checkpoint.safetensors" ]; then
		resume=--resume
	fi
	start=$(date +%s)
	if ! bin/bayesnas train --config "$config" --arch "$dir/$name.json" --seed "$seed" \
		--run-dir "$run" $resume >"$runs/$name.log" 2>&1; then
		echo "$0: training $name failed; the end of $runs/$name.log:" >&2
		tail -5 "$runs/$name.log" >&2
		exit 1
	fi
	echo "$name: $(tail -1 "$runs/$name.log") [$(($(date +%s) - start)) s]"
	echo "$name: val_acc $(field "$run/summary.json" val_acc), test_acc $(field "$run/summary.json" test_acc)"
done

table=$runs/results.tsv
printf 'name\tparams\tval_acc\ttest_acc\ttrain_s\n' >"$table"
for name in $names; do
	s=$runs/$name/summary.json
	val=$(field "$s" val_acc)
	if [ -z "$val" ]; then
		# val_acc is left out of summary.json when the run had no validation split.
		echo "$0: $s has no val_acc (was $name trained without a validation split? remove $runs/$name and rerun)" >&2
		exit 1
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(field "$s" params)" "$val" "$(field "$s" test_acc)" "$(field "$s" train_seconds)" >>"$table"
done
echo
echo "config $config, seed $seed, runs in $runs"
awk -F '\t' '
NR == 1 { printf "%-10s %10s %9s %9s %8s\n", "name", "params", "val acc", "test acc", "train s"; next }
{
	printf "%-10s %10d %8.2f%% %8.2f%% %8.0f\n", $1, $2, 100 * $3, 100 * $4, $5
	val[NR] = $3; test[NR] = $4; name[NR] = $1; n++
	if ($1 == "derived") { dv = $3; dt = $4 }
}
function rank(acc, d, what,    i, better, ties) {
	better = 0; ties = 0
	for (i in acc) {
		if (acc[i] > d) better++
		else if (acc[i] == d && name[i] != "derived") ties++
	}
	printf "derived rank by %s: %d of %d (1 = best %s", what, better + 1, n, what
	if (ties > 0) printf "; tied with %d", ties
	printf ")\n"
}
END {
	rank(val, dv, "validation accuracy")
	printf "(the choice is made on validation accuracy; the test accuracy below is the report only)\n"
	rank(test, dt, "test accuracy")
}' "$table"
