#!/bin/sh
# Retrains the derived network and the random networks that bench/proxycells
# wrote into DIR (derived.json, random1.json, ...), one after the other, with
# the same configuration and seed, then prints every test accuracy and the
# derived network's rank (issue 4: is the searched cell better than random
# cells of the same space and size?).
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
# The full sweep (6 networks at 3-4 min each on 2 quiet cores) takes 20-30 min.
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

go build -o bin/bayesnas ./cmd/bayesnas
mkdir -p "$runs"
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
done

# summary.json is indented one key per line: "key": value,
field() {
	awk -v k="\"$2\":" '$1 == k { v = $2; sub(/,$/, "", v); print v; exit }' "$1"
}
table=$runs/results.tsv
printf 'name\tparams\ttest_acc\ttrain_s\n' >"$table"
for name in $names; do
	s=$runs/$name/summary.json
	printf '%s\t%s\t%s\t%s\n' "$name" "$(field "$s" params)" "$(field "$s" test_acc)" "$(field "$s" train_seconds)" >>"$table"
done
echo
echo "config $config, seed $seed, runs in $runs"
awk -F '\t' '
NR == 1 { printf "%-10s %10s %9s %8s\n", "name", "params", "test acc", "train s"; next }
{
	printf "%-10s %10d %8.2f%% %8.0f\n", $1, $2, 100 * $3, $4
	acc[NR] = $3; name[NR] = $1; n++
	if ($1 == "derived") d = $3
}
END {
	better = 0; ties = 0
	for (i in acc) {
		if (acc[i] > d) better++
		else if (acc[i] == d && name[i] != "derived") ties++
	}
	printf "derived rank: %d of %d (1 = best test accuracy", better + 1, n
	if (ties > 0) printf "; tied with %d", ties
	printf ")\n"
}' "$table"
