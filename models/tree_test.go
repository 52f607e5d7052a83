package models

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"bayesnas/nn"
)

// tinyTree is a supernet of one block per stage on 1x8x8 (widths 6, 8, 10).
func tinyTree() PyramidTreeConfig {
	return PyramidTreeConfig{PyramidNetConfig: PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
		StemChannels: 4, Input: [3]int{1, 8, 8}, Classes: 3}, Search: true}
}

func TestTreeEdgeParents(t *testing.T) {
	want := []int{-1, 0, 0, -1, 3, 3, -1, 6, 6, -1, 9, 9}
	for i, p := range want {
		if got := TreeEdgeParent(i); got != p {
			t.Errorf("parent of edge %d (%s) = %d, want %d", i, TreeEdgeName(i), got, p)
		}
		if p >= 0 && !strings.HasPrefix(TreeEdgeName(i), TreeEdgeName(p)+".") {
			t.Errorf("edge %d %q is not named below its parent %q", i, TreeEdgeName(i), TreeEdgeName(p))
		}
	}
}

func TestTreeSupernetStructure(t *testing.T) {
	cfg := tinyTree()
	g, space, err := PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(space.Cells) != 3 || !slices.Equal(space.Ops, TreeOps) {
		t.Fatalf("%d cells, ops %v; want 3 cells over %v", len(space.Cells), space.Ops, TreeOps)
	}
	specs, err := g.ParamSpecs()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]nn.ParamKind{}
	arch := 0
	for _, s := range specs {
		kinds[s.Name] = s.Kind
		if s.Kind == nn.ArchVar {
			arch++
		}
	}
	if want := 3 * TreeEdges * (len(TreeOps) + 1); arch != want {
		t.Errorf("%d architecture variables, want %d (3 cells x 12 edges x (7 ops + switch))", arch, want)
	}
	for bi, c := range space.Cells {
		if wantBlock := fmt.Sprintf("stage%d.block0", bi+1); c.Block != wantBlock || c.Cell != wantBlock {
			t.Errorf("cell %d: block %q cell %q, want %q for both (a cell per block)", bi, c.Block, c.Cell, wantBlock)
		}
		if len(c.Edges) != TreeEdges {
			t.Fatalf("%s: %d edges", c.Block, len(c.Edges))
		}
		for i, e := range c.Edges {
			if e.Index != i || e.Parent != TreeEdgeParent(i) || e.Name != TreeEdgeName(i) {
				t.Errorf("%s edge %d: %+v", c.Block, i, e)
			}
			if kinds[e.Switch] != nn.ArchVar || len(e.OpWeights) != len(TreeOps) {
				t.Fatalf("%s edge %d: switch %q kind %v, %d op weights", c.Block, i, e.Switch, kinds[e.Switch], len(e.OpWeights))
			}
			for _, w := range e.OpWeights {
				if kinds[w] != nn.ArchVar {
					t.Errorf("%s edge %d: op weight %q is not an architecture variable", c.Block, i, w)
				}
			}
			sw := g.Node(strings.TrimSuffix(e.Switch, ".w0"))
			if sw == nil || len(sw.Inputs) != 1 || sw.Inputs[0] != e.Node {
				t.Fatalf("%s edge %d: the switch does not scale the mix's output: %+v", c.Block, i, sw)
			}
			// Every op of a leaf reads its parent's switched output (the
			// identity op is that output itself).
			mix := g.Node(e.Node)
			if e.Parent >= 0 {
				parent := strings.TrimSuffix(c.Edges[e.Parent].Switch, ".w0")
				if mix.Inputs[0] != parent {
					t.Errorf("%s edge %d: identity op reads %q, want the parent's switch %q", c.Block, i, mix.Inputs[0], parent)
				}
				if bn := g.Node(c.Block + ".cell." + e.Name + "." + TreeSep3 + ".bn"); bn == nil || bn.Inputs[0] != parent {
					t.Errorf("%s edge %d: sep 3x3 does not read the parent edge: %+v", c.Block, i, bn)
				}
			}
		}
	}
	shapes, err := g.InferShapes()
	if err != nil {
		t.Fatal(err)
	}
	// Widths 6, 8, 10 (alpha 6 over 3 blocks); maps 8x8, 4x4, 2x2; the
	// root conv doubles the width, each half has planes channels, shortcuts
	// pool and zero-pad.
	for name, want := range map[string][]int{
		"stage1.block0.cell.root.conv": {12, 8, 8}, "stage1.block0.cell.h1.in": {6, 8, 8},
		"stage1.block0.cell.out": {6, 8, 8}, "stage1.block0.pad": {24, 8, 8}, "stage1.block0.add": {24, 8, 8},
		"stage2.block0.cell.root.conv": {16, 4, 4}, "stage2.block0.cell.h0.t1.l0.mix": {8, 4, 4},
		"stage2.block0.pool": {24, 4, 4}, "stage2.block0.pad": {32, 4, 4}, "stage2.block0.add": {32, 4, 4},
		"stage3.block0.cell.out": {10, 2, 2}, "stage3.block0.pad": {40, 2, 2}, "stage3.block0.add": {40, 2, 2},
		"head.fc": {3},
	} {
		if s := shapes[name]; !slices.Equal(s, want) {
			t.Errorf("%s: shape %v, want %v", name, s, want)
		}
	}
	if n := g.Node("stage2.block0.cell.root.conv"); n.Attrs.Groups != 2 || n.Attrs.Stride != 2 || n.Attrs.Kernel != 3 {
		t.Errorf("root conv of a stride-2 block: %+v", n.Attrs)
	}
	if n := g.Node("stage1.block0.cell.root.shuffle"); n == nil || n.Op != OpShuffle || n.Attrs.Groups != 2 {
		t.Errorf("root channel shuffle: %+v", n)
	}
	if n := g.Node("stage1.block0.cell.h0.t0." + TreeDil3 + ".dw"); n == nil || n.Attrs.Dilation != 2 || n.Attrs.Pad != 2 || n.Attrs.Groups != 6 {
		t.Errorf("dilated depthwise conv: %+v", n)
	}
	if n := g.Node("stage1.block0.cell.h0.t0." + TreeAvg3 + ".pool"); n == nil || n.Attrs.CountIncludePad || n.Attrs.Pad != 1 {
		t.Errorf("avg pool: %+v", n)
	}
	if g.Node("stage1.block0.cell.h0.bn") == nil || g.Node("stage1.block0.cell.h1.bn") == nil {
		t.Errorf("a half has no branch BN")
	}
}

