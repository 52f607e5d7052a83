package nntest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"bayesnas/nn"
)

// Run is the conformance suite: every nn.Backend must pass it. newBackend
// returns a fresh backend that runs on the given number of workers (a
// backend without workers ignores the count; results must not depend on
// it). It covers every method of nn.Backend:
//
//   - NewValue and NewParam: shape, zeroed data, gradient present or not
//     (none for buffers), SetBatch; host access (Host, SetHost, Set, Zero,
//     Commit and their gradient forms) round-trips;
//   - each layer's forward against the naive references of this package,
//     over several shapes (stride, padding, dilation, groups, depthwise,
//     multipliers, ceil mode, count_include_pad, 2-D and 4-D inputs), and
//     its backward against the naive backward (conv) and against central
//     finite differences of a float64 loss (GradCheck), with Backward
//     adding into gradients rather than overwriting (CheckAccumulates);
//   - a batch smaller than the compiled one, training and evaluation mode,
//     running statistics, RecalibrateBN through nn.MomentumSetter;
//   - dropout and drop-path masks: exactly nn.DropKeep, a counter per
//     training forward (nn.Stochastic), identity in evaluation;
//   - construction errors returned, never panics;
//   - results bit-identical for 1, 2 and 3 workers;
//   - SGD (momentum, Nesterov, dampening, weight decay) and Adam built on
//     the backend (NewSGDOn, NewAdamOn: its slots, its nn.OptimizerKernels
//     where it has them) on the parameters its layers train, against the
//     update written out;
//   - the softmax cross entropy through the backend (ForwardOn, its
//     nn.LossKernel where it has one) against its definition;
//   - ZeroGrad's clearing (deferred to Backward through nn.GradLayer, or
//     through the backend's nn.GradZeroer) against every gradient cleared by
//     hand, from gradients full of stale values;
//   - the per-sample gradients curvature and compression square
//     (nn.PerSampleWeightGrads, nn.PerSampleScaleGrads, nn.IsChannelScale);
//   - a small network assembled as an nn.Network: ZeroGrad, Forward, the
//     loss, Backward (repeated, so deferred clearing is exercised) against
//     finite differences of the loss, and SGD steps.
func Run(t *testing.T, newBackend func(workers int) nn.Backend) {
	t.Run("Values", func(t *testing.T) { testValues(t, newBackend(2)) })
	t.Run("Conv", func(t *testing.T) { testConv(t, newBackend(2)) })
	t.Run("ConvGradCheck", func(t *testing.T) { testConvGradCheck(t, newBackend(2)) })
	t.Run("BatchNorm", func(t *testing.T) { testBatchNorm(t, newBackend(2)) })
	t.Run("RecalibrateBN", func(t *testing.T) { testRecalibrateBN(t, newBackend(2)) })
	t.Run("Pooling", func(t *testing.T) { testPooling(t, newBackend(2)) })
	t.Run("PoolingGradients", func(t *testing.T) { testPoolingGradients(t, newBackend(2)) })
	t.Run("ReLU", func(t *testing.T) { testReLU(t, newBackend(2)) })
	t.Run("Linear", func(t *testing.T) { testLinear(t, newBackend(2)) })
	t.Run("AddWeightedSum", func(t *testing.T) { testAddWeightedSum(t, newBackend(2)) })
	t.Run("ChannelMoves", func(t *testing.T) { testChannelMoves(t, newBackend(2)) })
	t.Run("Dropout", func(t *testing.T) { testDropout(t, newBackend(2)) })
	t.Run("Errors", func(t *testing.T) { testErrors(t, newBackend(1)) })
	t.Run("Workers", func(t *testing.T) { testWorkers(t, newBackend) })
	t.Run("Optimizers", func(t *testing.T) { testOptimizers(t, newBackend(2)) })
	t.Run("Loss", func(t *testing.T) { testLoss(t, newBackend(2)) })
	t.Run("ZeroGrad", func(t *testing.T) { testZeroGrad(t, newBackend(2)) })
	t.Run("PerSampleGrads", func(t *testing.T) { testPerSample(t, newBackend(2)) })
	t.Run("Network", func(t *testing.T) { testNetwork(t, newBackend(2)) })
}

