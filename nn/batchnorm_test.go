package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

type bnFixture struct {
	x                            *Value
	gamma, beta, runMean, runVar *Param
	l                            Layer
}

func newBN(t *testing.T, c *CPU, rng *rand.Rand, shape ...int) *bnFixture {
	t.Helper()
	ch := shape[1]
	f := &bnFixture{x: newInput(c, rng, "x", shape...),
		gamma: NewParam("bn.gamma", NoDecay, ch), beta: NewParam("bn.beta", NoDecay, ch),
		runMean: NewParam("bn.running_mean", Buffer, ch), runVar: NewParam("bn.running_var", Buffer, ch)}
	// Shift the input off zero mean so the mean actually matters.
	for i := range f.x.Data {
		f.x.Data[i] = 2*f.x.Data[i] + 0.5
	}
	for i := 0; i < ch; i++ {
		f.gamma.Data[i] = 0.5 + rng.Float32()
		f.beta.Data[i] = rng.Float32() - 0.5
		f.runMean.Data[i] = rng.Float32() - 0.5
		f.runVar.Data[i] = 0.5 + rng.Float32()
	}
	var err error
	f.l, err = c.BatchNorm(f.x, f.gamma, f.beta, f.runMean, f.runVar, BNAttrs{Eps: 1e-5, Momentum: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBatchNormGradients(t *testing.T) {
	for _, c := range testBackends() {
		for _, train := range []bool{true, false} {
			for _, shape := range [][]int{{3, 2, 3, 4}, {5, 3}, {2, 16, 2, 2}} {
				rng := rand.New(rand.NewPCG(10, 11))
				f := newBN(t, c, rng, shape...)
				gradCheck(t, f.l, []*Value{f.x}, []*Param{f.gamma, f.beta, f.runMean, f.runVar}, train, 30)
				checkAccumulates(t, f.l, []*Value{f.x}, []*Param{f.gamma, f.beta, f.runMean, f.runVar}, train)
				checkNoAllocs(t, "batchnorm", f.l, train)
			}
		}
	}
}

// TestBatchNormLargeMean checks the one-pass statistics where the mean is
// large against the spread (E[x^2]-E[x]^2 unshifted would lose every digit
// of the variance in float32).
func TestBatchNormLargeMean(t *testing.T) {
	for _, shape := range [][]int{{6, 20, 3, 3}, {6, 3, 4, 5}} {
		c := testBackends()[0]
		rng := rand.New(rand.NewPCG(20, 21))
		f := newBN(t, c, rng, shape...)
		for i := range f.x.Data {
			f.x.Data[i] = 1000 + 0.01*f.x.Data[i]
		}
		f.l.Forward(true)
		n, ch, hw := shape[0], shape[1], shape[2]*shape[3]
		l := f.l.(*bnLayer)
		for k := 0; k < ch; k++ {
			var s, q float64
			for b := 0; b < n; b++ {
				for _, v := range f.x.Data[(b*ch+k)*hw : (b*ch+k+1)*hw] {
					s += float64(v)
				}
			}
			mean := s / float64(n*hw)
			for b := 0; b < n; b++ {
				for _, v := range f.x.Data[(b*ch+k)*hw : (b*ch+k+1)*hw] {
					q += (float64(v) - mean) * (float64(v) - mean)
				}
			}
			invStd := 1 / math.Sqrt(q/float64(n*hw)+1e-5)
			if math.Abs(l.mean[k]-mean) > 1e-9*mean || math.Abs(l.invStd[k]-invStd) > 1e-5*invStd {
				t.Fatalf("%v channel %d: mean %.12g, 1/std %.8g; want %.12g, %.8g", shape, k, l.mean[k], l.invStd[k], mean, invStd)
			}
		}
	}
}

// TestDeterministicAcrossWorkers runs the kernels with reductions on 1 and 3
// workers and requires bit-identical outputs and gradients.
func TestDeterministicAcrossWorkers(t *testing.T) {
	run := func(workers int) [][]float32 {
		c := NewCPU(DefaultGemm(), workers)
		rng := rand.New(rand.NewPCG(14, 15))
		f := newBN(t, c, rng, 8, 4, 5, 5)
		w1, w2 := NewParam("a1", ArchVar, 1), NewParam("a2", ArchVar, 1)
		w1.Data[0], w2.Data[0] = 0.3, -0.7
		x2 := newInput(c, rng, "x2", 8, 4, 5, 5)
		ws, err := c.WeightedSum([]*Value{f.l.Output(), x2}, []*Param{w1, w2})
		if err != nil {
			t.Fatal(err)
		}
		mp, err := c.MaxPool(ws.Output(), PoolAttrs{Kernel: 3, Stride: 2, Pad: 1})
		if err != nil {
			t.Fatal(err)
		}
		fcW := NewParam("fc.w", Weight, 3, 4*3*3)
		randFill(rng, fcW.Data)
		lin, err := c.Linear(mp.Output(), fcW, nil)
		if err != nil {
			t.Fatal(err)
		}
		layers := []Layer{f.l, ws, mp, lin}
		for _, l := range layers {
			l.Forward(true)
		}
		randFill(rng, lin.Output().Grad)
		for i := len(layers) - 1; i >= 0; i-- {
			layers[i].Backward()
		}
		return [][]float32{lin.Output().Data, f.x.Grad, f.gamma.Grad, f.beta.Grad, w1.Grad, w2.Grad, x2.Grad, fcW.Grad, f.runVar.Data}
	}
	a, b := run(1), run(3)
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				t.Fatalf("tensor %d element %d: %g with 1 worker, %g with 3", i, j, a[i][j], b[i][j])
			}
		}
	}
}

// RecalibrateBN leaves exactly the average of the batches' means and
// unbiased variances, whatever the running statistics were, and restores
// the momentum.
func TestRecalibrateBN(t *testing.T) {
	c := testBackends()[0]
	rng := rand.New(rand.NewPCG(21, 22))
	f := newBN(t, c, rng, 4, 3, 2, 2)
	net := &Network{Input: f.x, Output: f.l.Output(), Layers: []Layer{f.l}, Values: []*Value{f.x, f.l.Output()}}
	batches := [][]float32{}
	for b := 0; b < 3; b++ {
		x := make([]float32, len(f.x.Data))
		for i := range x {
			x[i] = float32(rng.NormFloat64())*float32(b+1) + float32(b)
		}
		batches = append(batches, x)
	}
	k := 0
	used := RecalibrateBN(net, func(x []float32) (int, bool) {
		if k == len(batches) {
			return 0, false
		}
		copy(x, batches[k])
		k++
		return 4, true
	})
	if used != 3 || f.l.(MomentumSetter).Momentum() != 0.1 {
		t.Fatalf("used %d batches, momentum left at %g", used, f.l.(MomentumSetter).Momentum())
	}
	for ch := 0; ch < 3; ch++ {
		var wantMean, wantVar float64
		for _, x := range batches {
			var s, q float64
			var vals []float64
			for n := 0; n < 4; n++ {
				for p := 0; p < 4; p++ {
					vals = append(vals, float64(x[(n*3+ch)*4+p]))
				}
			}
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
		if got := float64(f.runMean.Data[ch]); math.Abs(got-wantMean) > 1e-5 {
			t.Errorf("channel %d: running mean %g, want %g", ch, got, wantMean)
		}
		if got := float64(f.runVar.Data[ch]); math.Abs(got-wantVar) > 1e-4*wantVar {
			t.Errorf("channel %d: running var %g, want %g", ch, got, wantVar)
		}
	}
}
