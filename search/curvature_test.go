package search

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"bayesnas/nn"
)

// curvFixture is the tiny supernet with random architecture weights (small,
// so that logits stay moderate and finite differences rarely cross a kink), BN
// running statistics from a few training-mode passes, and a fixed batch.
type curvFixture struct {
	net    *nn.Network
	s      *Space
	x      []float32
	labels []int32
}

func newCurvFixture(t *testing.T) *curvFixture {
	_, net, s := tinySpace(t, 3)
	f := curvFixtureOver(net, s)
	for range 3 {
		copy(net.Input.Data, f.x)
		net.Forward(true)
	}
	return f
}

// curvFixtureOver sets the architecture variables of s to random values in
// [0.1, 0.3] and draws 3 random inputs with fixed labels.
func curvFixtureOver(net *nn.Network, s *Space) *curvFixture {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, g := range s.Groups {
		for _, p := range g.Params {
			p.Data[0] = float32(0.1 + 0.2*rng.Float64())
		}
	}
	f := &curvFixture{net: net, s: s, x: make([]float32, len(net.Input.Data)), labels: []int32{0, 2, 1}}
	for i := range f.x {
		f.x[i] = float32(rng.NormFloat64())
	}
	return f
}

// logits runs the network in evaluation mode and copies its output.
func (f *curvFixture) logits() []float64 {
	f.net.SetBatch(len(f.labels))
	copy(f.net.Input.Data, f.x)
	f.net.Forward(false)
	out := make([]float64, len(f.net.Output.Data))
	for i, v := range f.net.Output.Data {
		out[i] = float64(v)
	}
	return out
}

// perSampleLoss is the cross-entropy of each sample from logits.
func perSampleLoss(z []float64, labels []int32) []float64 {
	k := len(z) / len(labels)
	l := make([]float64, len(labels))
	for i, y := range labels {
		row := z[i*k : (i+1)*k]
		m := slices.Max(row)
		var s float64
		for _, v := range row {
			s += math.Exp(v - m)
		}
		l[i] = m + math.Log(s) - row[y]
	}
	return l
}

func (f *curvFixture) estimate(t *testing.T, est Estimator, reps int) map[*nn.Param]float64 {
	c, err := NewCurvature(f.net, est, 1)
	if err != nil {
		t.Fatal(err)
	}
	for range reps {
		if err := c.AddBatch(f.x, f.labels); err != nil {
			t.Fatal(err)
		}
	}
	return c.Diagonal()
}

// sampleParams picks every variable of the edges into the last node of the
// last cell (where the logits are linear in them) and some others.
func (f *curvFixture) sampleParams() (linear, other []*nn.Param) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, g := range f.s.Groups {
		for _, p := range g.Params {
			if strings.HasPrefix(p.Name, "cell2.") && strings.Contains(p.Name, "_5.") {
				linear = append(linear, p)
			} else if rng.IntN(25) == 0 {
				other = append(other, p)
			}
		}
	}
	return linear, other
}

// The GGN diagonal equals mean_n J_n^T (diag p - p p^T) J_n with the
// Jacobian J of the logits taken by central differences, for every sampled
// variable; where the logits are linear in the variable (the last node of
// the last cell, BN in evaluation mode) it also equals the finite-difference
// second derivative of the mean loss (central differences of the
// backpropagated gradient: float32 losses are too coarse for a second
// difference).
func TestGGNAgainstFiniteDifferences(t *testing.T) {
	f := newCurvFixture(t)
	ggn := f.estimate(t, GGN, 1)
	z0 := f.logits()
	n, k := len(f.labels), len(z0)/len(f.labels)
	p := make([]float64, len(z0))
	z32 := make([]float32, len(z0))
	for i, v := range z0 {
		z32[i] = float32(v)
	}
	softmax(z32, p, k)
	linear, other := f.sampleParams()
	if len(linear) != 5*8 || len(other) < 10 {
		t.Fatalf("sampled %d linear and %d other variables", len(linear), len(other))
	}
	var maxRel float64
	for _, prm := range append(append([]*nn.Param(nil), linear...), other...) {
		old := prm.Data[0]
		const h = 1e-2
		prm.Data[0] = old + h
		zp := f.logits()
		prm.Data[0] = old - h
		zm := f.logits()
		prm.Data[0] = old
		var ref float64
		for i := 0; i < n; i++ {
			jac := make([]float64, k)
			for c := range jac {
				jac[c] = (zp[i*k+c] - zm[i*k+c]) / (2 * h)
			}
			var jp float64
			for c := range jac {
				jp += jac[c] * p[i*k+c]
			}
			for c := range jac {
				ref += p[i*k+c] * jac[c] * jac[c]
			}
			ref -= jp * jp
		}
		ref /= float64(n)
		got := ggn[prm]
		rel := math.Abs(got-ref) / math.Max(math.Abs(ref), 1e-4)
		maxRel = math.Max(maxRel, rel)
		if rel > 5e-3 {
			t.Errorf("%s: GGN %.6g, from finite-difference Jacobian %.6g", prm.Name, got, ref)
		}
	}
	t.Logf("GGN vs finite-difference Jacobian: max relative error %.2g over %d variables", maxRel, len(linear)+len(other))
	maxRel = 0
	loss := nn.SoftmaxCrossEntropy{}
	grad := func(prm *nn.Param) float64 {
		f.net.SetBatch(n)
		copy(f.net.Input.Data, f.x)
		f.net.ZeroGrad()
		f.net.Forward(false)
		if _, _, err := loss.Forward(f.net.Output, f.labels); err != nil {
			t.Fatal(err)
		}
		f.net.Backward()
		return float64(prm.Grad[0])
	}
	for _, prm := range linear {
		old := prm.Data[0]
		const h = 2e-2
		prm.Data[0] = old + h
		gp := grad(prm)
		prm.Data[0] = old - h
		gm := grad(prm)
		prm.Data[0] = old
		hess := (gp - gm) / (2 * h)
		got := ggn[prm]
		rel := math.Abs(got-hess) / math.Max(math.Abs(hess), 1e-4)
		maxRel = math.Max(maxRel, rel)
		if rel > 5e-3 {
			t.Errorf("%s: GGN %.6g, second derivative of the loss (central differences of its gradient) %.6g", prm.Name, got, hess)
		}
	}
	t.Logf("GGN vs finite-difference loss Hessian (linear variables): max relative error %.2g", maxRel)
}

