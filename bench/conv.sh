#!/bin/sh
# Compares nn.BenchmarkConv with PyTorch on the same shapes (batch 64,
# forward + backward, 2 threads each) and prints GFLOP/s, the ratio and the
# geometric mean of the six dense 3x3 shapes. Numbers are noisy on a shared
# machine: run it when the cores are otherwise idle.
#
# usage: bench/conv.sh [go benchtime, default 2s] [torch seconds per shape, default 2]
# GEMM=go benchmarks the pure-Go GEMM instead of OpenBLAS. OPENBLAS_CORETYPE
# is passed through; when unset the Go test binary chooses it itself
# (EnsureBLASCoreType in TestMain).
set -eu
cd "$(dirname "$0")/.."
benchtime=${1:-2s}
torch_secs=${2:-2}
gemm=${GEMM:-openblas}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "go: gemm $gemm, GOMAXPROCS ${GOMAXPROCS:-all cores}, OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset (chosen by bayesnas)}"
go test ./nn -run '^$' -bench "^BenchmarkConv\$/^$gemm\$/" -benchtime "$benchtime" >"$tmp/go.txt" || {
	cat "$tmp/go.txt"
	exit 1
}
# BenchmarkConv/openblas/dense3x3_c16_32x32-2  20  46283317 ns/op  19.57 GFLOP/s ...
awk '/^BenchmarkConv\// {
	split($1, p, "/"); name = p[3]; sub(/-[0-9]+$/, "", name)
	for (i = 2; i < NF; i++) if ($(i+1) == "GFLOP/s") print name, $i
}' "$tmp/go.txt" >"$tmp/go.dat"
if [ ! -s "$tmp/go.dat" ]; then
	echo "no BenchmarkConv results for gemm $gemm" >&2
	exit 1
fi

echo "torch: $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), 2 threads"
/usr/bin/python3 bench/conv_torch.py "$torch_secs" >"$tmp/torch.dat"

awk '
FNR == NR { torch[$1] = $2; next }
BEGIN { printf "%-20s %10s %10s %7s\n", "shape", "ours", "pytorch", "ratio" }
{
	t = ($1 in torch) ? torch[$1] : 0
	ratio = t > 0 ? sprintf("%.2f", $2 / t) : "-"
	printf "%-20s %10.1f %10.1f %7s\n", $1, $2, t, ratio
	if ($1 ~ /^dense3x3_/) { n++; lo += log($2); if (t > 0) lt += log(t) }
}
END {
	if (n > 0) printf "%-20s %10.1f %10.1f %7.2f   (%d dense 3x3 shapes, GFLOP/s)\n", "geomean dense3x3", exp(lo / n), exp(lt / n), exp(lo / n) / exp(lt / n), n
}' "$tmp/torch.dat" "$tmp/go.dat"
