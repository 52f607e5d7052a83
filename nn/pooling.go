package nn

import (
	"fmt"
	"math"
)

type poolLayer struct {
	pool         *Pool
	x, y         *Value
	a            PoolAttrs
	h, w, oh, ow int
	argmax       []int32 // max pooling: winning input offset within its plane
	assignX      bool    // the next Backward overwrites x.Grad (see gradLayer)
	fwd, bwd     func(worker, plane int)
}

// MaxPool takes the maximum over each window; padded positions never win
// (PyTorch and ONNX pad with -inf, not zero).
func (c *CPU) MaxPool(x *Value, a PoolAttrs) (Layer, error) {
	l, err := c.newPool("maxpool", x, a)
	if err != nil {
		return nil, err
	}
	l.argmax = make([]int32, len(l.y.Data))
	l.fwd, l.bwd = l.maxForward, l.maxBackward
	if a.Kernel == 3 && a.Stride == 1 && a.Pad == 1 {
		l.fwd = l.max3x3s1Forward
	}
	return l, nil
}

// AvgPool averages each window, dividing by Kernel*Kernel when
// a.CountIncludePad and by the number of real (unpadded) elements otherwise.
func (c *CPU) AvgPool(x *Value, a PoolAttrs) (Layer, error) {
	l, err := c.newPool("avgpool", x, a)
	if err != nil {
		return nil, err
	}
	l.fwd, l.bwd = l.avgForward, l.avgBackward
	switch {
	case a.Kernel == 2 && a.Stride == 2 && a.Pad == 0 && x.H() >= 2 && x.W() >= 2 && (!a.CeilMode || x.H()%2 == 0 && x.W()%2 == 0):
		// (Smaller planes get windows clipped by the edge: OutSize rounds
		// the negative (1-2)/2 up to 0, so they do have an output.)
		l.fwd, l.bwd = l.avg2x2s2Forward, l.avg2x2s2Backward
	case a.Kernel == 3 && a.Stride == 1 && a.Pad == 1:
		l.fwd, l.bwd = l.avg3x3s1Forward, l.avg3x3s1Backward
	}
	return l, nil
}

func (c *CPU) newPool(op string, x *Value, a PoolAttrs) (*poolLayer, error) {
	if err := checkShape(op, x, true); err != nil {
		return nil, err
	}
	switch {
	case a.Kernel < 1:
		return nil, fmt.Errorf("%s on %s: kernel %d must be positive", op, x.Name, a.Kernel)
	case a.Stride < 1:
		return nil, fmt.Errorf("%s on %s: stride %d must be positive", op, x.Name, a.Stride)
	case a.Pad < 0 || 2*a.Pad > a.Kernel:
		// A wider pad would give windows lying wholly in the padding, which
		// have no maximum; PyTorch rejects them for the same reason.
		return nil, fmt.Errorf("%s on %s: pad %d must be in [0, kernel/2 = %d]", op, x.Name, a.Pad, a.Kernel/2)
	case a.CeilMode && a.CountIncludePad:
		return nil, fmt.Errorf("%s on %s: ceil mode with count_include_pad is not supported", op, x.Name)
	}
	h, w := x.H(), x.W()
	oh, ow := PoolOutSize(h, a.Kernel, a.Stride, a.Pad, a.CeilMode), PoolOutSize(w, a.Kernel, a.Stride, a.Pad, a.CeilMode)
	if oh < 1 || ow < 1 {
		return nil, fmt.Errorf("%s on %s: kernel %d does not fit the padded %dx%d input", op, x.Name, a.Kernel, h, w)
	}
	l := &poolLayer{pool: c.Pool, x: x, a: a, h: h, w: w, oh: oh, ow: ow}
	l.y = c.NewValue(fmt.Sprintf("%s(%s)", op, x.Name), []int{x.N(), x.C(), oh, ow}, true)
	return l, nil
}

// window clips output position o's window to the input: [lo, hi).
func window(o, stride, pad, kernel, size int) (lo, hi int) {
	lo = o*stride - pad
	return max(lo, 0), min(lo+kernel, size)
}

func (l *poolLayer) maxForward(_, p int) {
	h, w, oh, ow := l.h, l.w, l.oh, l.ow
	xs := l.x.Data[p*h*w : (p+1)*h*w]
	ys := l.y.Data[p*oh*ow : (p+1)*oh*ow]
	am := l.argmax[p*oh*ow : (p+1)*oh*ow]
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			ys[oy*ow+ox], am[oy*ow+ox] = l.maxAt(xs, oy, ox)
		}
	}
}

