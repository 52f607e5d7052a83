//go:build !amd64 || purego

package tapsum

// UseAVX2 is false without the amd64 assembly: MAC and Dots run in Go.
var UseAVX2 = false

func macAVX2(out, src []float32, offs []int, w []float32, acc bool) { MACGo(out, src, offs, w, acc) }

func dotsAVX2(dy, src []float32, offs []int, out []float32) { DotsGo(dy, src, offs, out) }
