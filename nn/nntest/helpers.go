// Package nntest is the conformance suite every nn.Backend must pass, as
// gonum's testblas is for every BLAS: Run checks each kernel a backend
// builds against a naive reference written here (plain float64 loops from
// the definition), its gradients against finite differences, the
// optimizers on the parameters its layers train, the per-sample gradients
// the curvature needs, and a small network's training step through
// nn.Network. The whole-network comparison of models' graphs across
// backends is in models/backendtest (nn cannot import models).
//
// The helpers (RandFill, GradCheck, the naive references) are exported so
// that nn's own tests use the same ones.
package nntest

import (
	"math"
	"math/rand/v2"
	"testing"

	"bayesnas/nn"
)

// RandFill fills s with uniform values in [-1, 1).
func RandFill(rng *rand.Rand, s []float32) {
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
}

// FillSpaced fills s with a shuffled set of values 0.05 apart (offset so none
// is near 0), so no finite-difference step can reorder two elements or cross
// a ReLU kink: max pooling and ReLU stay differentiable under GradCheck.
func FillSpaced(rng *rand.Rand, s []float32) {
	for i, j := range rng.Perm(len(s)) {
		s[i] = 0.025 + 0.05*float32(j-len(s)/2)
	}
}

// NewInput allocates a value with gradient on be, filled with uniform
// [-1,1) data (written through Commit: on a backend with its own storage
// the host slice is only a copy).
func NewInput(be nn.Backend, rng *rand.Rand, name string, shape ...int) *nn.Value {
	v := be.NewValue(name, shape, true)
	RandFill(rng, v.Data)
	v.Commit()
	return v
}

// FillParam fills p with uniform [-1,1) values scaled by scale and commits
// them.
func FillParam(rng *rand.Rand, p *nn.Param, scale float32) {
	RandFill(rng, p.Data)
	for i := range p.Data {
		p.Data[i] *= scale
	}
	p.Commit()
}

// hostTensor is what the checks need of a value or a parameter: its data
// copied out, and host writes copied back in.
type hostTensor interface {
	Host() []float32
	Commit()
}

// GradCheck compares a layer's analytic gradients with central finite
// differences of L = sum(out * r) for a fixed random r, for every input value
// and every trainable parameter, accumulating the loss in float64. At most
// maxPer elements of each tensor are checked (chosen at random). The forward
// pass must be deterministic for fixed inputs (dropout layers must be
// frozen to the same mask). Every access goes through Host and Commit, so
// it holds on a backend with its own storage.
func GradCheck(t testing.TB, l nn.Layer, inputs []*nn.Value, params []*nn.Param, train bool, maxPer int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	out := l.Output()
	r := make([]float32, len(out.Data))
	RandFill(rng, r)
	loss := func() float64 {
		l.Forward(train)
		s := 0.0
		for i, v := range out.Host() {
			s += float64(v) * float64(r[i])
		}
		return s
	}
	loss()
	for _, x := range inputs {
		clear(x.Grad)
		x.CommitGrad()
	}
	for _, p := range params {
		if p.Grad != nil {
			clear(p.Grad)
			p.CommitGrad()
		}
	}
	copy(out.Grad, r)
	out.CommitGrad()
	l.Backward()

	const eps = 1e-2
	check := func(what string, x hostTensor, grad []float32) {
		idx := rng.Perm(len(grad))
		if len(idx) > maxPer {
			idx = idx[:maxPer]
		}
		set := func(i int, v float32) {
			x.Host()[i] = v // the forward passes left the host copy stale
			x.Commit()
		}
		for _, i := range idx {
			old := x.Host()[i]
			set(i, old+eps)
			lp := loss()
			set(i, old-eps)
			lm := loss()
			set(i, old)
			num := (lp - lm) / (2 * eps)
			got := float64(grad[i])
			if !(math.Abs(num-got) <= 2e-2*math.Max(1, math.Abs(num))) {
				t.Errorf("%s[%d]: analytic %.6g, finite difference %.6g", what, i, got, num)
			}
		}
	}
	// Snapshot gradients: the check's forward passes must not disturb them.
	for _, x := range inputs {
		g := append([]float32(nil), x.HostGrad()...)
		check("input "+x.Name, x, g)
	}
	for _, p := range params {
		if !p.Trainable() {
			continue
		}
		g := append([]float32(nil), p.HostGrad()...)
		check("param "+p.Name, p, g)
	}
}

// CheckAccumulates asserts Backward adds into the gradients of the inputs
// and params rather than overwriting them: two backward passes from the same
// output gradient must give twice one pass (exactly, for a layer that adds
// its whole gradient at once; within float32 rounding, 1e-5 relative, for
// one that adds partial sums, as a convolution's weight gradient).
func CheckAccumulates(t testing.TB, l nn.Layer, inputs []*nn.Value, params []*nn.Param, train bool) {
	t.Helper()
	l.Forward(train)
	out := l.Output()
	RandFill(rand.New(rand.NewPCG(3, 5)), out.Grad)
	out.CommitGrad()
	// The gradients as host accesses: clear, read.
	var clears []func()
	var reads []func() []float32
	for _, x := range inputs {
		clears = append(clears, func() { clear(x.Grad); x.CommitGrad() })
		reads = append(reads, x.HostGrad)
	}
	for _, p := range params {
		if p.Trainable() {
			clears = append(clears, func() { clear(p.Grad); p.CommitGrad() })
			reads = append(reads, p.HostGrad)
		}
	}
	for _, c := range clears {
		c()
	}
	l.Backward()
	once := make([][]float32, len(reads))
	for i, r := range reads {
		once[i] = append([]float32(nil), r()...)
	}
	l.Backward()
	for i, r := range reads {
		g := r()
		for j := range g {
			if d := float64(g[j] - 2*once[i][j]); !(math.Abs(d) <= 1e-6*math.Max(1, 10*math.Abs(float64(once[i][j])))) {
				t.Fatalf("gradient %d[%d]: %g after two backward passes, %g after one: overwritten, not added", i, j, g[j], once[i][j])
			}
		}
	}
}

// CompareSlices fails unless got matches want within 1e-4 relative (1e-4
// absolute near zero).
func CompareSlices(t testing.TB, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	for i, w := range want {
		g := float64(got[i])
		if math.IsNaN(g) || math.Abs(g-w) > 1e-4*(1+math.Abs(w)) {
			t.Fatalf("%s[%d] = %.7g, want %.7g", what, i, g, w)
		}
	}
}