// maxAt is output (oy, ox)'s maximum and its offset in the plane xs.
func (l *poolLayer) maxAt(xs []float32, oy, ox int) (float32, int32) {
	w := l.w
	y0, y1 := window(oy, l.a.Stride, l.a.Pad, l.a.Kernel, l.h)
	x0, x1 := window(ox, l.a.Stride, l.a.Pad, l.a.Kernel, w)
	best, at := float32(math.Inf(-1)), y0*w+x0
	for iy := y0; iy < y1; iy++ {
		for ix := x0; ix < x1; ix++ {
			// NaN wins, as in PyTorch, so a diverged run shows up.
			if v := xs[iy*w+ix]; v > best || v != v {
				best, at = v, iy*w+ix
			}
		}
	}
	return best, int32(at)
}

// orderKey maps a non-NaN float32 to an int32 in the same order, with -0
// and +0 equal (as float comparison has them).
func orderKey(v float32) int32 {
	b := int32(math.Float32bits(v))
	if b == math.MinInt32 {
		b = 0
	}
	return b ^ int32(uint32(b>>31)>>1)
}

// max3x3s1Forward is maxForward for 3x3 windows, stride 1, pad 1 (the
// search spaces' pooling): interior outputs scan their window unrolled, in
// the same order as maxAt, which handles the border.
func (l *poolLayer) max3x3s1Forward(_, p int) {
	h, w := l.h, l.w
	xs := l.x.Data[p*h*w : (p+1)*h*w]
	ys := l.y.Data[p*h*w : (p+1)*h*w]
	am := l.argmax[p*h*w : (p+1)*h*w]
	for oy := 0; oy < h; oy++ {
		if oy == 0 || oy == h-1 || w < 3 {
			for ox := 0; ox < w; ox++ {
				ys[oy*w+ox], am[oy*w+ox] = l.maxAt(xs, oy, ox)
			}
			continue
		}
		ys[oy*w], am[oy*w] = l.maxAt(xs, oy, 0)
		for ox := 1; ox < w-1; ox++ {
			o := (oy-1)*w + ox - 1
			r := xs[o : o+2*w+3]
			a0, a1, a2 := r[0], r[1], r[2]
			b0, b1, b2 := r[w], r[w+1], r[w+2]
			c0, c1, c2 := r[2*w], r[2*w+1], r[2*w+2]
			if a0 != a0 || a1 != a1 || a2 != a2 || b0 != b0 || b1 != b1 || b2 != b2 || c0 != c0 || c1 != c1 || c2 != c2 {
				ys[oy*w+ox], am[oy*w+ox] = l.maxAt(xs, oy, ox) // NaN: rare, keep its rule in one place
				continue
			}
			// Random data would mispredict a float comparison branch per
			// element: compare integer keys instead, which compile to
			// conditional moves. Strict > keeps the first maximum, as maxAt.
			bk, at := orderKey(a0), 0
			if k := orderKey(a1); k > bk {
				bk, at = k, 1
			}
			if k := orderKey(a2); k > bk {
				bk, at = k, 2
			}
			if k := orderKey(b0); k > bk {
				bk, at = k, w
			}
			if k := orderKey(b1); k > bk {
				bk, at = k, w+1
			}
			if k := orderKey(b2); k > bk {
				bk, at = k, w+2
			}
			if k := orderKey(c0); k > bk {
				bk, at = k, 2*w
			}
			if k := orderKey(c1); k > bk {
				bk, at = k, 2*w+1
			}
			if k := orderKey(c2); k > bk {
				at = 2*w + 2
			}
			ys[oy*w+ox], am[oy*w+ox] = r[at], int32(o+at)
		}
		ys[oy*w+w-1], am[oy*w+w-1] = l.maxAt(xs, oy, w-1)
	}
}

func (l *poolLayer) maxBackward(_, p int) {
	hw, ohw := l.h*l.w, l.oh*l.ow
	dx := l.x.Grad[p*hw : (p+1)*hw]
	dy := l.y.Grad[p*ohw : (p+1)*ohw]
	if l.assignX {
		clear(dx)
	}
	for o, at := range l.argmax[p*ohw : (p+1)*ohw] {
		dx[at] += dy[o]
	}
}

func (l *poolLayer) divisor(y0, y1, x0, x1 int) float32 {
	if l.a.CountIncludePad {
		// Windows never reach beyond the padding (floor output size), so
		// the padded window is always the full kernel.
		return float32(l.a.Kernel * l.a.Kernel)
	}
	return float32((y1 - y0) * (x1 - x0))
}

func (l *poolLayer) avgForward(_, p int) {
	h, w, oh, ow := l.h, l.w, l.oh, l.ow
	xs := l.x.Data[p*h*w : (p+1)*h*w]
	ys := l.y.Data[p*oh*ow : (p+1)*oh*ow]
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			ys[oy*ow+ox] = l.avgAt(xs, oy, ox)
		}
	}
}

