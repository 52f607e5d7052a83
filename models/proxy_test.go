package models

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"bayesnas/nn"
)

// tinyProxy is a 3-cell supernet (normal, reduction, reduction) on 1x8x8.
func tinyProxy() ProxyConfig {
	return ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Channels: 2, Cells: 3, Nodes: 4,
		StemMultiplier: 1, StemStride: 1, Search: true}
}

func TestProxySupernetStructure(t *testing.T) {
	g, space, err := ProxyNetwork(tinyProxy())
	if err != nil {
		t.Fatal(err)
	}
	if len(space.Cells) != 3 || space.Cells[0].Reduction || !space.Cells[1].Reduction || !space.Cells[2].Reduction {
		t.Fatalf("cells %+v, want normal, reduction, reduction", space.Cells)
	}
	specs, err := g.ParamSpecs()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]nn.ParamKind{}
	for _, s := range specs {
		kinds[s.Name] = s.Kind
	}
	arch := 0
	for _, s := range specs {
		if s.Kind == nn.ArchVar {
			arch++
		}
	}
	if want := 3 * 14 * (7 + 1); arch != want {
		t.Errorf("%d architecture variables, want %d (3 cells x 14 edges x (7 ops + switch))", arch, want)
	}
	shapes, _ := g.InferShapes()
	for _, c := range space.Cells {
		if len(c.Edges) != 14 {
			t.Fatalf("%s: %d edges, want 14", c.Name, len(c.Edges))
		}
		for _, e := range c.Edges {
			if kinds[e.Switch] != nn.ArchVar || len(e.OpWeights) != 7 {
				t.Fatalf("%s edge %d->%d: switch %q kind %v, %d op weights", c.Name, e.From, e.To, e.Switch, kinds[e.Switch], len(e.OpWeights))
			}
			for _, w := range e.OpWeights {
				if kinds[w] != nn.ArchVar {
					t.Fatalf("%s: op weight %q is not an architecture variable", c.Name, w)
				}
			}
			// The switch multiplies the edge output: its wsum reads the mix.
			sw := g.Node(strings.TrimSuffix(e.Switch, ".w0"))
			if sw == nil || len(sw.Inputs) != 1 || sw.Inputs[0] != e.Node {
				t.Fatalf("%s: switch node of %s does not read the mix: %+v", c.Name, e.Node, sw)
			}
		}
	}
	// Resolution: 8x8 in the normal cell, 4x4 and 2x2 after the reductions;
	// width doubles at each reduction, the output concatenates 4 nodes.
	for name, want := range map[string][]int{"cell0.out": {8, 8, 8}, "cell1.out": {16, 4, 4}, "cell2.out": {32, 2, 2}, "head.fc": {3}} {
		if s := shapes[name]; len(s) != len(want) || !slices.Equal(s, want) {
			t.Errorf("%s: shape %v, want %v", name, s, want)
		}
	}
	// Reduction cells: stride 2 on edges from the cell inputs only.
	for name, want := range map[string][]int{"cell1.e0_2.mix": {4, 4, 4}, "cell1.e2_3.mix": {4, 4, 4}, "cell1.e1_2.skip_connect.bn": {4, 4, 4}} {
		if s := shapes[name]; !slices.Equal(s, want) {
			t.Errorf("%s: shape %v, want %v", name, s, want)
		}
	}
	// Sep conv is ReLU-dw-pw-BN twice; dil conv ReLU-dw(dilation 2)-pw-BN.
	if n := g.Node("cell0.e0_2.sep_conv_5x5.b.dw"); n == nil || n.Attrs.Kernel != 5 || n.Attrs.Groups != 2 || n.Attrs.Pad != 2 {
		t.Errorf("sep 5x5 second depthwise conv: %+v", n)
	}
	if n := g.Node("cell0.e0_2.dil_conv_5x5.dw"); n == nil || n.Attrs.Dilation != 2 || n.Attrs.Pad != 4 {
		t.Errorf("dil 5x5 depthwise conv: %+v", n)
	}
	if n := g.Node("cell2.pre0.conv"); n == nil || n.Attrs.Stride != 2 {
		t.Errorf("cell after a reduction must reduce its s0 input: %+v", n)
	}
}

