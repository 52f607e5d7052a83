package nn

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// newInput allocates a value with gradient, filled with uniform [-1,1) data.
func newInput(c *CPU, rng *rand.Rand, name string, shape ...int) *Value {
	v := c.NewValue(name, shape, true)
	randFill(rng, v.Data)
	return v
}

// fillSpaced fills s with a shuffled set of values 0.05 apart (offset so none
// is near 0), so no finite-difference step can reorder two elements or cross
// a ReLU kink: max pooling and ReLU stay differentiable under gradCheck.
func fillSpaced(rng *rand.Rand, s []float32) {
	for i, j := range rng.Perm(len(s)) {
		s[i] = 0.025 + 0.05*float32(j-len(s)/2)
	}
}

// checkNoAllocs asserts a training Forward+Backward allocates nothing.
func checkNoAllocs(t *testing.T, name string, l Layer, train bool) {
	t.Helper()
	allocs := testing.AllocsPerRun(10, func() {
		l.Forward(train)
		l.Backward()
	})
	if allocs != 0 {
		t.Errorf("%s: %v allocations per Forward+Backward, want 0", name, allocs)
	}
}

// wantErr asserts err is non-nil and mentions every fragment.
func wantErr(t *testing.T, what string, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q does not mention %q", what, err, f)
		}
	}
}

// TestReLUSpecialValues pins the bit-level results that max(x, 0) gives
// and the branch-free forward must keep: +0 for negatives and -0, NaN kept
// (of either sign), infinities.
func TestReLUSpecialValues(t *testing.T) {
	c := testBackends()[0]
	nan, negNaN := float32(math.NaN()), math.Float32frombits(0xffc00000)
	in := []float32{-1, float32(math.Copysign(0, -1)), 0, 2, nan, negNaN, float32(math.Inf(1)), float32(math.Inf(-1))}
	x := c.NewValue("x", []int{1, len(in)}, true)
	copy(x.Data, in)
	l, err := c.ReLU(x)
	if err != nil {
		t.Fatal(err)
	}
	l.Forward(true)
	for i, v := range in {
		want, got := max(v, 0), l.Output().Data[i]
		if got != want && !(got != got && want != want) || math.Signbit(float64(got)) && got == 0 {
			t.Errorf("relu(%g) = %g, want %g", v, got, want)
		}
	}
}

func TestReLU(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(1, 2))
		x := c.NewValue("x", []int{3, 2, 3, 5}, true)
		fillSpaced(rng, x.Data)
		l, err := c.ReLU(x)
		if err != nil {
			t.Fatal(err)
		}
		l.Forward(true)
		for i, v := range x.Data {
			want := max(v, 0)
			if got := l.Output().Data[i]; got != want {
				t.Fatalf("%s: relu(%g) = %g", c.Name(), v, got)
			}
		}
		// Gradients must accumulate: start from a non-zero input gradient.
		for i := range x.Grad {
			x.Grad[i] = 1
		}
		for i := range l.Output().Grad {
			l.Output().Grad[i] = 2
		}
		l.Backward()
		for i, v := range x.Data {
			want := float32(1)
			if v > 0 {
				want = 3
			}
			if x.Grad[i] != want {
				t.Fatalf("%s: grad at x=%g is %g, want %g (accumulated)", c.Name(), v, x.Grad[i], want)
			}
		}
		gradCheck(t, l, []*Value{x}, nil, true, 30)
		checkAccumulates(t, l, []*Value{x}, nil, true)
		checkNoAllocs(t, "relu", l, true)
	}
}