// avgAt is output (oy, ox)'s average over the plane xs.
func (l *poolLayer) avgAt(xs []float32, oy, ox int) float32 {
	w := l.w
	y0, y1 := window(oy, l.a.Stride, l.a.Pad, l.a.Kernel, l.h)
	x0, x1 := window(ox, l.a.Stride, l.a.Pad, l.a.Kernel, w)
	var s float32
	for iy := y0; iy < y1; iy++ {
		for _, v := range xs[iy*w+x0 : iy*w+x1] {
			s += v
		}
	}
	return s / l.divisor(y0, y1, x0, x1)
}

// avg3x3s1Forward is avgForward for 3x3 windows, stride 1, pad 1: interior
// outputs sum their window unrolled, in avgAt's order, so the results are
// identical; avgAt handles the border.
func (l *poolLayer) avg3x3s1Forward(_, p int) {
	h, w := l.h, l.w
	xs := l.x.Data[p*h*w : (p+1)*h*w]
	ys := l.y.Data[p*h*w : (p+1)*h*w]
	for oy := 0; oy < h; oy++ {
		if oy == 0 || oy == h-1 || w < 3 {
			for ox := 0; ox < w; ox++ {
				ys[oy*w+ox] = l.avgAt(xs, oy, ox)
			}
			continue
		}
		ys[oy*w] = l.avgAt(xs, oy, 0)
		r0, r1, r2 := xs[(oy-1)*w:oy*w], xs[oy*w:(oy+1)*w], xs[(oy+1)*w:(oy+2)*w]
		yr := ys[oy*w : (oy+1)*w]
		for ox := 1; ox < w-1; ox++ {
			s := r0[ox-1] + r0[ox] + r0[ox+1] + r1[ox-1] + r1[ox] + r1[ox+1] + r2[ox-1] + r2[ox] + r2[ox+1]
			yr[ox] = s / 9
		}
		ys[oy*w+w-1] = l.avgAt(xs, oy, w-1)
	}
}

// avg2x2s2Forward is avgForward for 2x2 windows, stride 2, no padding (the
// PyramidNet shortcut): every window is whole, so the divisor is 4 either way.
func (l *poolLayer) avg2x2s2Forward(_, p int) {
	h, w, oh, ow := l.h, l.w, l.oh, l.ow
	xs := l.x.Data[p*h*w : (p+1)*h*w]
	ys := l.y.Data[p*oh*ow : (p+1)*oh*ow]
	for oy := 0; oy < oh; oy++ {
		r0, r1 := xs[2*oy*w:(2*oy+1)*w], xs[(2*oy+1)*w:(2*oy+2)*w]
		r1 = r1[:len(r0)]
		yr := ys[oy*ow : (oy+1)*ow]
		for ox := range yr {
			i := 2 * ox
			yr[ox] = (r0[i] + r0[i+1] + r1[i] + r1[i+1]) / 4
		}
	}
}

func (l *poolLayer) avg2x2s2Backward(_, p int) {
	h, w, oh, ow := l.h, l.w, l.oh, l.ow
	dx := l.x.Grad[p*h*w : (p+1)*h*w]
	dy := l.y.Grad[p*oh*ow : (p+1)*oh*ow]
	whole := h == 2*oh && w == 2*ow
	if l.assignX && !whole {
		clear(dx) // odd sizes: the last row or column gets no gradient
	}
	for oy := 0; oy < oh; oy++ {
		r0, r1 := dx[2*oy*w:(2*oy+1)*w], dx[(2*oy+1)*w:(2*oy+2)*w]
		r1 = r1[:len(r0)]
		gr := dy[oy*ow : (oy+1)*ow]
		if l.assignX && whole {
			for ox, g := range gr {
				g /= 4
				i := 2 * ox
				r0[i], r0[i+1], r1[i], r1[i+1] = g, g, g, g
			}
			continue
		}
		for ox, g := range gr {
			g /= 4
			i := 2 * ox
			r0[i] += g
			r0[i+1] += g
			r1[i] += g
			r1[i+1] += g
		}
	}
}

// avgScatterAt adds output (oy, ox)'s gradient g to its window in dx.
func (l *poolLayer) avgScatterAt(dx []float32, oy, ox int, g float32) {
	w := l.w
	y0, y1 := window(oy, l.a.Stride, l.a.Pad, l.a.Kernel, l.h)
	x0, x1 := window(ox, l.a.Stride, l.a.Pad, l.a.Kernel, w)
	g /= l.divisor(y0, y1, x0, x1)
	for iy := y0; iy < y1; iy++ {
		row := dx[iy*w+x0 : iy*w+x1]
		for i := range row {
			row[i] += g
		}
	}
}

