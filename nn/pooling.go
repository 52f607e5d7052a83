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
	}
	h, w := x.H(), x.W()
	oh, ow := OutSize(h, a.Kernel, a.Stride, a.Pad, 1), OutSize(w, a.Kernel, a.Stride, a.Pad, 1)
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
		y0, y1 := window(oy, l.a.Stride, l.a.Pad, l.a.Kernel, h)
		for ox := 0; ox < ow; ox++ {
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
			ys[oy*ow+ox], am[oy*ow+ox] = best, int32(at)
		}
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
		y0, y1 := window(oy, l.a.Stride, l.a.Pad, l.a.Kernel, h)
		for ox := 0; ox < ow; ox++ {
			x0, x1 := window(ox, l.a.Stride, l.a.Pad, l.a.Kernel, w)
			var s float32
			for iy := y0; iy < y1; iy++ {
				for _, v := range xs[iy*w+x0 : iy*w+x1] {
					s += v
				}
			}
			ys[oy*ow+ox] = s / l.divisor(y0, y1, x0, x1)
		}
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
