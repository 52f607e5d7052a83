package bayes

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"bayesnas/nn"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// The worked example of METHOD.md section 3, to its printed digits.
func TestUpdateWorkedExample(t *testing.T) {
	a := []float64{0.9, 1.1, 1.0, 0.8, 1.2, 0.95}
	h := []float64{0.02, 0.03, 0.01, 0.05, 0.02, 0.04}
	c, omega, gamma, clamped := UpdateGroup(a, h, 0.5, 0.01, 1e-8)
	wantC := []float64{0.25, 0.2, 0.333333, 0.142857, 0.25, 0.166667}
	for i := range c {
		if !near(c[i], wantC[i], 5e-7) {
			t.Errorf("C[%d] = %.7f, want %.6f", i, c[i], wantC[i])
		}
	}
	if !near(omega, 2.574601, 5e-7) || !near(gamma, 0.951604, 5e-7) || clamped {
		t.Errorf("parent: omega %.7f gamma %.7f clamped %v, want 2.574601, 0.951604, false", omega, gamma, clamped)
	}
	// The stabler and the literal form of omega agree.
	var literal float64
	for i := range c {
		literal += 1/0.5 - c[i]/(0.5*0.5)
	}
	if !near(math.Sqrt(literal), omega, 1e-12) {
		t.Errorf("omega: literal form %.12f, stable form %.12f", math.Sqrt(literal), omega)
	}
	ca := []float64{0.30, 0.25, 0.40, 0.10, 0.35, 0.20}
	ch := []float64{0.004, 0.002, 0.006, 0.001, 0.003, 0.002}
	_, omegaC, gammaC, _ := UpdateGroup(ca, ch, 0.2, 0.01, 1e-8)
	if !near(omegaC, 1.292965, 5e-7) || !near(gammaC, 0.538622, 5e-7) {
		t.Errorf("child: omega %.7f gamma %.7f, want 1.292965, 0.538622", omegaC, gammaC)
	}
	if eff := Combine(gammaC, gamma); !near(eff, 0.343944, 5e-7) {
		t.Errorf("child gamma_eff %.7f, want 0.343944", eff)
	}
}

func TestUpdateGuards(t *testing.T) {
	_, omega, gamma, clamped := UpdateGroup([]float64{0.5, 0.5}, []float64{0, 0}, 1, 0.01, 1e-6)
	if omega != 0 || !clamped || !near(gamma, math.Sqrt(0.5)/1e-6, 1e-3) {
		t.Errorf("flat loss: omega %g clamped %v gamma %g", omega, clamped, gamma)
	}
	_, omega, gamma, clamped = UpdateGroup([]float64{0.5}, []float64{3}, 0.7, 0, 1e-6)
	if omega != 0 || gamma != 0.7 || clamped {
		t.Errorf("lambda 0: omega %g gamma %g clamped %v, want 0, 0.7 (unchanged), false", omega, gamma, clamped)
	}
	if Combine(0.3, math.Inf(1)) != 0.3 || Combine(0, 1) != 0 || Combine(1, 0) != 0 {
		t.Errorf("Combine limits wrong")
	}
}

// plusMinus evaluates f with v at its value plus h and minus h (steps in
// float32, as the variable is stored) and restores it: the two sides of a
// central difference of whatever f computes.
func plusMinus[T any](v Var, h float32, f func() T) (up, down T) {
	old := v.P.Data[v.I]
	v.P.Data[v.I] = old + h
	up = f()
	v.P.Data[v.I] = old - h
	down = f()
	v.P.Data[v.I] = old
	return up, down
}

// testSet is a set of independent groups whose members are elements of a
// few multi-element parameters, scattered across them (Var.I != 0), as
// channel gates are; the search's groups are the special case of scalars.
type testSet struct{ groups []*Group }

func (s *testSet) Priors() []*Group { return s.groups }
func (s *testSet) ApplyDependency() { Independent(s.groups) }

// newTestSet makes n groups of 1 to 4 members over 3 parameters of 40
// elements, every element in at most one group, values drawn at random.
func newTestSet(rng *rand.Rand, n int) *testSet {
	var vars []Var
	for k := range 3 {
		p := nn.NewParam(fmt.Sprintf("p%d", k), nn.ArchVar, 40)
		for i := range p.Data {
			p.Data[i] = float32(rng.NormFloat64())
			vars = append(vars, Var{P: p, I: i})
		}
	}
	rng.Shuffle(len(vars), func(i, j int) { vars[i], vars[j] = vars[j], vars[i] })
	s := &testSet{}
	for g := range n {
		m := 1 + rng.IntN(4)
		s.groups = append(s.groups, &Group{Name: fmt.Sprintf("g%d", g), Vars: vars[:m], Lambda: 0.01, Gamma: 1, Omega: 1})
		vars = vars[m:]
	}
	return s
}