// avg3x3s1Backward is avgBackward for 3x3 windows, stride 1, pad 1, with
// the interior windows (whole, so divided by 9 either way) unrolled.
func (l *poolLayer) avg3x3s1Backward(_, p int) {
	h, w := l.h, l.w
	dx := l.x.Grad[p*h*w : (p+1)*h*w]
	dy := l.y.Grad[p*h*w : (p+1)*h*w]
	if l.assignX {
		clear(dx)
	}
	for oy := 0; oy < h; oy++ {
		if oy == 0 || oy == h-1 || w < 3 {
			for ox := 0; ox < w; ox++ {
				l.avgScatterAt(dx, oy, ox, dy[oy*w+ox])
			}
			continue
		}
		l.avgScatterAt(dx, oy, 0, dy[oy*w])
		r0, r1, r2 := dx[(oy-1)*w:oy*w], dx[oy*w:(oy+1)*w], dx[(oy+1)*w:(oy+2)*w]
		gr := dy[oy*w : (oy+1)*w]
		for ox := 1; ox < w-1; ox++ {
			g := gr[ox] / 9
			r0[ox-1] += g
			r0[ox] += g
			r0[ox+1] += g
			r1[ox-1] += g
			r1[ox] += g
			r1[ox+1] += g
			r2[ox-1] += g
			r2[ox] += g
			r2[ox+1] += g
		}
		l.avgScatterAt(dx, oy, w-1, dy[oy*w+w-1])
	}
}

func (l *poolLayer) avgBackward(_, p int) {
	h, w, oh, ow := l.h, l.w, l.oh, l.ow
	dx := l.x.Grad[p*h*w : (p+1)*h*w]
	dy := l.y.Grad[p*oh*ow : (p+1)*oh*ow]
	if l.assignX {
		clear(dx)
	}
	for oy := 0; oy < oh; oy++ {
		y0, y1 := window(oy, l.a.Stride, l.a.Pad, l.a.Kernel, h)
		for ox := 0; ox < ow; ox++ {
			x0, x1 := window(ox, l.a.Stride, l.a.Pad, l.a.Kernel, w)
			g := dy[oy*ow+ox] / l.divisor(y0, y1, x0, x1)
			for iy := y0; iy < y1; iy++ {
				row := dx[iy*w+x0 : iy*w+x1]
				for i := range row {
					row[i] += g
				}
			}
		}
	}
}

func (l *poolLayer) Forward(bool) { l.pool.Run(l.x.N()*l.x.C(), l.fwd) }

func (l *poolLayer) Backward() {
	if l.x.Grad != nil {
		l.pool.Run(l.x.N()*l.x.C(), l.bwd)
	}
}

func (l *poolLayer) Output() *Value { return l.y }

func (l *poolLayer) inputs() []*Value { return []*Value{l.x} }

func (l *poolLayer) setAssign(x *Value, on bool) bool {
	if x != l.x {
		return false
	}
	l.assignX = on
	return true
}

type globalAvgPoolLayer struct {
	pool     *Pool
	x, y     *Value
	hw       int
	assignX  bool // the next Backward overwrites x.Grad (see gradLayer)
	fwd, bwd func(worker, plane int)
}

// GlobalAvgPool averages each channel plane to one value: [N,C,H,W] -> [N,C,1,1].
func (c *CPU) GlobalAvgPool(x *Value) (Layer, error) {
	if err := checkShape("globalavgpool", x, true); err != nil {
		return nil, err
	}
	l := &globalAvgPoolLayer{pool: c.Pool, x: x, hw: x.H() * x.W()}
	l.y = c.NewValue("globalavgpool("+x.Name+")", []int{x.N(), x.C(), 1, 1}, true)
	l.fwd = func(_, p int) {
		var s float32
		for _, v := range l.x.Data[p*l.hw : (p+1)*l.hw] {
			s += v
		}
		l.y.Data[p] = s / float32(l.hw)
	}
	l.bwd = func(_, p int) {
		g := l.y.Grad[p] / float32(l.hw)
		dx := l.x.Grad[p*l.hw : (p+1)*l.hw]
		if l.assignX {
			clear(dx)
		}
		for i := range dx {
			dx[i] += g
		}
	}
	return l, nil
}

func (l *globalAvgPoolLayer) Forward(bool) { l.pool.Run(l.x.N()*l.x.C(), l.fwd) }

func (l *globalAvgPoolLayer) Backward() {
	if l.x.Grad != nil {
		l.pool.Run(l.x.N()*l.x.C(), l.bwd)
	}
}

func (l *globalAvgPoolLayer) Output() *Value { return l.y }

func (l *globalAvgPoolLayer) inputs() []*Value { return []*Value{l.x} }

func (l *globalAvgPoolLayer) setAssign(x *Value, on bool) bool {
	if x != l.x {
		return false
	}
	l.assignX = on
	return true
}