func testValues(t *testing.T, be nn.Backend) {
	if be.Name() == "" {
		t.Error("Name is empty")
	}
	v := be.NewValue("v", []int{3, 2, 4, 5}, true)
	if !slices.Equal(v.Shape, []int{3, 2, 4, 5}) || len(v.Data) != 120 || len(v.Grad) != 120 || v.Name != "v" {
		t.Fatalf("value: name %q shape %v, %d data, %d grad", v.Name, v.Shape, len(v.Data), len(v.Grad))
	}
	if !slices.Equal(v.Host(), make([]float32, 120)) || !slices.Equal(v.HostGrad(), make([]float32, 120)) {
		t.Fatal("a new value is not zeroed")
	}
	v.SetBatch(2)
	if v.N() != 2 || len(v.Data) != 80 || len(v.Grad) != 80 {
		t.Fatalf("SetBatch(2): shape %v, %d data, %d grad", v.Shape, len(v.Data), len(v.Grad))
	}
	if u := be.NewValue("u", []int{4, 7}, false); u.Grad != nil || len(u.Data) != 28 {
		t.Fatalf("value without gradient: %d data, grad %v", len(u.Data), u.Grad != nil)
	}
	for _, kind := range []nn.ParamKind{nn.Weight, nn.NoDecay, nn.ArchVar, nn.Buffer} {
		p := be.NewParam("p", kind, 3, 2, 1, 1)
		if p.Name != "p" || p.Kind != kind || !slices.Equal(p.Shape, []int{3, 2, 1, 1}) || len(p.Data) != 6 {
			t.Fatalf("param of kind %d: name %q kind %d shape %v, %d data", kind, p.Name, p.Kind, p.Shape, len(p.Data))
		}
		if want := kind != nn.Buffer; (len(p.Grad) == 6) != want || (p.Grad == nil) == want {
			t.Fatalf("param of kind %d: %d gradient elements (nil %v), want a gradient: %v", kind, len(p.Grad), p.Grad == nil, want)
		}
		if !slices.Equal(p.Host(), make([]float32, 6)) || (p.Grad != nil && !slices.Equal(p.HostGrad(), make([]float32, 6))) {
			t.Fatalf("a new param of kind %d is not zeroed", kind)
		}
	}
	// Host access: what code outside the kernels writes through SetHost,
	// Set, Zero and Commit, and reads through Host, is the tensor's content.
	hv := be.NewValue("h", []int{2, 3}, true)
	hv.SetHost([]float32{1, 2, 3, 4, 5, 6})
	hv.SetBatch(1)
	if got := hv.Host(); !slices.Equal(got, []float32{1, 2, 3}) {
		t.Fatalf("value SetHost then Host at batch 1: %v, want [1 2 3]", got)
	}
	hv.Zero()
	hv.SetBatch(2)
	if got := hv.Host(); !slices.Equal(got, make([]float32, 6)) {
		t.Fatalf("Zero at batch 1 must clear the whole allocated batch: %v", got)
	}
	copy(hv.HostGrad(), []float32{1, 1, 1, 2, 2, 2})
	hv.CommitGrad()
	if got := hv.HostGrad(); !slices.Equal(got, []float32{1, 1, 1, 2, 2, 2}) {
		t.Fatalf("value gradient after CommitGrad: %v", got)
	}
	hp := be.NewParam("h.w", nn.Weight, 2, 2)
	hp.SetHost([]float32{4, 3, 2, 1})
	hp.Set(2, 9)
	hp.Host()[0] = 7
	hp.Commit()
	if got := hp.Host(); !slices.Equal(got, []float32{7, 3, 9, 1}) {
		t.Fatalf("param after SetHost, Set and a committed write: %v, want [7 3 9 1]", got)
	}
	hp.HostGrad()[1] = 5
	hp.CommitGrad()
	if got := hp.HostGrad(); !slices.Equal(got, []float32{0, 5, 0, 0}) {
		t.Fatalf("param gradient after a committed write: %v", got)
	}
}

// hostCopy is a copy of p's values (nil for a nil p): a check that reads
// them after the backend ran again cannot hold Host's slice, which is only
// current until then.
func hostCopy(p interface{ Host() []float32 }) []float32 {
	switch q := p.(type) {
	case *nn.Param:
		if q == nil {
			return nil
		}
	case *nn.Value:
		if q == nil {
			return nil
		}
	}
	return append([]float32(nil), p.Host()...)
}

func convParams(ts ConvTensors) []*nn.Param {
	if ts.B != nil {
		return []*nn.Param{ts.W, ts.B}
	}
	return []*nn.Param{ts.W}
}

func testConv(t *testing.T, be nn.Backend) {
	for ci, cc := range ConvCases {
		t.Run(cc.String(), func(t *testing.T) {
			ts := NewConvTensors(be, cc, uint64(ci))
			l, err := be.Conv2D(ts.X, ts.W, ts.B, cc.A)
			if err != nil {
				t.Fatal(err)
			}
			l.Forward(true)
			// Copies: the host slices are stale again after the Backward.
			xData, wData, bData := hostCopy(ts.X), hostCopy(ts.W), hostCopy(ts.B)
			CompareSlices(t, "y", l.Output().Host(), NaiveConvForward(cc, xData, wData, bData))
			// Gradients start non-zero: Backward must add into them.
			rng := rand.New(rand.NewPCG(5, uint64(ci)))
			pre := func(s []float32, commit func()) []float32 {
				RandFill(rng, s)
				commit()
				return append([]float32(nil), s...)
			}
			x0, w0 := pre(ts.X.Grad, ts.X.CommitGrad), pre(ts.W.Grad, ts.W.CommitGrad)
			var b0 []float32
			if ts.B != nil {
				b0 = pre(ts.B.Grad, ts.B.CommitGrad)
			}
			copy(l.Output().Grad, ts.Dy)
			l.Output().CommitGrad()
			l.Backward()
			dx, dw, db := NaiveConvBackward(cc, xData, wData, ts.Dy)
			plus := func(base []float32, d []float64) []float64 {
				for i := range d {
					d[i] += float64(base[i])
				}
				return d
			}
			CompareSlices(t, "dx", ts.X.HostGrad(), plus(x0, dx))
			CompareSlices(t, "dw", ts.W.HostGrad(), plus(w0, dw))
			if ts.B != nil {
				CompareSlices(t, "db", ts.B.HostGrad(), plus(b0, db))
			}
		})
	}
	// A layer built for batch 3 run on batch 2, as for a short last batch.
	for _, ci := range []int{0, 2, 15} {
		cc := ConvCases[ci]
		ts := NewConvTensors(be, cc, 42)
		l, err := be.Conv2D(ts.X, ts.W, ts.B, cc.A)
		if err != nil {
			t.Fatal(err)
		}
		ts.X.SetBatch(2)
		l.Output().SetBatch(2)
		small := cc
		small.N = 2
		l.Forward(true)
		xData, wData, bData := hostCopy(ts.X), hostCopy(ts.W), hostCopy(ts.B)
		CompareSlices(t, small.String()+"/y", l.Output().Host(), NaiveConvForward(small, xData, wData, bData))
		copy(l.Output().Grad, ts.Dy)
		l.Output().CommitGrad()
		l.Backward()
		_, dw, _ := NaiveConvBackward(small, xData, wData, ts.Dy[:len(l.Output().Grad)])
		CompareSlices(t, small.String()+"/dw", ts.W.HostGrad(), dw)
	}
}

