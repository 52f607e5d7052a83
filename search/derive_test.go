package search

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"bayesnas/models"
)

func setAllGamma(s *Space, v float64) {
	for _, g := range s.Groups {
		g.Gamma = v
	}
}

// A hand-made gamma table gives the expected cell: several ops on one edge,
// an edge out of a dead node dropped, the threshold strict.
func TestDeriveExample(t *testing.T) {
	_, _, s := tinySpace(t, 1)
	setAllGamma(s, 0) // everything pruned ...
	for _, ct := range s.CellTypes() {
		for j := 0; j < 5; j++ {
			for k := j + 1; k < 6; k++ {
				if k >= 2 {
					s.SwitchGroup(ct, j, k).Gamma = 1
				}
			}
		}
	}
	// ... except: normal 0->2 sep3 and skip, 2->3 max pool, 4->5 dil3 (node 4 is dead).
	s.OpGroup(Normal, 0, 2, models.ProxySep3).Gamma = 1
	s.OpGroup(Normal, 0, 2, models.ProxySkip).Gamma = 0.5
	s.OpGroup(Normal, 2, 3, models.ProxyMax3).Gamma = 1
	s.OpGroup(Normal, 4, 5, models.ProxyDil3).Gamma = 1
	// reduce: 1->4 avg pool only.
	s.OpGroup(Reduce, 1, 4, models.ProxyAvg3).Gamma = 2
	s.ApplyDependency()
	d, err := s.Derive(DeriveConfig{Threshold: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	wantN := []models.ProxyEdge{{From: 0, To: 2, Ops: []string{models.ProxySep3, models.ProxySkip}}, {From: 2, To: 3, Ops: []string{models.ProxyMax3}}}
	wantR := []models.ProxyEdge{{From: 1, To: 4, Ops: []string{models.ProxyAvg3}}}
	if !reflect.DeepEqual(d.Normal, wantN) || !reflect.DeepEqual(d.Reduce, wantR) {
		t.Errorf("derived normal %+v reduce %+v, want %+v and %+v", d.Normal, d.Reduce, wantN, wantR)
	}
	if c := d.Table.Cells[0]; c.Type != Normal || c.KeptEdges != 2 || c.KeptOps != 3 || !reflect.DeepEqual(c.LiveNodes, []int{2, 3}) || c.Forced {
		t.Errorf("normal decisions: %+v", c)
	}
	// Edge 4->5 has a live op on paper but its source is dead: gamma_eff 0.
	for _, e := range d.Table.Cells[0].Edges {
		if e.From == 4 && e.To == 5 && (e.Kept || e.Switch.GammaEff != 0) {
			t.Errorf("edge 4->5 out of a dead node: %+v", e)
		}
	}
	// The table is JSON with every edge and op.
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"gamma_eff"`, `"omega"`, `"weights"`, `"tau"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("decision table lacks %s", key)
		}
	}
	if n := len(d.Table.Cells[0].Edges); n != 14 {
		t.Errorf("table lists %d normal edges, want 14", n)
	}
	g, err := DerivedNetwork(models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Nodes: 4, StemMultiplier: 1, StemStride: 1}, d, 6, 4)
	if err != nil {
		t.Fatal(err)
	}
	if g.Node("cell0.e0_2.sum") == nil || g.Node("cell4.e1_4.avg_pool_3x3.pool") == nil {
		t.Errorf("derived network lacks the kept ops")
	}
	if _, err := s.Derive(DeriveConfig{Threshold: 1, Relative: true}); err == nil {
		t.Errorf("relative threshold 1 accepted")
	}
}

