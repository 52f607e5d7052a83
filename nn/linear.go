package nn

import "fmt"

type linearLayer struct {
	gemm    Gemm
	x, y    *Value
	w, b    *Param
	in, out int
}

// Linear is y = x W^T + b with W [Out,In] and b [Out] (b may be nil); an
// [N,C,H,W] input is read as [N, C*H*W]. Both passes are single GEMM calls
// on the calling goroutine: splitting the batch over workers would change
// the GEMM's blocking, and with it the rounding, with the worker count.
func (c *CPU) Linear(x *Value, w, b *Param) (Layer, error) {
	if err := checkShape("linear", x, false); err != nil {
		return nil, err
	}
	in := x.PerSample()
	if w == nil || len(w.Shape) != 2 || w.Shape[1] != in || len(w.Data) != w.Shape[0]*in || w.Shape[0] < 1 {
		var shape []int
		if w != nil {
			shape = w.Shape
		}
		return nil, fmt.Errorf("linear on %s: weight shape %v, want [Out, %d] (input %v flattened)", x.Name, shape, in, x.Shape)
	}
	out := w.Shape[0]
	if b != nil && len(b.Data) != out {
		return nil, fmt.Errorf("linear on %s: bias %s has %d elements, want %d", x.Name, b.Name, len(b.Data), out)
	}
	l := &linearLayer{gemm: c.Gemm, x: x, w: w, b: b, in: in, out: out}
	l.y = c.NewValue("linear("+x.Name+")", []int{x.N(), out}, true)
	return l, nil
}

func (l *linearLayer) Forward(bool) {
	n := l.x.N()
	y := l.y.Data[:n*l.out]
	l.gemm.Sgemm(false, true, n, l.out, l.in, 1, l.x.Data, l.in, l.w.Data, l.in, 0, y, l.out)
	if l.b != nil {
		for r := 0; r < n; r++ {
			row := y[r*l.out : (r+1)*l.out]
			for j, bj := range l.b.Data {
				row[j] += bj
			}
		}
	}
}

func (l *linearLayer) Backward() {
	n := l.x.N()
	dy := l.y.Grad[:n*l.out]
	if l.x.Grad != nil {
		l.gemm.Sgemm(false, false, n, l.in, l.out, 1, dy, l.out, l.w.Data, l.in, 1, l.x.Grad, l.in)
	}
	if l.w.Grad != nil {
		l.gemm.Sgemm(true, false, l.out, l.in, n, 1, dy, l.out, l.x.Data, l.in, 1, l.w.Grad, l.in)
	}
	if l.b != nil && l.b.Grad != nil {
		for r := 0; r < n; r++ {
			for j, g := range dy[r*l.out : (r+1)*l.out] {
				l.b.Grad[j] += g
			}
		}
	}
}

func (l *linearLayer) Output() *Value { return l.y }

func (l *linearLayer) inputs() []*Value { return []*Value{l.x} }

func (l *linearLayer) setAssign(*Value, bool) bool { return false }
