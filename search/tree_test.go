package search

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"bayesnas/bayes"
	"bayesnas/models"
	"bayesnas/nn"
)

// tinyTreeConfig is a tree supernet of one block per stage on 1x8x8
// (widths 6, 8, 10), as the models package tests it.
func tinyTreeConfig() models.PyramidTreeConfig {
	return models.PyramidTreeConfig{PyramidNetConfig: models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
		StemChannels: 4, Input: [3]int{1, 8, 8}, Classes: 3}, Search: true}
}

// tinyTreeSpace compiles a tree supernet and groups its variables.
func tinyTreeSpace(t *testing.T, cfg models.PyramidTreeConfig, batch int) (*models.Graph, *nn.Network, *Space) {
	t.Helper()
	g, ts, err := models.PyramidTreeNetwork(cfg)
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
	s, err := NewTreeSpace(ts, net, 0.01, 0.005)
	if err != nil {
		t.Fatal(err)
	}
	return g, net, s
}

func TestTreeSpaceGroups(t *testing.T) {
	_, net, s := tinyTreeSpace(t, tinyTreeConfig(), 1)
	nOps := len(models.TreeOps)
	if len(s.Groups) != 3*models.TreeEdges*(nOps+1) {
		t.Fatalf("%d groups, want 3 cells x 12 edges x 8", len(s.Groups))
	}
	if want := []string{"stage1.block0", "stage2.block0", "stage3.block0"}; !slices.Equal(s.CellTypes(), want) {
		t.Errorf("cells %v, want %v", s.CellTypes(), want)
	}
	g := s.TreeOpGroup("stage2.block0", 4, models.TreeSep3)
	if g == nil || g.Name != "stage2.block0.h0.t1.l0.sep_3x3" || g.Kind != Op || g.From != 4 || g.To != -1 || g.Edge != "h0.t1.l0" ||
		len(g.Vars) != 1 || g.Vars[0].P.Name != "stage2.block0.cell.h0.t1.l0.mix.w1" || g.Lambda != 0.005 {
		t.Errorf("stage2 edge 4 sep3 group: %+v", g)
	}
	g = s.TreeSwitchGroup("stage3.block0", 11)
	if g == nil || g.Name != "stage3.block0.h1.t1.l1.switch" || g.Kind != Switch || len(g.Vars) != 1 ||
		g.Vars[0].P.Name != "stage3.block0.cell.h1.t1.l1.switch.w0" || g.Lambda != 0.01 {
		t.Errorf("stage3 edge 11 switch group: %+v", g)
	}
	if s.TreeSwitchGroup("stage4.block0", 0) != nil || s.TreeSwitchGroup("stage1.block0", 12) != nil ||
		s.TreeOpGroup("stage1.block0", 0, "conv_9x9") != nil {
		t.Errorf("lookups of missing cells, edges or ops return groups")
	}
	// Every architecture variable of the network is in exactly one group.
	seen := map[*nn.Param]bool{}
	for _, g := range s.Groups {
		for _, v := range g.Vars {
			if seen[v.P] {
				t.Fatalf("%s is in two groups", v.P.Name)
			}
			seen[v.P] = true
		}
	}
	for _, p := range net.Params {
		if p.Kind == nn.ArchVar && !seen[p] {
			t.Errorf("architecture variable %s is in no group", p.Name)
		}
	}

	// Cells shared per stage: one group per (stage, edge, op), one variable per block.
	cfg := tinyTreeConfig()
	cfg.BlocksPerStage, cfg.SharePerStage = 2, true
	_, _, sh := tinyTreeSpace(t, cfg, 1)
	if len(sh.Groups) != 3*models.TreeEdges*(nOps+1) || !slices.Equal(sh.CellTypes(), []string{"stage1", "stage2", "stage3"}) {
		t.Fatalf("shared: %d groups over cells %v", len(sh.Groups), sh.CellTypes())
	}
	g = sh.TreeOpGroup("stage2", 7, models.TreeAvg3)
	if g == nil || g.Name != "stage2.h1.t0.l0.avg_pool_3x3" || len(g.Vars) != 2 ||
		g.Vars[0].P.Name != "stage2.block0.cell.h1.t0.l0.mix.w6" || g.Vars[1].P.Name != "stage2.block1.cell.h1.t0.l0.mix.w6" {
		t.Errorf("shared stage2 edge 7 avg pool group: %+v", g)
	}
}