// The empirical Fisher is the mean of squared per-sample gradients, each
// checked by central differences of that sample's loss.
func TestEmpiricalFisherAgainstFiniteDifferences(t *testing.T) {
	f := newCurvFixture(t)
	emp := f.estimate(t, EmpiricalFisher, 1)
	linear, other := f.sampleParams()
	for _, prm := range append(linear[:8], other...) {
		old := prm.Data[0]
		const h = 1e-2
		prm.Data[0] = old + h
		lp := perSampleLoss(f.logits(), f.labels)
		prm.Data[0] = old - h
		lm := perSampleLoss(f.logits(), f.labels)
		prm.Data[0] = old
		var ref float64
		for i := range lp {
			g := (lp[i] - lm[i]) / (2 * h)
			ref += g * g
		}
		ref /= float64(len(lp))
		if got := emp[prm]; math.Abs(got-ref) > 1e-2*math.Max(ref, 1e-5) {
			t.Errorf("%s: empirical Fisher %.6g, from finite differences %.6g", prm.Name, got, ref)
		}
	}
}

// The Monte-Carlo Fisher in expectation: weighting the squared gradient at
// every label c by p_c (what sampling y ~ p averages to) gives the GGN
// exactly; and many actual draws come close to it.
func TestMonteCarloFisherExpectation(t *testing.T) {
	f := newCurvFixture(t)
	ggn := f.estimate(t, GGN, 1)
	z := f.logits()
	k := len(z) / len(f.labels)
	p := make([]float64, len(z))
	z32 := make([]float32, len(z))
	for i, v := range z {
		z32[i] = float32(v)
	}
	softmax(z32, p, k)
	expect := map[*nn.Param]float64{}
	for i := range f.labels {
		for c := 0; c < k; c++ {
			acc, err := NewCurvature(f.net, EmpiricalFisher, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := acc.AddBatch(f.x[i*len(f.x)/3:(i+1)*len(f.x)/3], []int32{int32(c)}); err != nil {
				t.Fatal(err)
			}
			for prm, v := range acc.Diagonal() {
				expect[prm] += p[i*k+c] * v / float64(len(f.labels))
			}
		}
	}
	var sumG, sumMC float64
	mc := f.estimate(t, MonteCarloFisher, 150)
	var rels []float64
	for prm, g := range ggn {
		if math.Abs(expect[prm]-g) > 1e-4*math.Max(g, 1e-6) {
			t.Errorf("%s: label-weighted empirical Fisher %.7g, GGN %.7g", prm.Name, expect[prm], g)
		}
		sumG += g
		sumMC += mc[prm]
		if g > 1e-6 {
			rels = append(rels, math.Abs(mc[prm]-g)/g)
		}
	}
	sort.Float64s(rels)
	med := rels[len(rels)/2]
	t.Logf("MC Fisher (450 draws) vs GGN: total %.5g vs %.5g, median relative error %.3f", sumMC, sumG, med)
	if math.Abs(sumMC-sumG) > 0.05*sumG || med > 0.15 {
		t.Errorf("MC Fisher does not average to the GGN: total %.5g vs %.5g, median relative error %.3f", sumMC, sumG, med)
	}
}

func TestCurvatureErrors(t *testing.T) {
	f := newCurvFixture(t)
	if _, err := NewCurvature(f.net, "hessian", 1); err == nil || !strings.Contains(err.Error(), "hessian") {
		t.Errorf("unknown estimator: %v", err)
	}
	c, err := NewCurvature(f.net, GGN, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddBatch(f.x, []int32{0, 7, 1}); err == nil || !strings.Contains(err.Error(), "label 7") {
		t.Errorf("bad label: %v", err)
	}
	if err := c.AddBatch(f.x, []int32{0, 1, 1, 1}); err == nil {
		t.Errorf("oversized batch accepted")
	}
}
