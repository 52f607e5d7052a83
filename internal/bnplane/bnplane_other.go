//go:build !amd64 || purego

package bnplane

// UseAVX2 is false without the amd64 assembly: every kernel runs in Go.
var UseAVX2 = false

// Never called while UseAVX2 is false; they exist so that the callers compile.

func sumsAboutAVX2(x []float32, stride, rows, width int, shift float32) (s, q float64) {
	panic("bnplane: no AVX2 kernels in this build")
}

func affineAVX2(y, x, add []float32, stride, rows, width int, scale, shift float32, useAdd, relu bool) {
	panic("bnplane: no AVX2 kernels in this build")
}

func dySumsAVX2(dy, mask, x []float32, stride, rows, width int, mean float32, useMask bool) (s, sx float64) {
	panic("bnplane: no AVX2 kernels in this build")
}

func inputGradAVX2(dx, dy, mask, x []float32, stride, rows, width int, k, a, b, mean float32, useMask, assign bool) {
	panic("bnplane: no AVX2 kernels in this build")
}

func addToAVX2(dst, src []float32, stride, rows, width int, assign bool) {
	panic("bnplane: no AVX2 kernels in this build")
}
