// Package bnplane has batch norm's kernels over the planes of one channel:
// the statistics, the scale-and-shift (with the ReLU or residual add that
// nn fuses into it) and the two backward passes. Each runs over a grid of
// Rows planes of Width elements, row r starting at r*Stride, so one call
// covers a channel's planes across the batch. They are in a package of
// their own because package nn uses cgo, which cannot be mixed with Go
// assembly; internal/tapsum is the same arrangement.
//
// The AVX2+FMA kernels (amd64) and the Go ones compute the same
// definitions with different summation orders and fused multiply-adds, so
// they agree within float32 rounding, not bit for bit. Each is
// deterministic: the order of every sum is fixed by the grid alone.
package bnplane

import (
	"fmt"
	"math"
)

// Grid is Rows rows of Width elements, row r of every operand starting at
// r*Stride.
type Grid struct {
	Rows, Width, Stride int
}

// span is how many elements an operand of the grid must hold.
func (g Grid) span() int {
	if g.Rows == 0 || g.Width == 0 {
		return 0
	}
	return (g.Rows-1)*g.Stride + g.Width
}

// check panics (a caller's bug, not bad input) unless every operand holds
// the grid: the assembly does not check. Optional operands may be nil.
func (g Grid) check(fn string, ops ...[]float32) {
	if g.Rows < 0 || g.Width < 0 || g.Stride < g.Width {
		panic(fmt.Sprintf("bnplane.%s: bad grid %+v", fn, g))
	}
	n := g.span()
	for i, s := range ops {
		if s != nil && len(s) < n {
			panic(fmt.Sprintf("bnplane.%s: operand %d has %d elements, grid %+v needs %d", fn, i, len(s), g, n))
		}
	}
}

func (g Grid) empty() bool { return g.Rows == 0 || g.Width == 0 }

// SumsAbout returns sum(x-shift) and sum((x-shift)^2) over the grid. Each
// row is summed in float32 lanes and the rows in float64: a row is at most
// a few thousand elements, and the shift (near the mean) keeps the squares
// from cancelling.
func SumsAbout(x []float32, g Grid, shift float32) (s, q float64) {
	g.check("SumsAbout", x)
	if g.empty() {
		return 0, 0
	}
	if UseAVX2 {
		return sumsAboutAVX2(x, g.Stride, g.Rows, g.Width, shift)
	}
	for r := 0; r < g.Rows; r++ {
		a, b := sumsAboutRow(x[r*g.Stride:r*g.Stride+g.Width], shift)
		s += a
		q += b
	}
	return s, q
}

// Affine writes y = x*scale + shift over the grid, then adds add where add
// is not nil, then takes max(., 0) where relu: batch norm's output, alone
// or with the ReLU or residual add that reads it. The ReLU gives exactly
// what Go's max(v, 0) gives (+0 for -0, NaN kept), so a fused layer matches
// a separate ReLU bit for bit.
func Affine(y, x, add []float32, g Grid, scale, shift float32, relu bool) {
	g.check("Affine", y, x, add)
	if g.empty() {
		return
	}
	if UseAVX2 {
		affineAVX2(y, x, add, g.Stride, g.Rows, g.Width, scale, shift, add != nil, relu)
		return
	}
	for r := 0; r < g.Rows; r++ {
		o := r * g.Stride
		var a []float32
		if add != nil {
			a = add[o : o+g.Width]
		}
		affineRow(y[o:o+g.Width], x[o:o+g.Width], a, scale, shift, relu)
	}
}

// DySums returns sum(gr) and sum(gr*(x-mean)) over the grid, where gr is
// dy, or, when mask is not nil, dy where mask > 0 and 0 elsewhere (the
// gradient through a ReLU whose output is mask).
func DySums(dy, mask, x []float32, g Grid, mean float32) (s, sx float64) {
	g.check("DySums", dy, mask, x)
	if g.empty() {
		return 0, 0
	}
	if UseAVX2 {
		return dySumsAVX2(dy, mask, x, g.Stride, g.Rows, g.Width, mean, mask != nil)
	}
	for r := 0; r < g.Rows; r++ {
		o := r * g.Stride
		var m []float32
		if mask != nil {
			m = mask[o : o+g.Width]
		}
		a, b := dySumsRow(dy[o:o+g.Width], m, x[o:o+g.Width], mean)
		s += a
		sx += b
	}
	return s, sx
}

// InputGrad writes (assign) or adds to dx the batch norm input gradient
// k*gr - a - b*(x-mean) over the grid, gr being dy masked as in DySums.
func InputGrad(dx, dy, mask, x []float32, g Grid, k, a, b, mean float32, assign bool) {
	g.check("InputGrad", dx, dy, mask, x)
	if g.empty() {
		return
	}
	if UseAVX2 {
		inputGradAVX2(dx, dy, mask, x, g.Stride, g.Rows, g.Width, k, a, b, mean, mask != nil, assign)
		return
	}
	for r := 0; r < g.Rows; r++ {
		o := r * g.Stride
		var m []float32
		if mask != nil {
			m = mask[o : o+g.Width]
		}
		inputGradRow(dx[o:o+g.Width], dy[o:o+g.Width], m, x[o:o+g.Width], k, a, b, mean, assign)
	}
}

