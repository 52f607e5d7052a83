#!/bin/sh
# Compares nn.BenchmarkDepthwiseConv with PyTorch on the same shapes (batch
# 64, groups = channels, forward + backward, 2 threads each) and prints
# GFLOP/s, the ratio per shape and their geometric means. The shapes are
# defined once, in nn/conv_depthwise_bench_test.go; bench/dwconv_torch.py
# parses their names. Numbers are noisy on a shared machine: run it when the
# cores are otherwise idle.
#
# usage: bench/dwconv.sh [go benchtime, default 2s] [torch seconds per shape, default 2]
set -eu
cd "$(dirname "$0")/.."
benchtime=${1:-2s}
torch_secs=${2:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "go: GOMAXPROCS ${GOMAXPROCS:-all cores}"
go test ./nn -run '^$' -bench '^BenchmarkDepthwiseConv$' -benchtime "$benchtime" >"$tmp/go.txt" || {
	cat "$tmp/go.txt"
	exit 1
}
# BenchmarkDepthwiseConv/k3s1d1_c16_32x32-2  100  11283317 ns/op  19.57 GFLOP/s ...
awk '/^BenchmarkDepthwiseConv\// {
	split($1, p, "/"); name = p[2]; sub(/-[0-9]+$/, "", name)
	for (i = 2; i < NF; i++) if ($(i+1) == "GFLOP/s") print name, $i
}' "$tmp/go.txt" >"$tmp/go.dat"
if [ ! -s "$tmp/go.dat" ]; then
	echo "no BenchmarkDepthwiseConv results" >&2
	exit 1
fi

echo "torch: $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), 2 threads"
# shellcheck disable=SC2046 # one argument per shape name
/usr/bin/python3 bench/dwconv_torch.py "$torch_secs" $(awk '{print $1}' "$tmp/go.dat") >"$tmp/torch.dat"

awk '
FNR == NR { torch[$1] = $2; next }
BEGIN { printf "%-20s %10s %10s %7s\n", "shape", "ours", "pytorch", "ratio" }
{
	t = ($1 in torch) ? torch[$1] : 0
	ratio = t > 0 ? sprintf("%.2f", $2 / t) : "-"
	printf "%-20s %10.1f %10.1f %7s\n", $1, $2, t, ratio
	n++; lo += log($2); if (t > 0) lt += log(t)
}
END {
	if (n > 0) printf "%-20s %10.1f %10.1f %7.2f   (%d shapes, GFLOP/s)\n", "geomean", exp(lo / n), exp(lt / n), exp(lo / n) / exp(lt / n), n
}' "$tmp/torch.dat" "$tmp/go.dat"
