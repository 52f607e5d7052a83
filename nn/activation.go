package nn

import (
	"fmt"
	"math"
)

// checkShape rejects values a kernel cannot index: nil, a rank other than 4
// (N,C,H,W) or, unless want4D, 2 (N,F), or an empty dimension. Catching these
// at construction keeps Forward and Backward free of checks and panics.
func checkShape(op string, x *Value, want4D bool) error {
	if x == nil {
		return fmt.Errorf("%s: input value is nil", op)
	}
	if len(x.Shape) != 4 && (want4D || len(x.Shape) != 2) {
		want := "[N,C,H,W] or [N,F]"
		if want4D {
			want = "[N,C,H,W]"
		}
		return fmt.Errorf("%s: input %s has shape %v, want %s", op, x.Name, x.Shape, want)
	}
	for _, d := range x.Shape {
		if d <= 0 {
			return fmt.Errorf("%s: input %s has an empty dimension in shape %v", op, x.Name, x.Shape)
		}
	}
	return nil
}

// withChannels is x's shape (rank kept) with the channel count replaced.
func withChannels(x *Value, ch int) []int {
	s := append([]int(nil), x.Shape...)
	s[1] = ch
	return s
}

type reluLayer struct {
	pool     *Pool
	x, y     *Value
	per      int
	assignX  bool // the next Backward overwrites x.Grad (see gradLayer)
	fwd, bwd func(worker, n int)
}

// ReLU is max(x, 0), parallel over the samples of the batch.
func (c *CPU) ReLU(x *Value) (Layer, error) {
	if err := checkShape("relu", x, false); err != nil {
		return nil, err
	}
	l := &reluLayer{pool: c.Pool, x: x, per: x.PerSample()}
	l.y = c.NewValue("relu("+x.Name+")", x.Shape, true)
	l.fwd = l.forwardSample
	l.bwd = l.backwardSample
	return l, nil
}

func (l *reluLayer) forwardSample(_, n int) {
	lo, hi := n*l.per, (n+1)*l.per
	xs, ys := l.x.Data[lo:hi], l.y.Data[lo:hi]
	ys = ys[:len(xs)]
	for i, v := range xs {
		// The builtin max measured faster here than masking the sign bits.
		ys[i] = max(v, 0)
	}
}

// backwardSample masks with the output rather than the input: y > 0 exactly
// where x > 0, and the output is what a fused in-place variant would keep.
func (l *reluLayer) backwardSample(_, n int) {
	lo, hi := n*l.per, (n+1)*l.per
	ys, dy, dx := l.y.Data[lo:hi], l.y.Grad[lo:hi], l.x.Grad[lo:hi]
	dy, dx = dy[:len(ys)], dx[:len(ys)]
	if l.assignX {
		for i, v := range ys {
			var keep uint32
			if v > 0 {
				keep = ^uint32(0)
			}
			dx[i] = math.Float32frombits(math.Float32bits(dy[i]) & keep)
		}
		return
	}
	for i, v := range ys {
		// Masking the bits compiles without a branch, which random signs
		// would mispredict half the time; unlike multiplying by 0 it keeps
		// an infinite upstream gradient from turning into NaN.
		var keep uint32
		if v > 0 {
			keep = ^uint32(0)
		}
		dx[i] += math.Float32frombits(math.Float32bits(dy[i]) & keep)
	}
}

func (l *reluLayer) Forward(bool) { l.pool.Run(l.x.N(), l.fwd) }

func (l *reluLayer) Backward() {
	if l.x.Grad != nil {
		l.pool.Run(l.x.N(), l.bwd)
	}
}

func (l *reluLayer) Output() *Value { return l.y }

func (l *reluLayer) inputs() []*Value { return []*Value{l.x} }

func (l *reluLayer) setAssign(x *Value, on bool) bool {
	if x != l.x {
		return false
	}
	l.assignX = on
	return true
}
