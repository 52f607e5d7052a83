// Package tapsum has the two kernels of the depthwise convolution
// (nn/conv_depthwise.go): sums over a table of taps, each a weight and an
// offset into one source array, over a grid of rows x width elements. They
// are in a package of their own because package nn uses cgo, which cannot be
// mixed with Go assembly.
package tapsum

import "fmt"

// Grid is Rows rows of Width elements; row r of the output (or dy) starts
// at r*OutStride and row r of a tap's source at its offset + r*SrcStride.
type Grid struct {
	Rows, Width, OutStride, SrcStride int
}

// check panics (a caller's bug, not bad input) unless every element that a
// kernel over g touches lies inside out and src: the assembly does not check.
func (g Grid) check(fn string, out, src []float32, offs []int, nw int) {
	if len(offs) != nw {
		panic(fmt.Sprintf("tapsum.%s: %d offsets, %d weights or sums", fn, len(offs), nw))
	}
	if g.Rows < 0 || g.Width < 0 || g.OutStride < g.Width || g.SrcStride < 0 {
		panic(fmt.Sprintf("tapsum.%s: bad grid %+v", fn, g))
	}
	if g.Rows == 0 || g.Width == 0 {
		return
	}
	if n := (g.Rows-1)*g.OutStride + g.Width; n > len(out) {
		panic(fmt.Sprintf("tapsum.%s: grid %+v needs %d outputs, have %d", fn, g, n, len(out)))
	}
	span := (g.Rows-1)*g.SrcStride + g.Width
	for _, o := range offs {
		if o < 0 || o+span > len(src) {
			panic(fmt.Sprintf("tapsum.%s: offset %d + %d elements outside source of %d", fn, o, span, len(src)))
		}
	}
}

// MAC sets (acc false) or adds to (acc true) every output of the grid
// out[r*OutStride+i] = init + sum_t w[t] * src[offs[t] + r*SrcStride + i],
// init being added only when acc is false.
func MAC(out, src []float32, g Grid, offs []int, w []float32, init float32, acc bool) {
	g.check("MAC", out, src, offs, len(w))
	if g.Rows == 0 || g.Width == 0 {
		return
	}
	if UseAVX2 {
		macAVX2(out, g.OutStride, src, g.SrcStride, g.Rows, g.Width, offs, w, init, acc)
		return
	}
	for r := 0; r < g.Rows; r++ {
		macRowGo(out[r*g.OutStride:r*g.OutStride+g.Width], src[r*g.SrcStride:], offs, w, init, acc)
	}
}

// macRowGo is MAC over one row in Go, four taps per sweep so that each
// output is loaded and stored once per four multiply-adds.
func macRowGo(out, src []float32, offs []int, w []float32, init float32, acc bool) {
	n := len(out)
	if !acc {
		for i := range out {
			out[i] = init
		}
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

// Dots adds to sums[t] the dot product over the grid of dy (laid out with
// OutStride) and tap t's source: sum_{r,i} dy[r*OutStride+i] *
// src[offs[t] + r*SrcStride + i].
func Dots(dy, src []float32, g Grid, offs []int, sums []float32) {
	g.check("Dots", dy, src, offs, len(sums))
	if g.Rows == 0 || g.Width == 0 {
		return
	}
	if UseAVX2 {
		dotsAVX2(dy, g.OutStride, src, g.SrcStride, g.Rows, g.Width, offs, sums)
		return
	}
	t := 0
	// Four taps per sweep so that each dy is loaded once per four multiply-adds.
	for ; t+4 <= len(offs); t += 4 {
		var s0, s1, s2, s3 float32
		for r := 0; r < g.Rows; r++ {
			d := dy[r*g.OutStride : r*g.OutStride+g.Width]
			rs := src[r*g.SrcStride:]
			a := rs[offs[t] : offs[t]+len(d)]
			b := rs[offs[t+1] : offs[t+1]+len(d)]
			c := rs[offs[t+2] : offs[t+2]+len(d)]
			e := rs[offs[t+3] : offs[t+3]+len(d)]
			for i, v := range d {
				s0 += v * a[i]
				s1 += v * b[i]
				s2 += v * c[i]
				s3 += v * e[i]
			}
		}
		sums[t] += s0
		sums[t+1] += s1
		sums[t+2] += s2
		sums[t+3] += s3
	}
	for ; t < len(offs); t++ {
		var s float32
		for r := 0; r < g.Rows; r++ {
			d := dy[r*g.OutStride : r*g.OutStride+g.Width]
			a := src[r*g.SrcStride+offs[t] : r*g.SrcStride+offs[t]+len(d)]
			for i, v := range d {
				s += v * a[i]
			}
		}
		sums[t] += s
	}
}