func testConvGradCheck(t *testing.T, be nn.Backend) {
	for _, ci := range []int{0, 5, 8, 10, 16, 22} {
		cc := ConvCases[ci]
		t.Run(cc.String(), func(t *testing.T) {
			ts := NewConvTensors(be, cc, 7)
			l, err := be.Conv2D(ts.X, ts.W, ts.B, cc.A)
			if err != nil {
				t.Fatal(err)
			}
			GradCheck(t, l, []*nn.Value{ts.X}, convParams(ts), true, 15)
			CheckAccumulates(t, l, []*nn.Value{ts.X}, convParams(ts), true)
		})
	}
}

// bnFixture is a batch norm layer over a random input shifted off zero mean.
type bnFixture struct {
	x                            *nn.Value
	gamma, beta, runMean, runVar *nn.Param
	l                            nn.Layer
}

func newBN(t *testing.T, be nn.Backend, rng *rand.Rand, shape ...int) *bnFixture {
	t.Helper()
	ch := shape[1]
	f := &bnFixture{x: NewInput(be, rng, "x", shape...),
		gamma: be.NewParam("bn.gamma", nn.NoDecay, ch), beta: be.NewParam("bn.beta", nn.NoDecay, ch),
		runMean: be.NewParam("bn.running_mean", nn.Buffer, ch), runVar: be.NewParam("bn.running_var", nn.Buffer, ch)}
	xd := f.x.Host()
	for i := range xd {
		xd[i] = 2*xd[i] + 0.5
	}
	f.x.Commit()
	for i := 0; i < ch; i++ {
		f.gamma.Data[i] = 0.5 + rng.Float32()
		f.beta.Data[i] = rng.Float32() - 0.5
		f.runMean.Data[i] = rng.Float32() - 0.5
		f.runVar.Data[i] = 0.5 + rng.Float32()
	}
	for _, p := range f.params() {
		p.Commit()
	}
	var err error
	f.l, err = be.BatchNorm(f.x, f.gamma, f.beta, f.runMean, f.runVar, nn.BNAttrs{Eps: 1e-5, Momentum: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *bnFixture) params() []*nn.Param {
	return []*nn.Param{f.gamma, f.beta, f.runMean, f.runVar}
}

func testBatchNorm(t *testing.T, be nn.Backend) {
	for _, shape := range [][]int{{4, 3, 5, 3}, {6, 5}, {3, 17, 2, 3}, {5, 9, 3, 3}} {
		for _, train := range []bool{true, false} {
			rng := rand.New(rand.NewPCG(8, 9))
			f := newBN(t, be, rng, shape...)
			hw := f.x.H() * f.x.W()
			want, wantRM, wantRV := NaiveBatchNorm(f.x.Host(), shape[0], shape[1], hw, f.gamma.Host(), f.beta.Host(),
				f.runMean.Host(), f.runVar.Host(), 1e-5, 0.1, train)
			f.l.Forward(train)
			y := f.l.Output().Host()
			for i, w := range want {
				if got := float64(y[i]); !(math.Abs(got-w) <= 1e-5*math.Max(1, math.Abs(w))) {
					t.Fatalf("%v train=%v: y[%d] = %g, want %g", shape, train, i, got, w)
				}
			}
			rm, rv := f.runMean.Host(), f.runVar.Host()
			for ch := range wantRM {
				if !(math.Abs(float64(rm[ch])-wantRM[ch]) <= 1e-6 && math.Abs(float64(rv[ch])-wantRV[ch]) <= 1e-5) {
					t.Fatalf("%v train=%v: running stats[%d] = (%g, %g), want (%g, %g)", shape, train, ch,
						rm[ch], rv[ch], wantRM[ch], wantRV[ch])
				}
			}
		}
	}
	for _, train := range []bool{true, false} {
		for _, shape := range [][]int{{3, 2, 3, 4}, {5, 3}, {2, 16, 2, 2}} {
			rng := rand.New(rand.NewPCG(10, 11))
			f := newBN(t, be, rng, shape...)
			GradCheck(t, f.l, []*nn.Value{f.x}, f.params(), train, 30)
			CheckAccumulates(t, f.l, []*nn.Value{f.x}, f.params(), train)
		}
	}
	// The statistics follow the current batch, not the allocated one.
	rng := rand.New(rand.NewPCG(12, 13))
	f := newBN(t, be, rng, 6, 2, 2, 2)
	f.x.SetBatch(3)
	f.l.Output().SetBatch(3)
	want, _, _ := NaiveBatchNorm(f.x.Host(), 3, 2, 4, f.gamma.Host(), f.beta.Host(), f.runMean.Host(), f.runVar.Host(), 1e-5, 0.1, true)
	f.l.Forward(true)
	y := f.l.Output().Host()
	for i, w := range want {
		if got := float64(y[i]); !(math.Abs(got-w) <= 1e-5) {
			t.Fatalf("batch 3 of 6: y[%d] = %g, want %g", i, got, w)
		}
	}
}

// RecalibrateBN leaves exactly the average of the batches' means and
// unbiased variances and restores the momentum: the backend's batch norm
// must be an nn.MomentumSetter.
func testRecalibrateBN(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(21, 22))
	f := newBN(t, be, rng, 4, 3, 2, 2)
	ms, ok := f.l.(nn.MomentumSetter)
	if !ok {
		t.Fatalf("the batch norm layer (%T) is not an nn.MomentumSetter", f.l)
	}
	net := &nn.Network{Backend: be, Input: f.x, Output: f.l.Output(), Layers: []nn.Layer{f.l}, Values: []*nn.Value{f.x, f.l.Output()}}
	var batches [][]float32
	for b := 0; b < 3; b++ {
		x := make([]float32, len(f.x.Data))
		for i := range x {
			x[i] = float32(rng.NormFloat64())*float32(b+1) + float32(b)
		}
		batches = append(batches, x)
	}
	k := 0
	used := nn.RecalibrateBN(net, func(x []float32) (int, bool) {
		if k == len(batches) {
			return 0, false
		}
		copy(x, batches[k])
		k++
		return 4, true
	})
	if used != 3 || ms.Momentum() != 0.1 {
		t.Fatalf("used %d batches, momentum left at %g", used, ms.Momentum())
	}
	for ch := 0; ch < 3; ch++ {
		var wantMean, wantVar float64
		for _, x := range batches {
			var vals []float64
			for n := 0; n < 4; n++ {
				for p := 0; p < 4; p++ {
					vals = append(vals, float64(x[(n*3+ch)*4+p]))
				}
			}
			var s, q float64
			for _, v := range vals {
				s += v
			}
			m := s / float64(len(vals))
			for _, v := range vals {
				q += (v - m) * (v - m)
			}
			wantMean += m / 3
			wantVar += q / float64(len(vals)-1) / 3
		}
		if got := float64(f.runMean.Host()[ch]); !(math.Abs(got-wantMean) <= 1e-5) {
			t.Errorf("channel %d: running mean %g, want %g", ch, got, wantMean)
		}
		if got := float64(f.runVar.Host()[ch]); !(math.Abs(got-wantVar) <= 1e-4*wantVar) {
			t.Errorf("channel %d: running var %g, want %g", ch, got, wantVar)
		}
	}
}

func pool(be nn.Backend, x *nn.Value, a nn.PoolAttrs, isMax bool) (nn.Layer, error) {
	if isMax {
		return be.MaxPool(x, a)
	}
	return be.AvgPool(x, a)
}

func testPooling(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(3, 4))
	// Odd, even and degenerate sizes; every kernel, stride and pad up to 3.
	for _, hw := range [][2]int{{7, 5}, {6, 6}, {1, 3}, {2, 9}, {5, 2}} {
		x := NewInput(be, rng, "x", 2, 3, hw[0], hw[1])
		for k := 1; k <= 3; k++ {
			for s := 1; s <= 3; s++ {
				for pad := 0; 2*pad <= k; pad++ {
					if nn.OutSize(hw[0], k, s, pad, 1) < 1 || nn.OutSize(hw[1], k, s, pad, 1) < 1 {
						continue
					}
					for _, kind := range []string{"max", "avg-include", "avg-exclude", "max-ceil", "avg-exclude-ceil"} {
						a := nn.PoolAttrs{Kernel: k, Stride: s, Pad: pad, CountIncludePad: kind == "avg-include",
							CeilMode: strings.HasSuffix(kind, "-ceil")}
						isMax := strings.HasPrefix(kind, "max")
						l, err := pool(be, x, a, isMax)
						if err != nil {
							t.Fatal(err)
						}
						l.Forward(true)
						want, oh, ow := NaivePool(x.Host(), 2, 3, hw[0], hw[1], a, isMax)
						got := l.Output()
						if got.H() != oh || got.W() != ow {
							t.Fatalf("%s %+v on %v: output %v, want %dx%d", kind, a, hw, got.Shape, oh, ow)
						}
						y := got.Host()
						for i := range want {
							if !(math.Abs(float64(y[i]-want[i])) <= 1e-6) {
								t.Fatalf("%s %+v on %v: out[%d] = %g, want %g", kind, a, hw, i, y[i], want[i])
							}
						}
					}
				}
			}
		}
	}
	// Ceil mode with count_include_pad has no shared convention: refused.
	x := be.NewValue("x", []int{1, 1, 5, 5}, true)
	if _, err := be.AvgPool(x, nn.PoolAttrs{Kernel: 2, Stride: 2, CeilMode: true, CountIncludePad: true}); err == nil {
		t.Errorf("ceil mode with count_include_pad: no error")
	}
}