// AddTo writes (assign) or adds src to dst over the grid: the residual
// input's gradient of a fused batch norm and add.
func AddTo(dst, src []float32, g Grid, assign bool) {
	g.check("AddTo", dst, src)
	if g.empty() {
		return
	}
	if UseAVX2 {
		addToAVX2(dst, src, g.Stride, g.Rows, g.Width, assign)
		return
	}
	for r := 0; r < g.Rows; r++ {
		o := r * g.Stride
		d, s := dst[o:o+g.Width], src[o:o+g.Width]
		if assign {
			copy(d, s)
			continue
		}
		for i, v := range s {
			d[i] += v
		}
	}
}

// sumsAboutRow: four float32 lanes, independent accumulators hiding the add
// latency, summed in float64. Index loops rather than re-slicing: the
// compiler keeps all eight accumulators in registers.
func sumsAboutRow(s []float32, shift float32) (float64, float64) {
	var a0, a1, a2, a3, q0, q1, q2, q3 float32
	i := 0
	for ; i+4 <= len(s); i += 4 {
		d0, d1, d2, d3 := s[i]-shift, s[i+1]-shift, s[i+2]-shift, s[i+3]-shift
		a0 += d0
		q0 += d0 * d0
		a1 += d1
		q1 += d1 * d1
		a2 += d2
		q2 += d2 * d2
		a3 += d3
		q3 += d3 * d3
	}
	for ; i < len(s); i++ {
		d := s[i] - shift
		a0 += d
		q0 += d * d
	}
	return float64(a0) + float64(a1) + float64(a2) + float64(a3),
		float64(q0) + float64(q1) + float64(q2) + float64(q3)
}

func affineRow(y, x, add []float32, sc, sh float32, relu bool) {
	y = y[:len(x)]
	switch {
	case add == nil && !relu:
		for i, v := range x {
			y[i] = v*sc + sh
		}
	case add == nil:
		for i, v := range x {
			y[i] = max(v*sc+sh, 0)
		}
	default:
		add = add[:len(x)]
		for i, v := range x {
			t := v*sc + sh
			t += add[i]
			if relu {
				t = max(t, 0)
			}
			y[i] = t
		}
	}
}

// keep is dy where m > 0, else +0, by masking the bits: no branch to
// mispredict on random signs, and unlike multiplying by 0 an infinite dy
// does not turn into NaN (the ReLU layer's backward does the same).
func keep(dy, m float32) float32 {
	var k uint32
	if m > 0 {
		k = ^uint32(0)
	}
	return math.Float32frombits(math.Float32bits(dy) & k)
}

// dySumsRow: two lanes, not four: with eight accumulators the compiler runs
// out of registers and spills.
func dySumsRow(dy, mask, x []float32, mean float32) (float64, float64) {
	var s0, s1, q0, q1 float32
	dy = dy[:len(x)]
	if mask != nil {
		mask = mask[:len(x)]
		i := 0
		for ; i+2 <= len(x); i += 2 {
			g0, g1 := keep(dy[i], mask[i]), keep(dy[i+1], mask[i+1])
			s0 += g0
			s1 += g1
			q0 += g0 * (x[i] - mean)
			q1 += g1 * (x[i+1] - mean)
		}
		for ; i < len(x); i++ {
			g := keep(dy[i], mask[i])
			s0 += g
			q0 += g * (x[i] - mean)
		}
		return float64(s0) + float64(s1), float64(q0) + float64(q1)
	}
	i := 0
	for ; i+2 <= len(x); i += 2 {
		s0 += dy[i]
		s1 += dy[i+1]
		q0 += dy[i] * (x[i] - mean)
		q1 += dy[i+1] * (x[i+1] - mean)
	}
	for ; i < len(x); i++ {
		s0 += dy[i]
		q0 += dy[i] * (x[i] - mean)
	}
	return float64(s0) + float64(s1), float64(q0) + float64(q1)
}

// inputGradRow forms x-mean first, so a large mean does not cancel.
func inputGradRow(dx, dy, mask, x []float32, k, a, b, mean float32, assign bool) {
	dx, dy = dx[:len(x)], dy[:len(x)]
	if mask != nil {
		mask = mask[:len(x)]
		for i, v := range x {
			t := k*keep(dy[i], mask[i]) - a - b*(v-mean)
			if !assign {
				t += dx[i]
			}
			dx[i] = t
		}
		return
	}
	if assign {
		for i, v := range x {
			dx[i] = k*dy[i] - a - b*(v-mean)
		}
		return
	}
	for i, v := range x {
		dx[i] += k*dy[i] - a - b*(v-mean)
	}
}
