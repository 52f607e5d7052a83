//go:build amd64 && !purego

package tapsum

import "golang.org/x/sys/cpu"

// UseAVX2 selects the AVX2+FMA kernels of tapsum_amd64.s; tests turn it off
// to check the Go kernels too.
// cpu.X86.HasAVX2 also checks that the OS saves the YMM registers.
var UseAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// macAVX2 is MAC on a grid checked by the caller.
//
//go:noescape
func macAVX2(out []float32, ostride int, src []float32, sstride, rows, width int, offs []int, w []float32, init float32, acc bool)

// dotsAVX2 is Dots on a grid checked by the caller.
//
//go:noescape
func dotsAVX2(dy []float32, dstride int, src []float32, sstride, rows, width int, offs []int, sums []float32)