func testPoolingGradients(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, a := range []nn.PoolAttrs{
		{Kernel: 3, Stride: 2, Pad: 1},
		{Kernel: 3, Stride: 2, Pad: 1, CountIncludePad: true},
		{Kernel: 2, Stride: 2},
		{Kernel: 3, Stride: 1, Pad: 1},
		{Kernel: 3, Stride: 1, Pad: 1, CountIncludePad: true},
		{Kernel: 2, Stride: 2, CountIncludePad: true},
		{Kernel: 2, Stride: 2, CeilMode: true}, // 5x7: overhanging last windows
		{Kernel: 3, Stride: 2, Pad: 1, CeilMode: true},
		{Kernel: 3, Stride: 3, CeilMode: true},
	} {
		for _, isMax := range []bool{true, false} {
			if isMax && a.CountIncludePad {
				continue
			}
			x := be.NewValue("x", []int{2, 2, 5, 7}, true)
			FillSpaced(rng, x.Data)
			x.Commit()
			l, err := pool(be, x, a, isMax)
			if err != nil {
				t.Fatal(err)
			}
			t.Run(fmt.Sprintf("max=%v/%+v", isMax, a), func(t *testing.T) {
				GradCheck(t, l, []*nn.Value{x}, nil, true, 25)
				CheckAccumulates(t, l, []*nn.Value{x}, nil, true)
			})
		}
	}
	x := NewInput(be, rng, "x", 3, 4, 5, 3)
	l, err := be.GlobalAvgPool(x)
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Output().Shape; !slices.Equal(s, []int{3, 4, 1, 1}) {
		t.Fatalf("global pool output shape %v, want [3 4 1 1]", s)
	}
	l.Forward(true)
	xd, y := x.Host(), l.Output().Host()
	for p := 0; p < 12; p++ {
		var s float64
		for _, v := range xd[p*15 : (p+1)*15] {
			s += float64(v)
		}
		if got := y[p]; !(math.Abs(float64(got)-s/15) <= 1e-6) {
			t.Fatalf("global pool plane %d = %g, want %g", p, got, s/15)
		}
	}
	GradCheck(t, l, []*nn.Value{x}, nil, true, 20)
	CheckAccumulates(t, l, []*nn.Value{x}, nil, true)
}