func TestTreeSpaceErrors(t *testing.T) {
	g, ts, err := models.PyramidTreeNetwork(tinyTreeConfig())
	if err != nil {
		t.Fatal(err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), 1)
	if err != nil {
		t.Fatal(err)
	}
	_, pnet, ps := tinySpace(t, 1)
	clone := func() *models.TreeSpace {
		var c models.TreeSpace
		b, _ := json.Marshal(ts)
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	cases := map[string]struct {
		ts   *models.TreeSpace
		net  *nn.Network
		lam  float64
		want string
	}{
		"nil":             {nil, net, 0.01, "no cells"},
		"negative lambda": {ts, net, -1, "lambdas"},
		"other network":   {ts, pnet, 0.01, `no parameter "stage1.block0.cell.h0.t0.switch.w0"`},
	}
	short := clone()
	short.Cells[1].Edges = short.Cells[1].Edges[:11]
	cases["11 edges"] = struct {
		ts   *models.TreeSpace
		net  *nn.Network
		lam  float64
		want string
	}{short, net, 0.01, "block stage2.block0 (cell stage2.block0): 11 edges, want 12"}
	parent := clone()
	parent.Cells[2].Edges[5].Parent = 0
	cases["parent"] = struct {
		ts   *models.TreeSpace
		net  *nn.Network
		lam  float64
		want string
	}{parent, net, 0.01, "edge 5 (h0.t1.l1) has parent 0, want 3"}
	weights := clone()
	weights.Cells[0].Edges[2].OpWeights = weights.Cells[0].Edges[2].OpWeights[:3]
	cases["op weights"] = struct {
		ts   *models.TreeSpace
		net  *nn.Network
		lam  float64
		want string
	}{weights, net, 0.01, "edge 2 (h0.t0.l1) has 3 op weights for 7 ops"}
	for name, c := range cases {
		if _, err := NewTreeSpace(c.ts, c.net, c.lam, 0.01); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
	// Each kind of space refuses the other's derivation.
	s, err := NewTreeSpace(ts, net, 0.01, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Derive(DeriveConfig{Threshold: 0.1}); err == nil || !strings.Contains(err.Error(), "DeriveTree") {
		t.Errorf("Derive on a tree space: %v", err)
	}
	if _, err := ps.DeriveTree(DeriveConfig{Threshold: 0.1}); err == nil || !strings.Contains(err.Error(), "not a tree-cell space") {
		t.Errorf("DeriveTree on a proxy space: %v", err)
	}
	if _, err := s.DeriveTree(DeriveConfig{Threshold: -1}); err == nil || !strings.Contains(err.Error(), "threshold") {
		t.Errorf("negative threshold: %v", err)
	}
}

// The tree rule on a hand-made table, every value worked out by hand:
//
//	edge 0 (top): switch 1 -> 1/(1/1 + 1/Inf) = 1; identity 1 -> 1/(1+1) = 0.5;
//	  sep3 0.5 -> 1/(2+1) = 1/3; other ops 0 -> 0.  alive(0) = 0.5
//	edge 1 (leaf of 0): switch 2 -> 1/(1/2 + 1/0.5) = 0.4; identity 0.4 ->
//	  1/(2.5+2.5) = 0.2; sep3 frozen -> 0; other ops 0.6 -> 1/(1/0.6+2.5) = 0.24
//	edge 2 (leaf of 0): switch 0 -> 0 and every op 0 (own gamma 1)
//	edge 3 (top): switch 1 -> 1, every op 0 -> 0. alive(3) = 0
//	edges 4, 5 (leaves of 3): all gamma 1, yet switch and ops 0
//	edge 6 (top), all gamma 1: switch 1, ops 0.5; edge 7: switch 1/(1+2) = 1/3, ops 1/(1+3) = 0.25
func TestTreeDependencyWorkedExample(t *testing.T) {
	_, _, s := tinyTreeSpace(t, tinyTreeConfig(), 1)
	setAllGamma(s, 1)
	const c = "stage1.block0"
	op := func(e int, o string) *Group { return s.TreeOpGroup(c, e, o) }
	for _, o := range models.TreeOps[2:] {
		op(0, o).Gamma = 0
		op(1, o).Gamma = 0.6
	}
	op(0, models.TreeSep3).Gamma = 0.5
	s.TreeSwitchGroup(c, 1).Gamma = 2
	op(1, models.TreeIdentity).Gamma = 0.4
	op(1, models.TreeSep3).Frozen = true
	s.TreeSwitchGroup(c, 2).Gamma = 0
	for _, o := range models.TreeOps {
		op(3, o).Gamma = 0
	}
	s.ApplyDependency()
	check := func(g *Group, want float64) {
		t.Helper()
		if !near(g.GammaEff, want, 1e-12) {
			t.Errorf("%s: gamma_eff %.15g, want %.15g", g.Name, g.GammaEff, want)
		}
	}
	check(s.TreeSwitchGroup(c, 0), 1)
	check(op(0, models.TreeIdentity), 0.5)
	check(op(0, models.TreeSep3), 1.0/3)
	check(op(0, models.TreeAvg3), 0)
	check(s.TreeSwitchGroup(c, 1), 0.4)
	check(op(1, models.TreeIdentity), 0.2)
	check(op(1, models.TreeSep3), 0)
	check(op(1, models.TreeDil3), 0.24)
	check(s.TreeSwitchGroup(c, 3), 1)
	for _, e := range []int{2, 4, 5} {
		check(s.TreeSwitchGroup(c, e), 0)
		for _, o := range models.TreeOps {
			check(op(e, o), 0)
		}
	}
	check(s.TreeSwitchGroup(c, 6), 1)
	check(op(6, models.TreeMax3), 0.5)
	check(s.TreeSwitchGroup(c, 7), 1.0/3)
	check(op(7, models.TreeSep7), 0.25)
	// Other cells have their own groups: untouched by this cell's table.
	check(s.TreeSwitchGroup("stage2.block0", 1), 1.0/3)
	check(s.TreeOpGroup("stage2.block0", 4, models.TreeSep3), 0.25)
}

// Over random gamma tables (zeros and frozen groups included): gamma_eff
// never exceeds the group's own gamma nor its parent's (an op's switch, a
// switch's parent edge's best op), a frozen group is 0, and a pruned parent
// edge (switch or every op at 0) prunes every group below it. Update and
// freezeBelow apply the same rule.
func TestTreeDependencyProperties(t *testing.T) {
	cfg := tinyTreeConfig()
	cfg.BlocksPerStage, cfg.SharePerStage = 2, true
	_, net, s := tinyTreeSpace(t, cfg, 1)
	rng := rand.New(rand.NewPCG(1, 2))
	const tol = 1 + 1e-12
	var prunedParents int
	for trial := range 300 {
		for _, g := range s.Groups {
			g.Gamma = math.Exp(rng.NormFloat64() * 2)
			if rng.IntN(5) == 0 {
				g.Gamma = 0
			}
			g.Frozen = rng.IntN(10) == 0
		}
		if trial%2 == 0 {
			s.ApplyDependency()
		} else {
			// Update recomputes gamma from a and H, then the rule.
			h := map[bayes.Var]float64{}
			for _, p := range net.Params {
				if p.Kind == nn.ArchVar {
					p.Data[0] = float32(rng.NormFloat64())
					h[bayes.Var{P: p}] = rng.Float64()
				}
			}
			for _, g := range s.Groups {
				g.GammaEff = -1
			}
			if _, err := bayes.Update(s, h, 1e-8); err != nil {
				t.Fatal(err)
			}
		}
		for _, cell := range s.CellTypes() {
			alive := make([]float64, models.TreeEdges)
			for e := range models.TreeEdges {
				sw := s.TreeSwitchGroup(cell, e)
				parent, parentAlive := models.TreeEdgeParent(e), math.Inf(1)
				if parent >= 0 {
					parentAlive = alive[parent]
				}
				if !(sw.GammaEff >= 0) || sw.GammaEff > sw.Gamma*tol || sw.GammaEff > parentAlive*tol || (sw.Frozen && sw.GammaEff != 0) {
					t.Fatalf("trial %d %s: gamma_eff %g, own gamma %g (frozen %v), parent edge alive %g", trial, sw.Name, sw.GammaEff, sw.Gamma, sw.Frozen, parentAlive)
				}
				if parentAlive == 0 {
					prunedParents++
				}
				for _, o := range s.Ops {
					g := s.TreeOpGroup(cell, e, o)
					if !(g.GammaEff >= 0) || g.GammaEff > g.Gamma*tol || g.GammaEff > sw.GammaEff*tol || (g.Frozen && g.GammaEff != 0) {
						t.Fatalf("trial %d %s: gamma_eff %g, own gamma %g (frozen %v), switch %g", trial, g.Name, g.GammaEff, g.Gamma, g.Frozen, sw.GammaEff)
					}
					if (parentAlive == 0 || sw.Gamma == 0 || sw.Frozen) && g.GammaEff != 0 {
						t.Fatalf("trial %d %s: alive (%g) under a pruned switch or parent edge", trial, g.Name, g.GammaEff)
					}
					alive[e] = math.Max(alive[e], g.GammaEff)
				}
				if parent >= 0 && alive[e] > alive[parent]*tol {
					t.Fatalf("trial %d %s edge %d: best op %g above its parent edge's %g", trial, cell, e, alive[e], alive[parent])
				}
			}
		}
	}
	if prunedParents < 100 {
		t.Errorf("only %d edges under a pruned parent: the tables do not exercise the rule", prunedParents)
	}
	// Dynamic pruning uses the rule: freezing a top switch freezes its leaves.
	setAllGamma(s, 1)
	for _, g := range s.Groups {
		g.Frozen = false
	}
	s.TreeSwitchGroup("stage2", 9).Gamma = 1e-3
	s.ApplyDependency()
	if n := s.freezeBelow(1e-2); n != 1+2*(1+len(s.Ops))+len(s.Ops) {
		t.Errorf("froze %d groups, want the top edge's switch and ops and both leaves' (%d)", n, 1+2*(1+len(s.Ops))+len(s.Ops))
	}
	for _, e := range []int{9, 10, 11} {
		if g := s.TreeSwitchGroup("stage2", e); !g.Frozen || g.Vars[1].Value() != 0 {
			t.Errorf("%s: frozen %v, value %g", g.Name, g.Frozen, g.Vars[1].Value())
		}
	}
}

// A hand-made table gives the expected cells: several ops on an edge, a
// top edge with no kept leaf dropped (with its reason), dead cells, the
// threshold strict, relative thresholds per cell.
func TestDeriveTreeExample(t *testing.T) {
	cfg := tinyTreeConfig()
	_, _, s := tinyTreeSpace(t, cfg, 1)
	setAllGamma(s, 0)
	const c = "stage1.block0"
	for _, e := range []int{0, 1, 3} {
		s.TreeSwitchGroup(c, e).Gamma = 1
	}
	s.TreeOpGroup(c, 0, models.TreeIdentity).Gamma = 1 // 0.5
	s.TreeOpGroup(c, 0, models.TreeSep3).Gamma = 1     // 0.5
	s.TreeOpGroup(c, 1, models.TreeMax3).Gamma = 1     // switch 1/3, op 0.25
	s.TreeOpGroup(c, 1, models.TreeAvg3).Gamma = 0.01  // 1/103
	s.TreeOpGroup(c, 3, models.TreeSep5).Gamma = 1     // 0.5, but no leaf below
	s.ApplyDependency()
	// As an update leaves them (they are shown, not used).
	sw0 := s.TreeSwitchGroup(c, 0)
	sw0.H, sw0.C = []float64{0.02}, []float64{0.25}
	want := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
	want.Edges[0] = []string{models.TreeIdentity, models.TreeSep3}
	want.Edges[1] = []string{models.TreeMax3}
	dead := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
	for _, dc := range []DeriveConfig{{Threshold: 0.05}, {Threshold: 0.4, Relative: true}} {
		d, err := s.DeriveTree(dc)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(d.Names, s.CellTypes()) || !reflect.DeepEqual(d.Cells, []models.TreeCell{want, dead, dead}) {
			t.Fatalf("%+v: derived %v %v, want %v then two dead cells", dc, d.Names, d.Cells, want.Edges)
		}
		cd := d.Table.Cells[0]
		if cd.Cell != c || !slices.Equal(cd.Blocks, []string{c}) || cd.Dead || cd.KeptEdges != 2 || cd.KeptOps != 3 ||
			cd.CandidateOps != 12*7 || len(cd.Edges) != 12 {
			t.Errorf("%+v: decisions %+v", dc, cd)
		}
		if dc.Relative && !near(cd.Tau, 0.2, 1e-15) {
			t.Errorf("relative tau %g, want 0.4 x 0.5", cd.Tau)
		}
		if e := cd.Edges[3]; e.Kept || !strings.Contains(e.Reason, "no leaf") || e.Ops[2].Kept || e.Ops[2].GammaEff != 0.5 {
			t.Errorf("top edge 3 with no kept leaf: %+v", e)
		}
		if e := cd.Edges[1]; !e.Kept || e.Parent != 0 || e.Name != "h0.t0.l0" || !e.Ops[5].Kept || e.Ops[6].Kept || !e.Switch.Kept {
			t.Errorf("edge 1: %+v", e)
		}
		if !d.Table.Cells[1].Dead || d.Table.Cells[1].KeptEdges != 0 {
			t.Errorf("stage2: %+v", d.Table.Cells[1])
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{`"gamma_eff"`, `"omega"`, `"weights"`, `"tau"`, `"curvature":[0.02]`, `"posterior_var":[0.25]`, `"lambda"`, `"reason"`} {
			if !strings.Contains(string(b), key) {
				t.Errorf("decision table lacks %s", key)
			}
		}
		var back TreeDerivation
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.Cells, d.Cells) {
			t.Errorf("the derivation does not round-trip through JSON: %v", err)
		}
		g, err := DerivedTreeNetwork(cfg, d.Cells...)
		if err != nil {
			t.Fatal(err)
		}
		if g.Node("stage1.block0.cell.h0.t0.l0.max_pool_3x3.pool") == nil || g.Node("stage1.block0.cell.h0.t0.sep_3x3.dw") == nil ||
			g.Node("stage1.block0.cell.h0.t1.sep_5x5.dw") != nil || g.Node("stage2.block0.conv1") != nil {
			t.Errorf("derived network: kept ops missing, or dropped ones present")
		}
	}
	// A stricter relative threshold (tau 0.3) drops the leaf, so its parent too: the cell dies.
	d, err := s.DeriveTree(DeriveConfig{Threshold: 0.6, Relative: true})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Cells[0].Dead() || !d.Table.Cells[0].Dead || !strings.Contains(d.Table.Cells[0].Edges[0].Reason, "no leaf") {
		t.Errorf("tau 0.3: cell %v, decisions %+v", d.Cells[0], d.Table.Cells[0].Edges[0])
	}
	if _, err := DerivedTreeNetwork(cfg, d.Cells[:2]...); err == nil || !strings.Contains(err.Error(), "2 cells, want 3") {
		t.Errorf("too few cells: %v", err)
	}
}

// Over random gamma tables and thresholds, the derived cells keep only ops
// and switches above tau, are connected (Pruned leaves them unchanged),
// the table counts them, and the derived network builds, compiles and
// trains a step with a finite loss (per-block cells and cells per stage).
func TestDeriveTreeRandomTables(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 34))
	var lossFn nn.SoftmaxCrossEntropy
	labels := []int32{0, 2}
	var dead, kept int
	for _, share := range []bool{false, true} {
		cfg := tinyTreeConfig()
		cfg.SharePerStage = share
		if share {
			cfg.BlocksPerStage = 2
		}
		_, _, s := tinyTreeSpace(t, cfg, 1)
		base := cfg
		base.Input = [3]int{1, 4, 4} // the derived network only needs to be valid: small and fast
		for trial := range 150 {
			zeroP := rng.Float64()
			for _, g := range s.Groups {
				g.Gamma = math.Exp(rng.NormFloat64() * 3)
				if rng.Float64() < zeroP {
					g.Gamma = 0
				}
			}
			s.ApplyDependency()
			dc := DeriveConfig{Threshold: math.Exp(rng.NormFloat64() * 3)}
			if rng.IntN(2) == 0 {
				dc = DeriveConfig{Threshold: rng.Float64() * 0.99, Relative: true}
			}
			d, err := s.DeriveTree(dc)
			if err != nil {
				t.Fatal(err)
			}
			for ci, cell := range d.Cells {
				cd := d.Table.Cells[ci]
				if !slices.EqualFunc(cell.Pruned().Edges, cell.Edges, slices.Equal) {
					t.Fatalf("trial %d %s: cell %v is not connected", trial, cd.Cell, cell.Edges)
				}
				ops := 0
				for e, eops := range cell.Edges {
					if len(eops) > 0 && !(s.TreeSwitchGroup(cd.Cell, e).GammaEff > cd.Tau) {
						t.Fatalf("trial %d %s: edge %d kept with switch gamma_eff <= tau %g", trial, cd.Cell, e, cd.Tau)
					}
					for _, o := range eops {
						if g := s.TreeOpGroup(cd.Cell, e, o); !(g.GammaEff > cd.Tau) {
							t.Fatalf("trial %d: kept %s with gamma_eff %g <= tau %g", trial, g.Name, g.GammaEff, cd.Tau)
						}
					}
					if cd.Edges[e].Kept != (len(eops) > 0) {
						t.Fatalf("trial %d %s edge %d: table says kept %v, cell has %v", trial, cd.Cell, e, cd.Edges[e].Kept, eops)
					}
					ops += len(eops)
				}
				if cd.KeptOps != ops || cd.Dead != cell.Dead() {
					t.Fatalf("trial %d %s: table counts %d ops (dead %v), cell has %d", trial, cd.Cell, cd.KeptOps, cd.Dead, ops)
				}
				if cell.Dead() {
					dead++
				} else {
					kept++
				}
			}
			g, err := DerivedTreeNetwork(base, d.Cells...)
			if err != nil {
				t.Fatalf("trial %d: %v", trial, err)
			}
			net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), len(labels))
			if err != nil {
				t.Fatalf("trial %d: %v", trial, err)
			}
			if err := models.InitParams(net, g, uint64(trial)); err != nil {
				t.Fatal(err)
			}
			for i := range net.Input.Data {
				net.Input.Data[i] = float32(rng.NormFloat64())
			}
			opt, err := nn.NewSGD(net.Params, nn.SGDConfig{})
			if err != nil {
				t.Fatal(err)
			}
			net.ZeroGrad()
			net.Forward(true)
			l, _, err := lossFn.Forward(net.Output, labels)
			if err != nil || math.IsNaN(l) || math.IsInf(l, 0) {
				t.Fatalf("trial %d: loss %g, %v", trial, l, err)
			}
			net.Backward()
			opt.Step(0.05)
		}
	}
	t.Logf("random tables: %d live and %d dead cells", kept, dead)
	if dead == 0 || kept == 0 {
		t.Errorf("the tables never gave a dead cell or never a live one (%d live, %d dead)", kept, dead)
	}
}