// The penalty gradient matches finite differences of the penalty.
func TestPenaltyGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	s := newTestSet(rng, 20)
	for _, g := range s.groups {
		g.Omega = 0.5 + rng.Float64()
		for _, v := range g.Vars {
			v.P.Grad[v.I] = 0
		}
	}
	AddPenaltyGrad(s)
	for _, g := range s.groups {
		for _, v := range g.Vars {
			const h = 1e-2
			lp, lm := plusMinus(v, h, func() float64 { return Penalty(s) })
			num := (lp - lm) / (2 * h)
			if !near(num, float64(v.P.Grad[v.I]), 1e-4) {
				t.Errorf("%s[%d]: gradient %g, finite difference %g", v.P.Name, v.I, v.P.Grad[v.I], num)
			}
		}
	}
}

// The proximal penalty step is the group soft-threshold: on a separable
// quadratic data loss sum_i h/2 (a_i - c_i)^2 per group, gradient steps plus
// ProxPenalty converge to the closed-form group-lasso minimiser
// a_g = c_g * max(0, 1 - lambda*omega/(h*||c_g||)), exact zeros included,
// and a group with no data gradient goes to exactly zero.
func TestProxPenaltyGroupLasso(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	s := newTestSet(rng, 40)
	const h, lr = 2.0, 0.05
	targets := map[Var]float64{}
	for gi, g := range s.groups {
		g.Lambda, g.Omega = 0.1, 0.5+rng.Float64()
		scale := rng.Float64() * 0.2 // many groups inside the threshold
		if gi%5 == 0 {
			scale = 0 // no data gradient: the target is zero
		}
		for _, v := range g.Vars {
			targets[v] = scale * rng.NormFloat64()
		}
	}
	for range 2000 {
		for v, c := range targets {
			v.P.Data[v.I] -= float32(lr * h * (v.Value() - c))
		}
		ProxPenalty(s, lr, func(Var) float64 { return 1 })
	}
	zeros := 0
	for _, g := range s.groups {
		var cn float64
		for _, v := range g.Vars {
			cn += targets[v] * targets[v]
		}
		cn = math.Sqrt(cn)
		shrink := 0.0
		if cn > 0 {
			shrink = math.Max(0, 1-g.Lambda*g.Omega/(h*cn))
		}
		if shrink == 0 {
			zeros++
		}
		for _, v := range g.Vars {
			want := targets[v] * shrink
			if math.Abs(v.Value()-want) > 1e-5 || (want == 0 && v.Value() != 0) {
				t.Fatalf("%s[%d]: %g, want %g (group %s)", v.P.Name, v.I, v.Value(), want, g.Name)
			}
		}
	}
	if zeros == 0 || zeros == len(s.groups) {
		t.Fatalf("%d of %d groups at zero: the case does not test both sides", zeros, len(s.groups))
	}
}

// Update visits live groups only, fills H and C, applies the set's
// dependency rule, counts clamped groups, and names a variable it has no
// curvature for.
func TestUpdate(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	s := newTestSet(rng, 6)
	h := map[Var]float64{}
	for _, g := range s.groups {
		for _, v := range g.Vars {
			h[v] = rng.Float64()
		}
	}
	for _, v := range s.groups[1].Vars {
		h[v] = 0 // flat: omega clamps
	}
	s.groups[2].Frozen = true
	clamped, err := Update(s, h, 1e-8)
	if err != nil || clamped != 1 {
		t.Fatalf("clamped %d, %v; want 1, nil", clamped, err)
	}
	for i, g := range s.groups {
		switch {
		case i == 2 && (g.H != nil || g.Gamma != 1 || g.GammaEff != 0):
			t.Errorf("frozen group updated: H %v, gamma %g, gamma_eff %g", g.H, g.Gamma, g.GammaEff)
		case i != 2 && (len(g.H) != len(g.Vars) || len(g.C) != len(g.Vars) || g.GammaEff != g.Gamma || g.Clamped != (i == 1)):
			t.Errorf("group %s: H %v C %v gamma %g gamma_eff %g clamped %v", g.Name, g.H, g.C, g.Gamma, g.GammaEff, g.Clamped)
		}
	}
	delete(h, s.groups[3].Vars[0])
	if _, err := Update(s, h, 1e-8); err == nil || !strings.Contains(err.Error(), s.groups[3].Name) {
		t.Errorf("missing curvature: %v", err)
	}
}
