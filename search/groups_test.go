package search

import (
	"math"
	"math/rand/v2"
	"testing"

	"bayesnas/models"
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
	if eff := combine(gammaC, gamma); !near(eff, 0.343944, 5e-7) {
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
	if combine(0.3, math.Inf(1)) != 0.3 || combine(0, 1) != 0 || combine(1, 0) != 0 {
		t.Errorf("combine limits wrong")
	}
}

// tinySpace compiles the 3-cell tiny supernet and groups its variables.
func tinySpace(t *testing.T, batch int) (*models.Graph, *nn.Network, *Space) {
	t.Helper()
	cfg := models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Channels: 2, Cells: 3, Nodes: 4,
		StemMultiplier: 1, StemStride: 1, Search: true}
	g, ps, err := models.ProxyNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 2), batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.InitParams(net, g, 5); err != nil {
		t.Fatal(err)
	}
	s, err := NewSpace(ps, net, 0.01, 0.005)
	if err != nil {
		t.Fatal(err)
	}
	return g, net, s
}

func TestSpaceGroups(t *testing.T) {
	_, _, s := tinySpace(t, 2)
	// 1 normal and 2 reduction cells: 2 types x 14 edges x (switch + 7 ops).
	if len(s.Groups) != 2*14*8 {
		t.Fatalf("%d groups, want %d", len(s.Groups), 2*14*8)
	}
	if g := s.OpGroup(Reduce, 1, 4, models.ProxySep5); g == nil || len(g.Params) != 2 || g.Params[0].Name != "cell1.e1_4.mix.w1" || g.Params[1].Name != "cell2.e1_4.mix.w1" || g.Lambda != 0.005 {
		t.Errorf("reduce sep5 group of edge 1->4: %+v", g)
	}
	if g := s.SwitchGroup(Normal, 3, 5); g == nil || len(g.Params) != 1 || g.Params[0].Name != "cell0.e3_5.switch.w0" || g.Lambda != 0.01 {
		t.Errorf("normal switch group of edge 3->5: %+v", g)
	}
	if _, err := NewSpace(&models.ProxySpace{Ops: models.ProxyOps, Nodes: 4, Cells: []models.ProxySpaceCell{{Name: "x",
		Edges: []models.ProxySpaceEdge{{From: 0, To: 2, Switch: "nope", OpWeights: make([]string, 7)}}}}}, &nn.Network{}, 0.01, 0.01); err == nil {
		t.Errorf("a space naming missing parameters was accepted")
	}
}

// Dependency over random gamma tables: gamma_eff never exceeds the group's
// own gamma nor its parent's (switch for ops, node variance for switches),
// and a pruned (zero) parent prunes every descendant.
func TestDependencyProperties(t *testing.T) {
	_, _, s := tinySpace(t, 2)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		for _, g := range s.Groups {
			g.Gamma = math.Exp(rng.NormFloat64() * 2)
			if rng.IntN(4) == 0 {
				g.Gamma = 0
			}
		}
		s.ApplyDependency()
		for _, ct := range s.CellTypes() {
			nodeVar := []float64{math.Inf(1), math.Inf(1), 0, 0, 0, 0}
			for k := 2; k < 6; k++ {
				for j := 0; j < k; j++ {
					sw := s.SwitchGroup(ct, j, k)
					if sw.GammaEff > sw.Gamma*(1+1e-12) || sw.GammaEff > nodeVar[j]*(1+1e-12) {
						t.Fatalf("%s: gamma_eff %g above own %g or node %d's %g", sw.Name, sw.GammaEff, sw.Gamma, j, nodeVar[j])
					}
					if nodeVar[j] == 0 && sw.GammaEff != 0 {
						t.Fatalf("%s: node %d is dead but the switch is alive", sw.Name, j)
					}
					best := 0.0
					for _, op := range s.Ops {
						g := s.OpGroup(ct, j, k, op)
						if g.GammaEff > g.Gamma*(1+1e-12) || g.GammaEff > sw.GammaEff*(1+1e-12) {
							t.Fatalf("%s: gamma_eff %g above own %g or switch's %g", g.Name, g.GammaEff, g.Gamma, sw.GammaEff)
						}
						if sw.Gamma == 0 && g.GammaEff != 0 {
							t.Fatalf("%s: switch pruned but op alive", g.Name)
						}
						best = math.Max(best, g.GammaEff)
					}
					nodeVar[k] += best
				}
			}
		}
	}
	// Pruning every op into node 2 kills node 2: every edge out of it is pruned.
	for _, g := range s.Groups {
		g.Gamma = 1
	}
	for j := 0; j < 2; j++ {
		s.SwitchGroup(Normal, j, 2).Gamma = 0
	}
	s.ApplyDependency()
	for k := 3; k < 6; k++ {
		if e := s.SwitchGroup(Normal, 2, k).GammaEff; e != 0 {
			t.Errorf("edge 2->%d has gamma_eff %g although node 2 is dead", k, e)
		}
		if e := s.OpGroup(Normal, 2, k, models.ProxySep3).GammaEff; e != 0 {
			t.Errorf("op on edge 2->%d has gamma_eff %g although node 2 is dead", k, e)
		}
	}
	if e := s.SwitchGroup(Reduce, 2, 3).GammaEff; !(e > 0) {
		t.Errorf("reduction cells are independent of normal ones, yet edge 2->3 has gamma_eff %g", e)
	}
}