// A tiny supernet compiles and one SGD step on a fixed batch lowers the loss.
func TestProxySupernetTrainsAStep(t *testing.T) {
	g, _, err := ProxyNetwork(tinyProxy())
	if err != nil {
		t.Fatal(err)
	}
	net, err := Compile(g, nn.NewCPU(nn.DefaultGemm(), 2), 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	for i := range net.Input.Data {
		net.Input.Data[i] = float32(math.Sin(float64(i) * 0.37))
	}
	labels := []int32{0, 1, 2, 1}
	opt, err := nn.NewSGD(net.Params, nn.SGDConfig{})
	if err != nil {
		t.Fatal(err)
	}
	loss := nn.SoftmaxCrossEntropy{}
	var first, last float64
	for step := 0; step < 3; step++ {
		net.ZeroGrad()
		net.Forward(true)
		l, _, err := loss.Forward(net.Output, labels)
		if err != nil {
			t.Fatal(err)
		}
		if math.IsNaN(l) {
			t.Fatal("loss is NaN")
		}
		if step == 0 {
			first = l
		}
		last = l
		net.Backward()
		opt.Step(0.05)
	}
	if !(last < first) {
		t.Errorf("loss %g after 2 steps, %g before: training does not reduce it", last, first)
	}
	sw := net.Param("cell0.e0_2.switch.w0")
	if sw == nil || sw.Grad[0] == 0 {
		t.Errorf("switch of cell0 edge 0->2 has no gradient")
	}
}

func TestProxyDerivedNetwork(t *testing.T) {
	cfg := tinyProxy()
	cfg.Search = false
	cfg.Normal = []ProxyEdge{{From: 0, To: 2, Ops: []string{ProxySep3}}, {From: 1, To: 2, Ops: []string{ProxySkip, ProxyMax3}},
		{From: 2, To: 4, Ops: []string{ProxyDil5}}}
	cfg.Reduce = []ProxyEdge{{From: 1, To: 3, Ops: []string{ProxyAvg3}}}
	g, space, err := ProxyNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if space != nil {
		t.Errorf("derived network returned a search space")
	}
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	if c.ArchVars != 0 {
		t.Errorf("derived network has %d architecture variables", c.ArchVars)
	}
	shapes, _ := g.InferShapes()
	// Normal cell keeps nodes 2 and 4 (2 x 2 channels); reductions keep node 3 only (4, then 8 channels).
	for name, want := range map[string][]int{"cell0.out": {4, 8, 8}, "cell1.e1_3.avg_pool_3x3.pool": {4, 4, 4}, "cell2.e1_3.avg_pool_3x3.pool": {8, 2, 2}, "head.fc": {3}} {
		if s := shapes[name]; !slices.Equal(s, want) {
			t.Errorf("%s: shape %v, want %v", name, s, want)
		}
	}
	if g.Node("cell1.e1_3.avg_pool_3x3.bn") != nil {
		t.Errorf("derived network has the supernet's BN after a pool")
	}
	// The graph round-trips through its builder record.
	g2, err := Builders["proxy"](g.Builder.Params)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(g)
	b, _ := json.Marshal(g2)
	if string(a) != string(b) {
		t.Errorf("rebuilding from the builder record gives another graph")
	}
}

func TestProxyConfigErrors(t *testing.T) {
	for name, c := range map[string]struct {
		mod  func(*ProxyConfig)
		want string
	}{
		"cells":      {func(c *ProxyConfig) { c.Cells = 0 }, "cells"},
		"unknown op": {func(c *ProxyConfig) { c.Ops = []string{"conv_9x9"} }, "conv_9x9"},
		"search with cells": {func(c *ProxyConfig) { c.Normal = []ProxyEdge{{From: 0, To: 2, Ops: []string{ProxySkip}}} },
			"normal and reduce must be empty"},
		"dead source": {func(c *ProxyConfig) {
			c.Search = false
			c.Normal = []ProxyEdge{{From: 3, To: 4, Ops: []string{ProxySkip}}}
			c.Reduce = []ProxyEdge{{From: 0, To: 2, Ops: []string{ProxySkip}}}
		}, "normal cell: edge 0 (3->4) leaves node 3"},
		"empty cell": {func(c *ProxyConfig) {
			c.Search = false
			c.Normal = []ProxyEdge{{From: 0, To: 2, Ops: []string{ProxySkip}}}
		}, "reduce cell: no intermediate node"},
		"bad edge": {func(c *ProxyConfig) {
			c.Search = false
			c.Normal = []ProxyEdge{{From: 2, To: 2, Ops: []string{ProxySkip}}}
		}, "want 0 <= from < to"},
	} {
		cfg := tinyProxy()
		c.mod(&cfg)
		_, _, err := ProxyNetwork(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
	if _, err := Builders["proxy"](json.RawMessage(`{"cels": 3}`)); err == nil || !strings.Contains(err.Error(), "cels") {
		t.Errorf("unknown field: error %v", err)
	}
}

func TestProxyDefaultSupernetCounts(t *testing.T) {
	g, space, err := ProxyNetwork(ProxySupernetDefault())
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	if c.ArchVars != int64(len(space.Cells)*14*8) {
		t.Errorf("%d architecture variables, want %d", c.ArchVars, len(space.Cells)*14*8)
	}
	t.Logf("default supernet: %d nodes, %d params, %.1f M MACs per image", len(g.Nodes), c.Params, float64(c.MACs)/1e6)
}