func TestShapeErrors(t *testing.T) {
	c := testBackends()[0]
	rng := rand.New(rand.NewPCG(1, 2))
	x4 := newInput(c, rng, "feat", 2, 4, 5, 5)
	x3 := c.NewValue("odd", []int{2, 4, 5}, true)
	x2 := newInput(c, rng, "flat", 2, 7)
	_, err := c.ReLU(x3)
	wantErr(t, "relu rank 3", err, "relu", "odd", "[2 4 5]")
	_, err = c.ReLU(nil)
	wantErr(t, "relu nil", err, "relu", "nil")
	_, err = c.MaxPool(x2, PoolAttrs{Kernel: 2, Stride: 2})
	wantErr(t, "maxpool on 2-D", err, "maxpool", "flat")
	_, err = c.MaxPool(x4, PoolAttrs{Kernel: 3, Stride: 1, Pad: 2})
	wantErr(t, "maxpool pad", err, "maxpool", "feat", "pad 2")
	_, err = c.AvgPool(x4, PoolAttrs{Kernel: 0, Stride: 1})
	wantErr(t, "avgpool kernel", err, "avgpool", "kernel 0")
	_, err = c.AvgPool(x4, PoolAttrs{Kernel: 2, Stride: 0})
	wantErr(t, "avgpool stride", err, "stride 0")
	_, err = c.AvgPool(x4, PoolAttrs{Kernel: 7, Stride: 1})
	wantErr(t, "avgpool too big", err, "does not fit")
	_, err = c.GlobalAvgPool(x2)
	wantErr(t, "gap on 2-D", err, "globalavgpool", "flat")
	_, err = c.Linear(x4, NewParam("fc.w", Weight, 3, 99), nil)
	wantErr(t, "linear weight", err, "linear", "feat", "[3 99]", "100")
	_, err = c.Linear(x2, NewParam("fc.w", Weight, 3, 7), NewParam("fc.b", NoDecay, 4))
	wantErr(t, "linear bias", err, "fc.b", "4 elements")
	g, b := NewParam("bn.g", NoDecay, 4), NewParam("bn.b", NoDecay, 4)
	rm, rv := NewParam("bn.rm", Buffer, 4), NewParam("bn.rv", Buffer, 4)
	_, err = c.BatchNorm(x4, NewParam("bn.g", NoDecay, 3), b, rm, rv, BNAttrs{Eps: 1e-5, Momentum: 0.1})
	wantErr(t, "bn gamma size", err, "batchnorm", "feat", "bn.g", "3 elements")
	_, err = c.BatchNorm(x4, g, b, NewParam("bn.rm", NoDecay, 4), rv, BNAttrs{Eps: 1e-5, Momentum: 0.1})
	wantErr(t, "bn running kind", err, "bn.rm", "Buffer")
	_, err = c.BatchNorm(x4, g, b, rm, nil, BNAttrs{Eps: 1e-5, Momentum: 0.1})
	wantErr(t, "bn nil", err, "running variance", "nil")
	_, err = c.BatchNorm(x4, g, b, rm, rv, BNAttrs{Eps: 0, Momentum: 0.1})
	wantErr(t, "bn eps", err, "eps")
	y := newInput(c, rng, "other", 2, 4, 5, 6)
	_, err = c.Add([]*Value{x4, y})
	wantErr(t, "add shapes", err, "add", "other", "feat")
	_, err = c.Add(nil)
	wantErr(t, "add none", err, "no inputs")
	_, err = c.WeightedSum([]*Value{x4, x4}, []*Param{NewParam("a", ArchVar, 1)})
	wantErr(t, "weightedsum count", err, "1 weights for 2 inputs")
	_, err = c.WeightedSum([]*Value{x4}, []*Param{NewParam("a", ArchVar, 2)})
	wantErr(t, "weightedsum scalar", err, "scalar")
	_, err = c.Concat([]*Value{x4, y})
	wantErr(t, "concat spatial", err, "concat", "other", "only channels")
	_, err = c.Concat([]*Value{x4, x2})
	wantErr(t, "concat rank", err, "concat", "flat")
	_, err = c.SliceChannels(x4, 3, 5)
	wantErr(t, "slice range", err, "slicechannels", "feat", "[3,5)", "4 channels")
	_, err = c.SliceChannels(x4, 2, 2)
	wantErr(t, "slice empty", err, "[2,2)")
	_, err = c.PadChannels(x4, 3)
	wantErr(t, "pad fewer", err, "padchannels", "feat", "3")
	_, err = c.ChannelShuffle(x4, 3)
	wantErr(t, "shuffle groups", err, "channelshuffle", "3 groups", "4 channels")
	_, err = c.Dropout(x4, 1, 0)
	wantErr(t, "dropout p", err, "dropout", "feat", "[0,1)")
	_, err = c.DropPath(x4, -0.1, 0)
	wantErr(t, "droppath p", err, "droppath", "[0,1)")
}

// checkAccumulates asserts Backward adds into the gradients of the inputs
// and params rather than overwriting them: two backward passes from the same
// output gradient must give exactly twice one pass (exact in float32, since
// doubling is).
func checkAccumulates(t *testing.T, l Layer, inputs []*Value, params []*Param, train bool) {
	t.Helper()
	l.Forward(train)
	out := l.Output()
	randFill(rand.New(rand.NewPCG(3, 5)), out.Grad)
	var grads [][]float32
	for _, x := range inputs {
		grads = append(grads, x.Grad)
	}
	for _, p := range params {
		if p.Trainable() {
			grads = append(grads, p.Grad)
		}
	}
	for _, g := range grads {
		clear(g)
	}
	l.Backward()
	once := make([][]float32, len(grads))
	for i, g := range grads {
		once[i] = append([]float32(nil), g...)
	}
	l.Backward()
	for i, g := range grads {
		for j := range g {
			if d := g[j] - 2*once[i][j]; d > 1e-6 || d < -1e-6 {
				t.Fatalf("gradient %d[%d]: %g after two backward passes, %g after one: overwritten, not added", i, j, g[j], once[i][j])
			}
		}
	}
}
