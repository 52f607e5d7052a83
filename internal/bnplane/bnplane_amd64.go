//go:build amd64 && !purego

package bnplane

// UseAVX2 selects the AVX2+FMA kernels of bnplane_amd64.s; tests turn it
// off to check the Go kernels too.
var UseAVX2 = cpuHasAVX2FMA()

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

func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// xgetbv0 reads XCR0, the register states the OS saves on context switches.
func xgetbv0() uint32

// cpuHasAVX2FMA reports whether the CPU has AVX2 and FMA and the OS saves
// the YMM registers.
func cpuHasAVX2FMA() bool {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 7 {
		return false
	}
	_, _, c1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if c1&(fma|osxsave|avx) != fma|osxsave|avx {
		return false
	}
	if xgetbv0()&6 != 6 { // XMM and YMM state
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<5) != 0 // AVX2
}
