package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"bayesnas/internal/bnplane"
)

// bnKernelPaths runs f with bnplane's AVX2 kernels (where the CPU has
// them) and with its Go kernels.
func bnKernelPaths(t *testing.T, f func(t *testing.T)) {
	defer func(on bool) { bnplane.UseAVX2 = on }(bnplane.UseAVX2)
	if bnplane.UseAVX2 {
		t.Run("avx2", f)
	}
	bnplane.UseAVX2 = false
	t.Run("go", f)
}

// fusedPair is a fused batch norm layer and the same computation as two
// layers (BatchNorm then ReLU or Add), on separate copies of every input
// and parameter so that both can run from the same state.
type fusedPair struct {
	fused, bn, next Layer
	fx, ux          *bnFixture // fused and unfused batch norm operands
	fo, uo          *Value     // the addend (nil for the ReLU)
}

func newFusedPair(t *testing.T, c *CPU, add bool, shape ...int) *fusedPair {
	t.Helper()
	p := &fusedPair{}
	p.fx = newBN(t, c, rand.New(rand.NewPCG(30, 31)), shape...)
	p.ux = newBN(t, c, rand.New(rand.NewPCG(30, 31)), shape...)
	p.bn = p.ux.l
	var err error
	if add {
		rng := rand.New(rand.NewPCG(32, 33))
		p.fo = newInput(c, rng, "other", shape...)
		p.uo = c.NewValue("other", shape, true)
		copy(p.uo.Data, p.fo.Data)
		p.fused, err = c.BatchNormAdd(p.fx.x, p.fo, p.fx.gamma, p.fx.beta, p.fx.runMean, p.fx.runVar, BNAttrs{Eps: 1e-5, Momentum: 0.1})
		if err == nil {
			p.next, err = c.Add([]*Value{p.bn.Output(), p.uo})
		}
	} else {
		p.fused, err = c.BatchNormReLU(p.fx.x, p.fx.gamma, p.fx.beta, p.fx.runMean, p.fx.runVar, BNAttrs{Eps: 1e-5, Momentum: 0.1})
		if err == nil {
			p.next, err = c.ReLU(p.bn.Output())
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// step runs forward and backward on both with the same output gradient and
// returns, fused then unfused, every tensor either writes.
func (p *fusedPair) step(train bool, seed uint64) (fused, unfused [][]float32) {
	rng := rand.New(rand.NewPCG(seed, 1))
	p.fused.Forward(train)
	p.bn.Forward(train)
	p.next.Forward(train)
	randFill(rng, p.fused.Output().Grad)
	copy(p.next.Output().Grad, p.fused.Output().Grad)
	for _, f := range []*bnFixture{p.fx, p.ux} {
		clear(f.x.Grad)
		clear(f.gamma.Grad)
		clear(f.beta.Grad)
	}
	clear(p.bn.Output().Grad)
	p.fused.Backward()
	p.next.Backward()
	p.bn.Backward()
	collect := func(f *bnFixture, y, o *Value) [][]float32 {
		ts := [][]float32{y.Data, f.x.Grad, f.gamma.Grad, f.beta.Grad, f.runMean.Data, f.runVar.Data}
		if o != nil {
			ts = append(ts, o.Grad)
		}
		return ts
	}
	return collect(p.fx, p.fused.Output(), p.fo), collect(p.ux, p.next.Output(), p.uo)
}

func bitsEqual(t *testing.T, what string, a, b [][]float32) {
	t.Helper()
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				t.Fatalf("%s: tensor %d element %d: %g fused, %g unfused", what, i, j, a[i][j], b[i][j])
			}
		}
	}
}

// shapes for the fused tests: few channels (sample ranges split per
// channel), many channels (one task per channel), flat, and planes whose
// widths leave masked tails.
var fuseShapes = [][]int{{3, 2, 3, 4}, {5, 3}, {2, 16, 2, 2}, {4, 20, 7, 7}, {3, 5, 5, 3}}

// TestFusedEqualsUnfused: the fused layers give bit-identical outputs,
// gradients and running statistics to the two layers they replace, in
// training and evaluation, on both kernel sets, over two steps (the second
// from the running statistics the first moved).
func TestFusedEqualsUnfused(t *testing.T) {
	bnKernelPaths(t, func(t *testing.T) {
		for _, c := range testBackends() {
			for _, add := range []bool{false, true} {
				for _, shape := range fuseShapes {
					p := newFusedPair(t, c, add, shape...)
					for s, train := range []bool{true, false, true} {
						f, u := p.step(train, uint64(s))
						bitsEqual(t, fmt.Sprintf("add=%v %v train=%v step %d", add, shape, train, s), f, u)
					}
				}
			}
		}
	})
}

