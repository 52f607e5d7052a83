// Package tapsum has the two kernels of the depthwise convolution
// (nn/conv_depthwise.go): sums over a table of taps, each a weight and an
// offset into one flat source array. They are in a package of their own
// because package nn uses cgo, which cannot be mixed with Go assembly.
package tapsum

import "fmt"

// MAC sets out[i] (acc false) or adds to it (acc true)
// sum_t w[t] * src[offs[t]+i] for every i. The AVX2 kernel, where the CPU
// has one, does the multiples of 8 and MACGo the rest.
func MAC(out, src []float32, offs []int, w []float32, acc bool) {
	n := len(out)
	if len(offs) != len(w) {
		panic(fmt.Sprintf("tapsum.MAC: %d offsets, %d weights", len(offs), len(w)))
	}
	for _, o := range offs {
		if o < 0 || o+n > len(src) {
			panic(fmt.Sprintf("tapsum.MAC: offset %d + %d outputs outside source of %d", o, n, len(src)))
		}
	}
	n8 := 0
	if UseAVX2 {
		n8 = n &^ 7
		if n8 > 0 {
			macAVX2(out[:n8], src, offs, w, acc)
		}
	}
	if n8 < n {
		MACGo(out[n8:], src[n8:], offs, w, acc)
	}
}

// MACGo is MAC in Go, four taps per sweep so that each output is
// loaded and stored once per four multiply-adds.
func MACGo(out, src []float32, offs []int, w []float32, acc bool) {
	n := len(out)
	if !acc {
		clear(out)
	}
	t := 0
	for ; t+4 <= len(offs); t += 4 {
		w0, w1, w2, w3 := w[t], w[t+1], w[t+2], w[t+3]
		a := src[offs[t] : offs[t]+n]
		b := src[offs[t+1] : offs[t+1]+n]
		c := src[offs[t+2] : offs[t+2]+n]
		d := src[offs[t+3] : offs[t+3]+n]
		a, b, c, d = a[:len(out)], b[:len(out)], c[:len(out)], d[:len(out)]
		for i := range out {
			out[i] += w0*a[i] + w1*b[i] + w2*c[i] + w3*d[i]
		}
	}
	for ; t < len(offs); t++ {
		wt := w[t]
		a := src[offs[t] : offs[t]+n]
		a = a[:len(out)]
		for i := range out {
			out[i] += wt * a[i]
		}
	}
}

// Dots adds dot(dy, src[offs[t]:offs[t]+len(dy)]) to out[t] for every tap.
func Dots(dy, src []float32, offs []int, out []float32) {
	n := len(dy)
	if len(offs) != len(out) {
		panic(fmt.Sprintf("tapsum.Dots: %d offsets, %d outputs", len(offs), len(out)))
	}
	for _, o := range offs {
		if o < 0 || o+n > len(src) {
			panic(fmt.Sprintf("tapsum.Dots: offset %d + %d inputs outside source of %d", o, n, len(src)))
		}
	}
	n8 := 0
	if UseAVX2 {
		n8 = n &^ 7
		if n8 > 0 {
			dotsAVX2(dy[:n8], src, offs, out)
		}
	}
	if n8 < n {
		DotsGo(dy[n8:], src[n8:], offs, out)
	}
}

// DotsGo is Dots in Go, four taps per sweep so that each dy is loaded
// once per four multiply-adds.
func DotsGo(dy, src []float32, offs []int, out []float32) {
	n := len(dy)
	t := 0
	for ; t+4 <= len(offs); t += 4 {
		a := src[offs[t] : offs[t]+n]
		b := src[offs[t+1] : offs[t+1]+n]
		c := src[offs[t+2] : offs[t+2]+n]
		d := src[offs[t+3] : offs[t+3]+n]
		a, b, c, d = a[:len(dy)], b[:len(dy)], c[:len(dy)], d[:len(dy)]
		var s0, s1, s2, s3 float32
		for i, g := range dy {
			s0 += g * a[i]
			s1 += g * b[i]
			s2 += g * c[i]
			s3 += g * d[i]
		}
		out[t] += s0
		out[t+1] += s1
		out[t+2] += s2
		out[t+3] += s3
	}
	for ; t < len(offs); t++ {
		a := src[offs[t] : offs[t]+n]
		a = a[:len(dy)]
		var s float32
		for i, g := range dy {
			s += g * a[i]
		}
		out[t] += s
	}
}
