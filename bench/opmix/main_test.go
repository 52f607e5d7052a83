package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/models"
)

func write(t *testing.T, g *models.Graph) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "arch.json")
	if err := g.WriteGraph(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// A proxy network counts its normal cell once per normal cell of the stack
// and its reduce cell once per reduction cell; a skip on a stride-2 edge is
// free by name only.
func TestProxy(t *testing.T) {
	cfg := models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Channels: 4, Cells: 3, Nodes: 2,
		StemMultiplier: 1, StemStride: 1,
		Normal: []models.ProxyEdge{
			{From: 0, To: 2, Ops: []string{models.ProxySkip, models.ProxySep3}},
			{From: 1, To: 2, Ops: []string{models.ProxyMax3}},
			{From: 2, To: 3, Ops: []string{models.ProxyAvg3, models.ProxySkip}},
		},
		Reduce: []models.ProxyEdge{
			{From: 0, To: 2, Ops: []string{models.ProxySkip}},
			{From: 2, To: 3, Ops: []string{models.ProxyDil3}},
		},
	}
	// 3 cells: reductions at 1 and 2, so one normal cell and two reduce cells.
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := read(write(t, g))
	if err != nil {
		t.Fatal(err)
	}
	// normal: 3 edges, 5 ops (4 free), 2 free edges; reduce x2: 2 edges, 2 ops
	// each, the strided skip free by name only.
	if m.edges != 7 || m.ops != 9 {
		t.Errorf("edges %d ops %d, want 7 and 9", m.edges, m.ops)
	}
	if m.freeOps != 4 || m.freeOpsNm != 6 {
		t.Errorf("free ops %d (by name %d), want 4 (6)", m.freeOps, m.freeOpsNm)
	}
	if m.freeEdges != 2 || m.freeEdgesNm != 4 {
		t.Errorf("free edges %d (by name %d), want 2 (4)", m.freeEdges, m.freeEdgesNm)
	}
	var out bytes.Buffer
	m.print(&out, "x")
	if !strings.Contains(out.String(), "9 live, 4 parameter-free (44.4 %)") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestTree(t *testing.T) {
	cfg := models.PyramidTreeConfig{PyramidNetConfig: models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
		StemChannels: 4, Input: [3]int{1, 8, 8}, Classes: 3}}
	for i := 0; i < 3; i++ {
		c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
		c.Edges[0] = []string{models.TreeSep5, models.TreeIdentity}
		c.Edges[1] = []string{models.TreeMax3}
		cfg.Cells = append(cfg.Cells, c)
	}
	g, _, err := models.PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := read(write(t, g))
	if err != nil {
		t.Fatal(err)
	}
	if m.edges != 6 || m.ops != 9 || m.freeOps != 6 || m.freeEdges != 3 || m.freeEdgesNm != 3 {
		t.Errorf("got %+v", *m)
	}
}

// A supernet is refused.
func TestSupernet(t *testing.T) {
	cfg := models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Channels: 4, Cells: 3, Nodes: 2,
		StemMultiplier: 1, StemStride: 1, Search: true}
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := read(write(t, g)); err == nil || !strings.Contains(err.Error(), "supernet") {
		t.Errorf("err %v, want a supernet refusal", err)
	}
}