func testReLU(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, shape := range [][]int{{2, 3, 4, 5}, {3, 7}} {
		x := be.NewValue("x", shape, true)
		FillSpaced(rng, x.Data)
		x.Commit()
		l, err := be.ReLU(x)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(l.Output().Shape, shape) {
			t.Fatalf("relu output shape %v, want %v", l.Output().Shape, shape)
		}
		l.Forward(true)
		y := l.Output().Host()
		for i, v := range x.Host() {
			if got := y[i]; got != max(v, 0) {
				t.Fatalf("relu(%g) = %g", v, got)
			}
		}
		GradCheck(t, l, []*nn.Value{x}, nil, true, 30)
		CheckAccumulates(t, l, []*nn.Value{x}, nil, true)
	}
}

func testLinear(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(20, 21))
	for _, shape := range [][]int{{3, 5}, {2, 2, 3, 2}} {
		for _, bias := range []bool{true, false} {
			x := NewInput(be, rng, "x", shape...)
			in := x.PerSample()
			w := be.NewParam("fc.w", nn.Weight, 4, in)
			FillParam(rng, w, 1)
			var b *nn.Param
			ps := []*nn.Param{w}
			var bData []float32
			if bias {
				b = be.NewParam("fc.b", nn.NoDecay, 4)
				FillParam(rng, b, 1)
				ps = append(ps, b)
			}
			l, err := be.Linear(x, w, b)
			if err != nil {
				t.Fatal(err)
			}
			y := l.Output()
			if !slices.Equal(y.Shape, []int{shape[0], 4}) {
				t.Fatalf("output shape %v, want [%d 4]", y.Shape, shape[0])
			}
			l.Forward(true)
			if b != nil {
				bData = b.Host()
			}
			CompareSlices(t, fmt.Sprintf("linear %v bias %v", shape, bias), y.Host(), NaiveLinear(x.Host(), w.Host(), bData, shape[0], in, 4))
			GradCheck(t, l, []*nn.Value{x}, ps, true, 30)
			CheckAccumulates(t, l, []*nn.Value{x}, ps, true)
		}
	}
}

func testAddWeightedSum(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(30, 31))
	for _, shape := range [][]int{{2, 3, 2, 2}, {3, 5}} {
		xs := []*nn.Value{NewInput(be, rng, "a", shape...), NewInput(be, rng, "b", shape...), NewInput(be, rng, "c", shape...)}
		add, err := be.Add(xs)
		if err != nil {
			t.Fatal(err)
		}
		add.Forward(true)
		x0, x1, x2, y := xs[0].Host(), xs[1].Host(), xs[2].Host(), add.Output().Host()
		for i := range x0 {
			want := float64(x0[i]) + float64(x1[i]) + float64(x2[i])
			if got := y[i]; !(math.Abs(float64(got)-want) <= 1e-6) {
				t.Fatalf("add[%d] = %g, want %g", i, got, want)
			}
		}
		GradCheck(t, add, xs, nil, true, 10)
		CheckAccumulates(t, add, xs, nil, true)

		ws := []*nn.Param{be.NewParam("w0", nn.ArchVar, 1), be.NewParam("w1", nn.ArchVar, 1), be.NewParam("w2", nn.ArchVar, 1)}
		for i, p := range ws {
			p.Set(0, 0.5-0.4*float32(i))
		}
		wsum, err := be.WeightedSum(xs, ws)
		if err != nil {
			t.Fatal(err)
		}
		wsum.Forward(true)
		x0, x1, x2, y = xs[0].Host(), xs[1].Host(), xs[2].Host(), wsum.Output().Host()
		for i := range x0 {
			want := 0.5*float64(x0[i]) + float64(float32(0.1))*float64(x1[i]) + float64(float32(-0.3))*float64(x2[i])
			if got := y[i]; !(math.Abs(float64(got)-want) <= 1e-6) {
				t.Fatalf("weightedsum[%d] = %g, want %g", i, got, want)
			}
		}
		GradCheck(t, wsum, xs, ws, true, 10)
		CheckAccumulates(t, wsum, xs, ws, true)
	}
	// The same value twice: both contributions reach its gradient.
	a := NewInput(be, rng, "a", 2, 2, 3, 3)
	add, err := be.Add([]*nn.Value{a, a})
	if err != nil {
		t.Fatal(err)
	}
	GradCheck(t, add, []*nn.Value{a}, nil, true, 10)
	ws := []*nn.Param{be.NewParam("w0", nn.ArchVar, 1), be.NewParam("w1", nn.ArchVar, 1)}
	ws[0].Set(0, 0.7)
	ws[1].Set(0, -1.3)
	wsum, err := be.WeightedSum([]*nn.Value{a, a}, ws)
	if err != nil {
		t.Fatal(err)
	}
	GradCheck(t, wsum, []*nn.Value{a}, ws, true, 10)
}