// The penalty gradient matches finite differences of the penalty.
func TestPenaltyGradient(t *testing.T) {
	_, net, s := tinySpace(t, 2)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, g := range s.Groups {
		g.Omega = 0.5 + rng.Float64()
		for _, p := range g.Params {
			p.Data[0] = float32(rng.NormFloat64())
		}
	}
	net.ZeroGrad()
	s.AddPenaltyGrad()
	for _, g := range s.Groups[:20] {
		for _, p := range g.Params {
			old := p.Data[0]
			const h = 1e-2
			p.Data[0] = old + h
			lp := s.Penalty()
			p.Data[0] = old - h
			lm := s.Penalty()
			p.Data[0] = old
			num := (lp - lm) / (2 * h)
			if !near(num, float64(p.Grad[0]), 1e-4) {
				t.Errorf("%s: gradient %g, finite difference %g", p.Name, p.Grad[0], num)
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
	_, _, s := tinySpace(t, 2)
	rng := rand.New(rand.NewPCG(9, 9))
	const h, lr = 2.0, 0.05
	targets := map[*nn.Param]float64{}
	for gi, g := range s.Groups {
		g.Lambda, g.Omega = 0.1, 0.5+rng.Float64()
		scale := rng.Float64() * 0.2 // many groups inside the threshold
		if gi%5 == 0 {
			scale = 0 // no data gradient: the target is zero
		}
		for _, p := range g.Params {
			targets[p] = scale * rng.NormFloat64()
			p.Data[0] = float32(rng.NormFloat64())
		}
	}
	for range 2000 {
		for p, c := range targets {
			p.Data[0] -= float32(lr * h * (float64(p.Data[0]) - c))
		}
		s.ProxPenalty(lr, func(*nn.Param) float64 { return 1 })
	}
	zeros := 0
	for _, g := range s.Groups {
		var cn float64
		for _, p := range g.Params {
			cn += targets[p] * targets[p]
		}
		cn = math.Sqrt(cn)
		shrink := 0.0
		if cn > 0 {
			shrink = math.Max(0, 1-g.Lambda*g.Omega/(h*cn))
		}
		if shrink == 0 {
			zeros++
		}
		for _, p := range g.Params {
			want := targets[p] * shrink
			if math.Abs(float64(p.Data[0])-want) > 1e-5 || (want == 0 && p.Data[0] != 0) {
				t.Fatalf("%s: %g, want %g (group %s)", p.Name, p.Data[0], want, g.Name)
			}
		}
	}
	if zeros == 0 || zeros == len(s.Groups) {
		t.Fatalf("%d of %d groups at zero: the case does not test both sides", zeros, len(s.Groups))
	}
}
