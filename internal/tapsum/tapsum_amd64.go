//go:build amd64 && !purego

package tapsum

// UseAVX2 selects the AVX2+FMA kernels of tapsum_amd64.s; tests turn it off
// to check the Go kernels too.
var UseAVX2 = cpuHasAVX2FMA()

// macAVX2 is MAC on a grid checked by the caller.
//
//go:noescape
func macAVX2(out []float32, ostride int, src []float32, sstride, rows, width int, offs []int, w []float32, init float32, acc bool)

// dotsAVX2 is Dots on a grid checked by the caller.
//
//go:noescape
func dotsAVX2(dy []float32, dstride int, src []float32, sstride, rows, width int, offs []int, sums []float32)

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