// testChannelMoves checks the copy kernels element by element against their
// index definitions, then their gradients.
func testChannelMoves(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(32, 33))
	const n, h, w = 2, 3, 2
	a, b := NewInput(be, rng, "a", n, 2, h, w), NewInput(be, rng, "b", n, 3, h, w)
	// Host per element: a whole copy out each time, cheap at these sizes.
	at := func(v *nn.Value, s, ch, i int) float32 { return v.Host()[(s*v.C()+ch)*h*w+i] }
	check := func(name string, l nn.Layer, outC int, want func(s, ch, i int) float32) {
		t.Helper()
		l.Forward(true)
		y := l.Output()
		if !slices.Equal(y.Shape, []int{n, outC, h, w}) {
			t.Fatalf("%s: output shape %v, want [%d %d %d %d]", name, y.Shape, n, outC, h, w)
		}
		for s := 0; s < n; s++ {
			for ch := 0; ch < outC; ch++ {
				for i := 0; i < h*w; i++ {
					if got, exp := at(y, s, ch, i), want(s, ch, i); got != exp {
						t.Fatalf("%s: y[%d,%d,%d] = %g, want %g", name, s, ch, i, got, exp)
					}
				}
			}
		}
	}
	cat, err := be.Concat([]*nn.Value{a, b, a})
	if err != nil {
		t.Fatal(err)
	}
	check("concat", cat, 7, func(s, ch, i int) float32 {
		switch {
		case ch < 2:
			return at(a, s, ch, i)
		case ch < 5:
			return at(b, s, ch-2, i)
		}
		return at(a, s, ch-5, i)
	})
	GradCheck(t, cat, []*nn.Value{a, b}, nil, true, 12)
	CheckAccumulates(t, cat, []*nn.Value{a, b}, nil, true)

	slice, err := be.SliceChannels(b, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	check("slice", slice, 2, func(s, ch, i int) float32 { return at(b, s, ch+1, i) })
	GradCheck(t, slice, []*nn.Value{b}, nil, true, 12)
	CheckAccumulates(t, slice, []*nn.Value{b}, nil, true)

	pad, err := be.PadChannels(a, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pad.Output().Data { // the padding must be written, not assumed
		pad.Output().Data[i] = 9
	}
	pad.Output().Commit()
	check("pad", pad, 5, func(s, ch, i int) float32 {
		if ch < 2 {
			return at(a, s, ch, i)
		}
		return 0
	})
	GradCheck(t, pad, []*nn.Value{a}, nil, true, 12)
	CheckAccumulates(t, pad, []*nn.Value{a}, nil, true)

	x6 := NewInput(be, rng, "x6", n, 6, h, w)
	shuf, err := be.ChannelShuffle(x6, 2)
	if err != nil {
		t.Fatal(err)
	}
	perm := []int{0, 3, 1, 4, 2, 5} // groups 2 of 3 channels: [0 1 2 | 3 4 5] -> 0 3 1 4 2 5
	check("shuffle", shuf, 6, func(s, ch, i int) float32 { return at(x6, s, perm[ch], i) })
	GradCheck(t, shuf, []*nn.Value{x6}, nil, true, 12)
	CheckAccumulates(t, shuf, []*nn.Value{x6}, nil, true)

	flat := NewInput(be, rng, "flat", 3, 4)
	fs, err := be.SliceChannels(flat, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	fs.Forward(true)
	if s, y, x := fs.Output().Shape, fs.Output().Host(), flat.Host(); !slices.Equal(s, []int{3, 2}) || y[1] != x[3] || y[2] != x[6] {
		t.Fatalf("slice of [N,F]: shape %v, data %v", s, y)
	}
}

// testDropout: the masks are exactly nn.DropKeep's (per element for
// Dropout, per sample for DropPath), survivors are scaled by 1/(1-p), the
// counter advances once per training forward, evaluation is the identity,
// Backward uses the forward's mask.
func testDropout(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(40, 41))
	for _, path := range []bool{false, true} {
		x := NewInput(be, rng, "x", 6, 3, 4, 4)
		xd := x.Host()
		for i := range xd {
			xd[i] += 2
		}
		x.Commit()
		const p, seed = 0.3, 99
		var l nn.Layer
		var err error
		if path {
			l, err = be.DropPath(x, p, seed)
		} else {
			l, err = be.Dropout(x, p, seed)
		}
		if err != nil {
			t.Fatal(err)
		}
		s, ok := l.(nn.Stochastic)
		if !ok {
			t.Fatalf("path=%v: the layer (%T) is not an nn.Stochastic", path, l)
		}
		per := x.PerSample()
		checkMask := func(step uint64) {
			t.Helper()
			y := l.Output().Host()
			for i, v := range x.Host() {
				idx := i
				if path {
					idx = i / per
				}
				want := float32(0)
				if nn.DropKeep(seed, step, idx, p) {
					want = v * (1 / (1 - float32(p)))
				}
				if !(math.Abs(float64(y[i]-want)) <= 1e-6*math.Abs(float64(want))) {
					t.Fatalf("path=%v step %d: y[%d] = %g, want %g", path, step, i, y[i], want)
				}
			}
		}
		s.SetStep(5)
		l.Forward(true)
		checkMask(5)
		if s.Step() != 6 {
			t.Fatalf("path=%v: counter %d after a training forward from 5, want 6", path, s.Step())
		}
		l.Forward(true)
		checkMask(6)
		l.Forward(false)
		if !slices.Equal(l.Output().Host(), x.Host()) || s.Step() != 7 {
			t.Fatalf("path=%v: evaluation forward is not the identity or moved the counter", path)
		}
		clear(x.Grad)
		x.CommitGrad()
		RandFill(rng, l.Output().Grad)
		l.Output().CommitGrad()
		l.Backward()
		dx := x.HostGrad()
		for i, g := range l.Output().HostGrad() {
			if dx[i] != g {
				t.Fatalf("path=%v: evaluation backward is not the identity", path)
			}
		}
		s.Freeze(true)
		GradCheck(t, l, []*nn.Value{x}, nil, true, 30)
		CheckAccumulates(t, l, []*nn.Value{x}, nil, true)
		if s.Step() != 7 {
			t.Fatalf("path=%v: a frozen layer moved its counter to %d", path, s.Step())
		}
		s.Freeze(false)
	}
}

// testErrors: every constructor returns an error for inputs it cannot
// run, rather than panicking or building a layer.
func testErrors(t *testing.T, be nn.Backend) {
	x := be.NewValue("x", []int{2, 4, 8, 8}, true)
	other := be.NewValue("o", []int{2, 3, 8, 8}, true)
	flat := be.NewValue("flat", []int{2, 4}, true)
	w := be.NewParam("conv.w", nn.Weight, 6, 4, 3, 3)
	ch := func(name string, kind nn.ParamKind) *nn.Param { return be.NewParam(name, kind, 4) }
	bnA := nn.BNAttrs{Eps: 1e-5, Momentum: 0.1}
	for _, c := range []struct {
		what  string
		build func() (nn.Layer, error)
	}{
		{"conv nil input", func() (nn.Layer, error) { return be.Conv2D(nil, w, nil, Attrs(6, 3, 1, 1, 1, 1)) }},
		{"conv flat input", func() (nn.Layer, error) { return be.Conv2D(flat, w, nil, Attrs(6, 3, 1, 1, 1, 1)) }},
		{"conv weight shape", func() (nn.Layer, error) { return be.Conv2D(x, w, nil, Attrs(5, 3, 1, 1, 1, 1)) }},
		{"conv groups", func() (nn.Layer, error) { return be.Conv2D(x, w, nil, Attrs(6, 3, 1, 1, 1, 3)) }},
		{"conv stride 0", func() (nn.Layer, error) { return be.Conv2D(x, w, nil, Attrs(6, 3, 0, 1, 1, 1)) }},
		{"conv too small", func() (nn.Layer, error) {
			return be.Conv2D(x, be.NewParam("w", nn.Weight, 6, 4, 9, 9), nil, Attrs(6, 9, 1, 0, 1, 1))
		}},
		{"conv bias shape", func() (nn.Layer, error) {
			return be.Conv2D(x, w, be.NewParam("b", nn.NoDecay, 5), Attrs(6, 3, 1, 1, 1, 1))
		}},
		{"bn nil gamma", func() (nn.Layer, error) {
			return be.BatchNorm(x, nil, ch("b", nn.NoDecay), ch("m", nn.Buffer), ch("v", nn.Buffer), bnA)
		}},
		{"bn channels", func() (nn.Layer, error) {
			return be.BatchNorm(other, ch("g", nn.NoDecay), ch("b", nn.NoDecay), ch("m", nn.Buffer), ch("v", nn.Buffer), bnA)
		}},
		{"bn eps", func() (nn.Layer, error) {
			return be.BatchNorm(x, ch("g", nn.NoDecay), ch("b", nn.NoDecay), ch("m", nn.Buffer), ch("v", nn.Buffer), nn.BNAttrs{Momentum: 0.1})
		}},
		{"relu nil", func() (nn.Layer, error) { return be.ReLU(nil) }},
		{"maxpool flat", func() (nn.Layer, error) { return be.MaxPool(flat, nn.PoolAttrs{Kernel: 2, Stride: 2}) }},
		{"maxpool kernel 0", func() (nn.Layer, error) { return be.MaxPool(x, nn.PoolAttrs{Kernel: 0, Stride: 1}) }},
		{"avgpool wide pad", func() (nn.Layer, error) { return be.AvgPool(x, nn.PoolAttrs{Kernel: 2, Stride: 1, Pad: 2}) }},
		{"gap flat", func() (nn.Layer, error) { return be.GlobalAvgPool(flat) }},
		{"linear weight", func() (nn.Layer, error) { return be.Linear(x, be.NewParam("fc.w", nn.Weight, 3, 5), nil) }},
		{"linear bias", func() (nn.Layer, error) {
			return be.Linear(flat, be.NewParam("fc.w", nn.Weight, 3, 4), be.NewParam("fc.b", nn.NoDecay, 2))
		}},
		{"add shapes", func() (nn.Layer, error) { return be.Add([]*nn.Value{x, other}) }},
		{"add none", func() (nn.Layer, error) { return be.Add(nil) }},
		{"wsum count", func() (nn.Layer, error) {
			return be.WeightedSum([]*nn.Value{x, x}, []*nn.Param{be.NewParam("a", nn.ArchVar, 1)})
		}},
		{"wsum not scalar", func() (nn.Layer, error) {
			return be.WeightedSum([]*nn.Value{x}, []*nn.Param{be.NewParam("a", nn.ArchVar, 2)})
		}},
		{"concat sizes", func() (nn.Layer, error) { return be.Concat([]*nn.Value{x, be.NewValue("s", []int{2, 4, 4, 4}, true)}) }},
		{"slice range", func() (nn.Layer, error) { return be.SliceChannels(x, 3, 3) }},
		{"slice beyond", func() (nn.Layer, error) { return be.SliceChannels(x, 2, 5) }},
		{"pad fewer", func() (nn.Layer, error) { return be.PadChannels(x, 3) }},
		{"shuffle groups", func() (nn.Layer, error) { return be.ChannelShuffle(x, 3) }},
		{"dropout p 1", func() (nn.Layer, error) { return be.Dropout(x, 1, 0) }},
		{"droppath p -0.1", func() (nn.Layer, error) { return be.DropPath(x, -0.1, 0) }},
	} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: panicked (%v) instead of returning an error", c.what, r)
				}
			}()
			if l, err := c.build(); err == nil {
				t.Errorf("%s: no error (layer %T)", c.what, l)
			}
		}()
	}
}