func TestFusedGradients(t *testing.T) {
	bnKernelPaths(t, func(t *testing.T) {
		c := testBackends()[0]
		for _, add := range []bool{false, true} {
			for _, train := range []bool{true, false} {
				for _, shape := range [][]int{{3, 2, 3, 4}, {5, 3}, {2, 16, 2, 2}, {2, 3, 3, 3}} {
					p := newFusedPair(t, c, add, shape...)
					if !add {
						offKink(rand.New(rand.NewPCG(34, 35)), p.fx)
					}
					inputs := []*Value{p.fx.x}
					if add {
						inputs = append(inputs, p.fo)
					}
					params := []*Param{p.fx.gamma, p.fx.beta, p.fx.runMean, p.fx.runVar}
					gradCheck(t, p.fused, inputs, params, train, 30)
					checkAccumulates(t, p.fused, inputs, params, train)
					checkNoAllocs(t, "fused batchnorm", p.fused, train)
				}
			}
		}
	})
}

// offKink refills a batch norm fixture so that its outputs stay clear of
// the ReLU's kink under gradCheck's steps: each channel's inputs are
// +-(0.3 + 0.1k) in shuffled pairs (mean about 0, none near it), with
// shift 0 and running mean 0, so every output is at least about 0.1 from 0
// in training and in evaluation.
func offKink(rng *rand.Rand, f *bnFixture) {
	n, c, hw := f.x.N(), f.x.C(), f.x.H()*f.x.W()
	for ch := range c {
		m := n * hw
		for k, j := range rng.Perm(m) {
			v := 0.3 + 0.1*float32(j/2)
			if j%2 == 1 {
				v = -v
			}
			b, i := k/hw, k%hw
			f.x.Data[(b*c+ch)*hw+i] = v
		}
		f.beta.Data[ch], f.runMean.Data[ch] = 0, 0
	}
}

// TestFusedDeterministicAcrossWorkers: bit-identical results on 1, 2 and 3
// workers, with the per-channel sample ranges (few channels) and without.
func TestFusedDeterministicAcrossWorkers(t *testing.T) {
	for _, add := range []bool{false, true} {
		for _, shape := range [][]int{{8, 3, 5, 5}, {6, 24, 4, 4}} {
			var first [][]float32
			for _, workers := range []int{1, 2, 3} {
				p := newFusedPair(t, NewCPU(DefaultGemm(), workers), add, shape...)
				f, _ := p.step(true, 9)
				if first == nil {
					first = f
					continue
				}
				bitsEqual(t, fmt.Sprintf("add=%v %v: 1 worker against %d", add, shape, workers), first, f)
			}
		}
	}
}

// TestFusedPerSampleScaleGrads: the per-sample scale gradients of a fused
// BN+ReLU are those of the batch norm of the unfused pair (whose output
// gradient the ReLU masked), in evaluation mode.
func TestFusedPerSampleScaleGrads(t *testing.T) {
	c := testBackends()[0]
	p := newFusedPair(t, c, false, 4, 5, 3, 3)
	p.step(false, 3)
	gf, gu := make([]float64, 4*5), make([]float64, 4*5)
	if _, ok, err := PerSampleScaleGrads(p.fused, gf); !ok || err != nil {
		t.Fatalf("fused: ok %v, err %v", ok, err)
	}
	if _, ok, err := PerSampleScaleGrads(p.bn, gu); !ok || err != nil {
		t.Fatalf("unfused: ok %v, err %v", ok, err)
	}
	nonzero := 0
	for i := range gf {
		if gf[i] != gu[i] {
			t.Fatalf("g[%d] = %g fused, %g unfused", i, gf[i], gu[i])
		}
		if gf[i] != 0 {
			nonzero++
		}
	}
	if nonzero == 0 {
		t.Fatal("every per-sample gradient is zero: the comparison shows nothing")
	}
}

func TestFusedErrors(t *testing.T) {
	c := testBackends()[0]
	rng := rand.New(rand.NewPCG(1, 2))
	f := newBN(t, c, rng, 2, 3, 2, 2)
	_, err := c.BatchNormAdd(f.x, f.x, f.gamma, f.beta, f.runMean, f.runVar, BNAttrs{Eps: 1e-5, Momentum: 0.1})
	wantErr(t, "same addend", err, "batchnorm+add", "both")
	other := newInput(c, rng, "o", 2, 3, 2, 1)
	_, err = c.BatchNormAdd(f.x, other, f.gamma, f.beta, f.runMean, f.runVar, BNAttrs{Eps: 1e-5, Momentum: 0.1})
	wantErr(t, "shape", err, "batchnorm+add", "o", "[2 3 2 1]")
	_, err = c.BatchNormReLU(f.x, f.gamma, f.beta, f.runMean, nil, BNAttrs{Eps: 1e-5, Momentum: 0.1})
	wantErr(t, "nil param", err, "batchnorm", "running variance")
}