// Sharing a cell per stage names the stage as the cell of its blocks.
func TestTreeSharePerStage(t *testing.T) {
	cfg := tinyTree()
	cfg.BlocksPerStage, cfg.SharePerStage = 2, true
	_, space, err := PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range space.Cells {
		got = append(got, c.Block+"@"+c.Cell)
	}
	want := []string{"stage1.block0@stage1", "stage1.block1@stage1", "stage2.block0@stage2", "stage2.block1@stage2",
		"stage3.block0@stage3", "stage3.block1@stage3"}
	if !slices.Equal(got, want) {
		t.Errorf("cells %v, want %v", got, want)
	}
	// Derived: three cells, one per stage, each used by both blocks.
	cfg.Search = false
	cell := TreeCell{Edges: make([][]string, TreeEdges)}
	cell.Edges[0], cell.Edges[1] = []string{TreeSep5}, []string{TreeMax3}
	cfg.Cells = []TreeCell{cell, cell, cell}
	g, _, err := PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"stage1.block1", "stage3.block0"} {
		if g.Node(b+".cell.h0.t0."+TreeSep5+".pw") == nil || g.Node(b+".cell.h0.t0.l0."+TreeMax3+".pool") == nil {
			t.Errorf("%s does not use its stage's cell", b)
		}
	}
	cfg.Cells = cfg.Cells[:2]
	if _, _, err := PyramidTreeNetwork(cfg); err == nil || !strings.Contains(err.Error(), "one per stage") {
		t.Errorf("2 shared cells: error %v", err)
	}
}