// Over random gamma tables (with many exact zeros) and thresholds, the
// derived cells always build, keep only ops above tau (unless forced),
// never keep an edge out of an unreached node, and every live node is
// entered by a kept edge.
func TestDeriveAlwaysConnected(t *testing.T) {
	_, _, s := tinySpace(t, 1)
	rng := rand.New(rand.NewPCG(12, 34))
	base := models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Nodes: 4, StemMultiplier: 1, StemStride: 1}
	forced := 0
	for trial := 0; trial < 300; trial++ {
		zeroP := rng.Float64()
		for _, g := range s.Groups {
			g.Gamma = math.Exp(rng.NormFloat64() * 3)
			if rng.Float64() < zeroP {
				g.Gamma = 0
			}
		}
		s.ApplyDependency()
		cfg := DeriveConfig{Threshold: math.Exp(rng.NormFloat64() * 3)}
		if rng.IntN(2) == 0 {
			cfg = DeriveConfig{Threshold: rng.Float64() * 0.99, Relative: true}
		}
		// Half the trials also ask for a significance floor over random
		// values and posterior variances.
		if rng.IntN(2) == 0 {
			cfg.MinSignificance = rng.Float64() * 3
			for _, g := range s.Groups {
				g.C = make([]float64, len(g.Vars))
				for i, v := range g.Vars {
					v.Set(rng.NormFloat64())
					g.C[i] = math.Exp(rng.NormFloat64() * 2)
				}
			}
		}
		d, err := s.Derive(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for ci, cell := range [][]models.ProxyEdge{d.Normal, d.Reduce} {
			cd := d.Table.Cells[ci]
			if cd.Forced {
				forced++
			}
			live := map[int]bool{0: true, 1: true}
			for _, e := range cell {
				if !live[e.From] {
					t.Fatalf("trial %d %s: edge %d->%d leaves an unreached node", trial, cd.Type, e.From, e.To)
				}
				live[e.To] = true
				for _, op := range e.Ops {
					if g := s.OpGroup(cd.Type, e.From, e.To, op); !cd.Forced && !(g.GammaEff > cd.Tau) {
						t.Fatalf("trial %d: kept %s with gamma_eff %g <= tau %g", trial, g.Name, g.GammaEff, cd.Tau)
					}
					for _, g := range []*Group{s.OpGroup(cd.Type, e.From, e.To, op), s.SwitchGroup(cd.Type, e.From, e.To)} {
						if z, ok := g.Significance(); !cd.Forced && ok && z < cfg.MinSignificance {
							t.Fatalf("trial %d: kept %s with significance %g < %g", trial, g.Name, z, cfg.MinSignificance)
						}
					}
				}
			}
			if len(cd.LiveNodes) == 0 {
				t.Fatalf("trial %d %s: no live node", trial, cd.Type)
			}
			for _, k := range cd.LiveNodes {
				if !live[k] {
					t.Fatalf("trial %d %s: node %d reported live but no kept edge enters it", trial, cd.Type, k)
				}
			}
		}
		if _, err := DerivedNetwork(base, d, 3, 2); err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
	}
	t.Logf("300 random tables: %d forced cells", forced)
}

// The significance floor drops an edge the search drove to zero although
// its gamma_eff, inflated by a curvature that went to zero with it, clears
// the threshold (a case from a real search: switch 0.000 in every cell,
// posterior variance ~ gamma, curvature ~ 1e-7), and keeps a clear one.
func TestDeriveSignificanceFloor(t *testing.T) {
	_, _, s := tinySpace(t, 1)
	setAllGamma(s, 0)
	set := func(g *Group, gamma float64, a float32, c float64) {
		g.Gamma = gamma
		g.C = make([]float64, len(g.Vars))
		for i, v := range g.Vars {
			v.Set(float64(a))
			g.C[i] = c
		}
	}
	for _, ct := range s.CellTypes() {
		set(s.SwitchGroup(ct, 0, 2), 0.5, 0.6, 0.01)               // z = 6
		set(s.OpGroup(ct, 0, 2, models.ProxySep3), 0.1, 0.2, 0.01) // z = 2
		set(s.SwitchGroup(ct, 1, 3), 0.02, 0.0004, 0.02)           // z ~ 0.003
		set(s.OpGroup(ct, 1, 3, models.ProxyMax3), 0.02, 0.001, 0.02)
	}
	s.ApplyDependency()
	d, err := s.Derive(DeriveConfig{Threshold: 0.005})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Normal) != 2 {
		t.Fatalf("without a floor: %+v, want edges 0->2 and 1->3", d.Normal)
	}
	d, err = s.Derive(DeriveConfig{Threshold: 0.005, MinSignificance: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := []models.ProxyEdge{{From: 0, To: 2, Ops: []string{models.ProxySep3}}}
	if !reflect.DeepEqual(d.Normal, want) || !reflect.DeepEqual(d.Reduce, want) {
		t.Errorf("floor 1: normal %+v reduce %+v, want %+v", d.Normal, d.Reduce, want)
	}
	if d.Table.MinSignificance != 1 {
		t.Errorf("the table does not record the floor")
	}
	for _, e := range d.Table.Cells[0].Edges {
		if e.From == 1 && e.To == 3 && (e.Kept || e.Switch.Significance > 0.01) {
			t.Errorf("edge 1->3: kept %v significance %g", e.Kept, e.Switch.Significance)
		}
	}
	if _, err := s.Derive(DeriveConfig{Threshold: 0.01, MinSignificance: -1}); err == nil || !strings.Contains(err.Error(), "min_significance") {
		t.Errorf("negative floor: err = %v", err)
	}
}
