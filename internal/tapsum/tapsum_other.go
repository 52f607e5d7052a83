//go:build !amd64 || purego

package tapsum

// UseAVX2 is false without the amd64 assembly: MAC and Dots run in Go.
var UseAVX2 = false

// Never called while UseAVX2 is false; they exist so that the callers compile.

func macAVX2(out []float32, ostride int, src []float32, sstride, rows, width int, offs []int, w []float32, init float32, acc bool) {
	panic("tapsum: no AVX2 kernels in this build")
}

func dotsAVX2(dy []float32, dstride int, src []float32, sstride, rows, width int, offs []int, sums []float32) {
	panic("tapsum: no AVX2 kernels in this build")
}