// testWorkers: a conv, batch norm, weighted sum, max pool and linear chain
// gives bit-identical outputs and gradients on 1, 2 and 3 workers.
func testWorkers(t *testing.T, newBackend func(int) nn.Backend) {
	run := func(workers int) [][]float32 {
		be := newBackend(workers)
		rng := rand.New(rand.NewPCG(14, 15))
		cc := ConvCase{N: 7, C: 4, H: 6, W: 6, A: Attrs(4, 3, 1, 1, 1, 1), Bias: true}
		ts := NewConvTensors(be, cc, 3)
		cv, err := be.Conv2D(ts.X, ts.W, ts.B, cc.A)
		if err != nil {
			t.Fatal(err)
		}
		dwW := be.NewParam("dw.w", nn.Weight, 4, 1, 3, 3)
		FillParam(rng, dwW, 1)
		dw, err := be.Conv2D(cv.Output(), dwW, nil, Attrs(4, 3, 1, 1, 1, 4))
		if err != nil {
			t.Fatal(err)
		}
		g, b := be.NewParam("g", nn.NoDecay, 4), be.NewParam("b", nn.NoDecay, 4)
		FillParam(rng, g, 1)
		rm, rv := be.NewParam("m", nn.Buffer, 4), be.NewParam("v", nn.Buffer, 4)
		rv.SetHost([]float32{1, 1, 1, 1})
		bn, err := be.BatchNorm(dw.Output(), g, b, rm, rv, nn.BNAttrs{Eps: 1e-5, Momentum: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		w1, w2 := be.NewParam("a1", nn.ArchVar, 1), be.NewParam("a2", nn.ArchVar, 1)
		w1.Set(0, 0.3)
		w2.Set(0, -0.7)
		ws, err := be.WeightedSum([]*nn.Value{bn.Output(), cv.Output()}, []*nn.Param{w1, w2})
		if err != nil {
			t.Fatal(err)
		}
		mp, err := be.MaxPool(ws.Output(), nn.PoolAttrs{Kernel: 3, Stride: 2, Pad: 1})
		if err != nil {
			t.Fatal(err)
		}
		fcW := be.NewParam("fc.w", nn.Weight, 3, 4*3*3)
		FillParam(rng, fcW, 1)
		lin, err := be.Linear(mp.Output(), fcW, nil)
		if err != nil {
			t.Fatal(err)
		}
		layers := []nn.Layer{cv, dw, bn, ws, mp, lin}
		for _, l := range layers {
			l.Forward(true)
		}
		RandFill(rng, lin.Output().Grad)
		lin.Output().CommitGrad()
		for i := len(layers) - 1; i >= 0; i-- {
			layers[i].Backward()
		}
		var out [][]float32
		for _, s := range [][]float32{lin.Output().Host(), ts.X.HostGrad(), dwW.HostGrad(), ts.W.HostGrad(), ts.B.HostGrad(),
			g.HostGrad(), b.HostGrad(), w1.HostGrad(), w2.HostGrad(), fcW.HostGrad(), rv.Host()} {
			out = append(out, append([]float32(nil), s...))
		}
		return out
	}
	a := run(1)
	for _, workers := range []int{2, 3} {
		b := run(workers)
		for i := range a {
			for j := range a[i] {
				// NaN would compare equal bit for bit: a backend that
				// left every tensor unwritten must not pass.
				if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) || math.IsNaN(float64(a[i][j])) {
					t.Fatalf("tensor %d element %d: %g with 1 worker, %g with %d", i, j, a[i][j], b[i][j], workers)
				}
			}
		}
	}
}