// Pruning a tree supernet with the pruner computes exactly what the whole
// supernet computes with the frozen variables at zero, in evaluation and
// in training mode, and skips the branches below a frozen top switch.
func TestTreePruningIsExact(t *testing.T) {
	g, net, s := tinyTreeSpace(t, tinyTreeConfig(), 2)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, gr := range s.Groups {
		for _, v := range gr.Vars {
			v.Set(0.1 + 0.3*rng.Float64())
		}
		gr.Gamma = rng.Float64()
	}
	// A pruned top switch with strong leaves below: the rule must freeze them.
	s.TreeSwitchGroup("stage2.block0", 6).Gamma = 1e-3
	for _, e := range []int{7, 8} {
		s.TreeSwitchGroup("stage2.block0", e).Gamma = 10
	}
	s.ApplyDependency()
	for i := range net.Input.Data {
		net.Input.Data[i] = float32(rng.NormFloat64())
	}
	n := s.freezeBelow(0.2)
	for _, e := range []int{6, 7, 8} {
		if !s.TreeSwitchGroup("stage2.block0", e).Frozen {
			t.Fatalf("edge %d below the pruned top switch is not frozen", e)
		}
	}
	run := func(train bool) []float32 {
		net.Forward(train)
		return slices.Clone(net.Output.Data)
	}
	same := func(mode string, pruned, whole []float32) {
		t.Helper()
		for i, v := range pruned {
			if v != whole[i] {
				t.Fatalf("%s: logit %d: %g pruned, %g whole", mode, i, v, whole[i])
			}
		}
	}
	// Evaluation first: training mode moves the running statistics.
	wantEval := run(false)
	pr := newPruner(g, net)
	pr.apply(s)
	if len(net.Layers) >= len(pr.all) {
		t.Fatalf("pruning %d groups left %d of %d layers", n, len(net.Layers), len(pr.all))
	}
	for _, name := range []string{"stage2.block0.cell.h1.t0.l1.sep_5x5.dw", "stage2.block0.cell.h1.t0.mix"} {
		for i, nd := range g.Nodes {
			if nd.Name == name && slices.Contains(net.Layers, pr.all[i]) {
				t.Errorf("%s still runs below a frozen switch", name)
			}
		}
	}
	same("eval", run(false), wantEval)
	active := len(net.Layers)
	gotTrain := run(true)
	net.Layers = pr.all
	same("train", gotTrain, run(true))
	t.Logf("%d frozen groups: %d of %d layers run", n, active, len(pr.all))
}