func TestPyramidTreeCIFAR10Counts(t *testing.T) {
	g, space, err := PyramidTreeNetwork(PyramidTreeCIFAR10())
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	if len(space.Cells) != 54 || c.ArchVars != 54*TreeEdges*8 {
		t.Errorf("%d cells, %d architecture variables; want 54 and %d", len(space.Cells), c.ArchVars, 54*TreeEdges*8)
	}
	shapes, _ := g.InferShapes()
	if s := shapes["stage3.block17.add"]; !slices.Equal(s, []int{400, 8, 8}) {
		t.Errorf("last block: shape %v, want [400 8 8] (width 100 x 4 at 8x8, as the published network)", s)
	}
	// A derived network: every edge a 3x3 separable conv.
	cfg := PyramidTreeCIFAR10()
	cfg.Search, cfg.SharePerStage = false, true
	all := TreeCell{Edges: make([][]string, TreeEdges)}
	for i := range all.Edges {
		all.Edges[i] = []string{TreeSep3}
	}
	cfg.Cells = []TreeCell{all, all, all}
	gd, _, err := PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cd, err := gd.Count()
	if err != nil {
		t.Fatal(err)
	}
	if cd.ArchVars != 0 || !(cd.Params < c.Params) || !(cd.MACs < c.MACs) {
		t.Errorf("derived: %d arch vars, %d params, %d MACs; supernet %d params, %d MACs", cd.ArchVars, cd.Params, cd.MACs, c.Params, c.MACs)
	}
	t.Logf("CIFAR-10 supernet: %d nodes, %.3f M params, %.1f M MACs per image", len(g.Nodes), float64(c.Params)/1e6, float64(c.MACs)/1e6)
	t.Logf("CIFAR-10 derived (all sep 3x3): %d nodes, %.3f M params, %.1f M MACs per image", len(gd.Nodes), float64(cd.Params)/1e6, float64(cd.MACs)/1e6)
	d, _, err := PyramidTreeNetwork(PyramidTreeDefault())
	if err != nil {
		t.Fatal(err)
	}
	dc, _ := d.Count()
	t.Logf("default supernet: %d nodes, %.3f M params, %.1f M MACs per image", len(d.Nodes), float64(dc.Params)/1e6, float64(dc.MACs)/1e6)
}

// randomCell draws a cell: each edge zero with probability pZero, else one
// to three distinct ops.
func randomCell(rng *rand.Rand, pZero float64) TreeCell {
	c := TreeCell{Edges: make([][]string, TreeEdges)}
	for i := range c.Edges {
		if rng.Float64() < pZero {
			continue
		}
		perm := rng.Perm(len(TreeOps))
		for _, k := range perm[:1+rng.IntN(3)] {
			c.Edges[i] = append(c.Edges[i], TreeOps[k])
		}
	}
	return c
}

