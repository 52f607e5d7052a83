#!/usr/bin/env bash
# ONNX Runtime vs the bayesnas engine on the default PyramidNet (random
# weights, BN statistics calibrated on real Fashion-MNIST images, until a
# trained run directory exists): accuracy of the export on the whole test set
# (max abs error, top-1 agreement) and images/s at batch 1 and 64, both
# runtimes with one thread per CPU. Numbers go to stdout and, as JSON, to
# ${OUT:-runs/bench}/ort_validation.json.
#
# Needs ONNX Runtime (scripts/ort.sh fetches it) and the Debian package
# dataset-fashion-mnist. The machine is shared: run it when it is quiet, and
# read the numbers as noisy otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/bench}"
mkdir -p "$out"
bash scripts/ort.sh >/dev/null
: "${OPENBLAS_CORETYPE:=Haswell}"
export OPENBLAS_CORETYPE
echo "== export + validation on the Fashion-MNIST test set"
go test -count=1 -run 'TestDefaultPyramidNetNumbers$' -v ./onnxrt/ -args -ort.full -ort.report="$PWD/$out/ort_validation.json" | grep -v '^=== RUN'
echo "== benchmarks (images/s; ns/op is per batch)"
go test -count=1 -run '^$' -bench 'BenchmarkDefaultPyramidNet' -benchtime "${BENCHTIME:-3s}" ./onnxrt/ | tee "$out/ort_bench.txt"
