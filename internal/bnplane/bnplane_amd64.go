//go:build amd64 && !purego

package bnplane

import "golang.org/x/sys/cpu"

// UseAVX2 selects the AVX2+FMA kernels of bnplane_amd64.s; tests turn it
// off to check the Go kernels too.
// cpu.X86.HasAVX2 also checks that the OS saves the YMM registers.
var UseAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// The kernels below run on a grid checked by the caller (rows and width
// positive, every operand long enough).

//go:noescape
func sumsAboutAVX2(x []float32, stride, rows, width int, shift float32) (s, q float64)

//go:noescape
func affineAVX2(y, x, add []float32, stride, rows, width int, scale, shift float32, useAdd, relu bool)

//go:noescape
func dySumsAVX2(dy, mask, x []float32, stride, rows, width int, mean float32, useMask bool) (s, sx float64)

//go:noescape
func inputGradAVX2(dx, dy, mask, x []float32, stride, rows, width int, k, a, b, mean float32, useMask, assign bool)

//go:noescape
func addToAVX2(dst, src []float32, stride, rows, width int, assign bool)
