package search

import (
	"math"
	"math/rand/v2"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

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
	if g := s.OpGroup(Reduce, 1, 4, models.ProxySep5); g == nil || len(g.Vars) != 2 || g.Vars[0].P.Name != "cell1.e1_4.mix.w1" || g.Vars[1].P.Name != "cell2.e1_4.mix.w1" || g.Lambda != 0.005 {
		t.Errorf("reduce sep5 group of edge 1->4: %+v", g)
	}
	if g := s.SwitchGroup(Normal, 3, 5); g == nil || len(g.Vars) != 1 || g.Vars[0].P.Name != "cell0.e3_5.switch.w0" || g.Lambda != 0.01 {
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