// supernetAt sets the supernet's architecture variables to the derived
// cells: a kept edge's switch 1, others 0; a kept op's weight 1, others 0.
func supernetAt(t *testing.T, net *nn.Network, space *TreeSpace, cells []TreeCell) {
	t.Helper()
	for bi, sc := range space.Cells {
		for i, e := range sc.Edges {
			kept := cells[bi].Edges[i]
			net.Param(e.Switch).Data[0] = b2f(len(kept) > 0)
			for k, op := range space.Ops {
				net.Param(e.OpWeights[k]).Data[0] = b2f(slices.Contains(kept, op))
			}
		}
	}
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// zeroAtZero makes a BN map a zero input to zero (shift and running mean
// 0), so that the constant the supernet adds where a derived network has
// nothing (a dead half's BN, a dead block's bn3/bn4) vanishes.
func zeroAtZero(net *nn.Network, bn string) {
	clear(net.Param(bn + ".bias").Data)
	clear(net.Param(bn + ".running_mean").Data)
}

// THE KEY TEST: a derived network computes what the supernet computes with
// the pruned architecture variables at zero and the kept ones at one, with
// the same weights (copied by name), in eval mode. Where the derived
// network drops a whole half or cell, the supernet adds a BN's output for
// a zero input (a constant); those BNs are set to give zero, which is all
// that differs. In training mode the block's next BN absorbs that constant
// by itself, checked without the adjustment for a dead half.
func TestTreeDerivedMatchesSupernet(t *testing.T) {
	be := cpuBackend(t)
	cfg := tinyTree()
	sup, space, err := PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 3
	snet, err := Compile(sup, be, batch)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	full := func() TreeCell {
		c := TreeCell{Edges: make([][]string, TreeEdges)}
		for i := range c.Edges {
			c.Edges[i] = []string{TreeOps[(i+1)%len(TreeOps)], TreeOps[(i+4)%len(TreeOps)]}
		}
		return c
	}
	deadHalf := full()
	for i := 6; i < 12; i++ {
		deadHalf.Edges[i] = nil
	}
	dead := TreeCell{Edges: make([][]string, TreeEdges)}
	cases := map[string][]TreeCell{
		"every edge two ops":               {full(), full(), full()},
		"half 1 dead in block 2":           {full(), deadHalf, full()},
		"cell of stage 2 dead":             {full(), dead, deadHalf},
		"single ops, identity only leaves": {singleOps(TreeIdentity), singleOps(TreeSep7), singleOps(TreeMax3)},
	}
	for k := range 6 {
		cases[fmt.Sprintf("random %d", k)] = []TreeCell{randomCell(rng, 0.3).Pruned(), randomCell(rng, 0.3).Pruned(), randomCell(rng, 0.5).Pruned()}
	}
	for name, cells := range cases {
		if err := InitParams(snet, sup, 1); err != nil {
			t.Fatal(err)
		}
		for _, p := range snet.Params {
			if p.Kind == nn.ArchVar {
				continue
			}
			for i := range p.Data {
				if p.Kind == nn.Buffer && strings.HasSuffix(p.Name, "running_var") {
					p.Data[i] = 0.5 + rng.Float32()
				} else {
					p.Data[i] += 0.2 * (rng.Float32()*2 - 1)
				}
			}
		}
		supernetAt(t, snet, space, cells)
		dcfg := cfg
		dcfg.Search, dcfg.Cells = false, cells
		dg, _, err := PyramidTreeNetwork(dcfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dnet, err := Compile(dg, be, batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range dnet.Params {
			sp := snet.Param(p.Name)
			if sp == nil || !slices.Equal(sp.Shape, p.Shape) {
				t.Fatalf("%s: derived parameter %s %v has no twin in the supernet (%v)", name, p.Name, p.Shape, sp)
			}
		}
		randomize(rng, snet.Input.Data)
		compare := func(mode string, train bool) {
			for _, p := range dnet.Params {
				copy(p.Data, snet.Param(p.Name).Data)
			}
			copy(dnet.Input.Data, snet.Input.Data)
			snet.Forward(train)
			dnet.Forward(train)
			scale := 0.0
			for _, v := range snet.Output.Data {
				scale = max(scale, math.Abs(float64(v)))
			}
			for i, v := range dnet.Output.Data {
				if d := math.Abs(float64(v - snet.Output.Data[i])); !(d <= 1e-4*(1+scale)) {
					t.Fatalf("%s (%s): output %d: derived %g, supernet %g", name, mode, i, v, snet.Output.Data[i])
				}
			}
		}
		if name == "half 1 dead in block 2" {
			// Training mode first (it moves running statistics): bn3 absorbs
			// the dead half's constant.
			compare("train", true)
		}
		for bi, c := range cells {
			block := space.Cells[bi].Block
			for h := range 2 {
				if (TreeCell{Edges: c.Edges[6*h : 6*h+6]}).Dead() {
					zeroAtZero(snet, fmt.Sprintf("%s.cell.h%d.bn", block, h))
				}
			}
			if c.Dead() {
				zeroAtZero(snet, block+".bn3")
				zeroAtZero(snet, block+".bn4")
			}
		}
		compare("eval", false)
		if name == "every edge two ops" {
			// The comparison can fail: one more pruned leaf changes the supernet.
			before := slices.Clone(snet.Output.Data)
			snet.Param(space.Cells[1].Edges[5].Switch).Data[0] = 0
			snet.Forward(false)
			if slices.Equal(before, snet.Output.Data) {
				t.Errorf("zeroing a leaf switch does not change the supernet's output")
			}
		}
		if name == "cell of stage 2 dead" && dg.Node("stage2.block0.conv1") != nil {
			t.Errorf("a dead cell left its block's residual branch in the graph")
		}
	}
}

func singleOps(op string) TreeCell {
	c := TreeCell{Edges: make([][]string, TreeEdges)}
	for i := range c.Edges {
		c.Edges[i] = []string{op}
	}
	return c
}

// Derivation on random choices always gives a graph that validates,
// compiles, trains a step with finite loss and rebuilds from its record.
func TestTreeRandomDerivations(t *testing.T) {
	be := cpuBackend(t)
	rng := rand.New(rand.NewPCG(11, 12))
	base := tinyTree()
	base.Input = [3]int{1, 4, 4}
	base.Search = false
	labels := []int32{0, 2}
	var lossFn nn.SoftmaxCrossEntropy
	const trials = 300
	for trial := range trials {
		cfg := base
		cfg.SharePerStage = trial%3 == 0
		n := 3
		cfg.Cells = make([]TreeCell, n)
		for i := range cfg.Cells {
			raw := randomCell(rng, rng.Float64())
			p := raw.Pruned()
			if !slices.EqualFunc(p.Pruned().Edges, p.Edges, slices.Equal) {
				t.Fatalf("trial %d: Pruned is not idempotent", trial)
			}
			// An unpruned cell is accepted only when it is already connected.
			if err := raw.check(); (err == nil) != slices.EqualFunc(raw.Edges, p.Edges, slices.Equal) {
				t.Fatalf("trial %d: check(%v) = %v, pruned %v", trial, raw.Edges, err, p.Edges)
			}
			cfg.Cells[i] = p
		}
		g, _, err := PyramidTreeNetwork(cfg)
		if err != nil {
			t.Fatalf("trial %d: %v (cells %v)", trial, err, cfg.Cells)
		}
		if trial%10 == 0 {
			g2, err := Builders["pyramid-tree"](g.Builder.Params)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(g)
			b, _ := json.Marshal(g2)
			if string(a) != string(b) {
				t.Fatalf("trial %d: rebuilding from the builder record gives another graph", trial)
			}
		}
		net, err := Compile(g, be, len(labels))
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		if err := InitParams(net, g, uint64(trial)); err != nil {
			t.Fatal(err)
		}
		randomize(rng, net.Input.Data)
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

func TestPyramidTreeConfigErrors(t *testing.T) {
	derived := func(mod func(c *TreeCell)) func(*PyramidTreeConfig) {
		return func(cfg *PyramidTreeConfig) {
			c := singleOps(TreeSep3)
			mod(&c)
			cfg.Search, cfg.Cells = false, []TreeCell{singleOps(TreeSep3), c, singleOps(TreeSep3)}
		}
	}
	for name, c := range map[string]struct {
		mod  func(*PyramidTreeConfig)
		want string
	}{
		"unknown op":        {func(c *PyramidTreeConfig) { c.Ops = []string{"conv_9x9"} }, "conv_9x9"},
		"search with cells": {func(c *PyramidTreeConfig) { c.Cells = []TreeCell{singleOps(TreeSep3)} }, "cells must be empty"},
		"cell count":        {func(c *PyramidTreeConfig) { c.Search, c.Cells = false, []TreeCell{singleOps(TreeSep3)} }, "1 cells, want 3 (one per block)"},
		"edge count":        {derived(func(c *TreeCell) { c.Edges = c.Edges[:11] }), "cells[1]: 11 edges, want 12"},
		"unknown edge op":   {derived(func(c *TreeCell) { c.Edges[4] = []string{"sep_9x9"} }), `cells[1]: edge 4 (h0.t1.l0): unknown op "sep_9x9"`},
		"op twice":          {derived(func(c *TreeCell) { c.Edges[2] = []string{TreeMax3, TreeMax3} }), "appears twice"},
		"orphan leaf":       {derived(func(c *TreeCell) { c.Edges[6] = nil }), "edge 7 (h1.t0.l0) has ops but its parent edge 6 (h1.t0) is zero"},
		"unused top edge":   {derived(func(c *TreeCell) { c.Edges[10], c.Edges[11] = nil, nil }), "edge 9 (h1.t1) has ops but both its leaf edges are zero"},
		"width":             {func(c *PyramidTreeConfig) { c.StemChannels, c.Alpha = 1, 0 }, "width 0"},
	} {
		cfg := tinyTree()
		c.mod(&cfg)
		_, _, err := PyramidTreeNetwork(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
	if _, err := Builders["pyramid-tree"](json.RawMessage(`{"share_per_stag": true}`)); err == nil || !strings.Contains(err.Error(), "share_per_stag") {
		t.Errorf("unknown field: error %v", err)
	}
	if _, err := Builders["pyramid-tree"](json.RawMessage(`{"preset": "imagenet"}`)); err == nil || !strings.Contains(err.Error(), "imagenet") {
		t.Errorf("unknown preset: error %v", err)
	}
	g, err := Builders["pyramid-tree"](json.RawMessage(`{"preset": "cifar10", "blocks_per_stage": 2}`))
	if err != nil || g.Input.Shape[0] != 3 || g.Node("stage3.block1.cell.out") == nil || g.Node("stage3.block2.add") != nil {
		t.Errorf("cifar10 preset with 2 blocks per stage: %v", err)
	}
}

// BenchmarkTrainStepPyramidTreeDefault times one SGD training step of the
// default tree-cell supernet at batch 64 (weights and architecture
// variables both updated, as in a one-shot search step).
func BenchmarkTrainStepPyramidTreeDefault(b *testing.B) {
	g, _, err := PyramidTreeNetwork(PyramidTreeDefault())
	if err != nil {
		b.Fatal(err)
	}
	benchTrainStep(b, g, 64)
}

// The default tree supernet with a stride-2 stem (maps 14, 7, 4).
func BenchmarkTrainStepPyramidTreeStem2(b *testing.B) {
	cfg := PyramidTreeDefault()
	cfg.StemStride = 2
	g, _, err := PyramidTreeNetwork(cfg)
	if err != nil {
		b.Fatal(err)
	}
	benchTrainStep(b, g, 64)
}
