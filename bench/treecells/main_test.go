package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/models"
)

// The baselines keep the derived network's backbone and set every edge to
// one op; a supernet or another builder's graph is refused.
func TestBaselines(t *testing.T) {
	cfg := models.PyramidTreeConfig{PyramidNetConfig: models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
		StemChannels: 4, Input: [3]int{1, 8, 8}, Classes: 3}}
	for i := 0; i < 3; i++ {
		c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
		c.Edges[0] = []string{models.TreeSep5}
		c.Edges[1] = []string{models.TreeMax3}
		cfg.Cells = append(cfg.Cells, c)
	}
	g, _, err := models.PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arch := filepath.Join(dir, "arch.json")
	if err := g.WriteGraph(arch); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := run(arch, out); err != nil {
		t.Fatal(err)
	}
	count := func(name string) int64 {
		g, err := models.ReadGraph(filepath.Join(out, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := g.Count()
		if err != nil {
			t.Fatal(err)
		}
		if g.Input.Shape[1] != 8 {
			t.Errorf("%s: input %v, want the derived network's", name, g.Input.Shape)
		}
		return int64(c.Params)
	}
	d, id, sep := count("derived"), count("identity"), count("sep3")
	if !(id < sep) || d == sep {
		t.Errorf("parameters: derived %d, identity %d, sep3 %d", d, id, sep)
	}
	sup := cfg
	sup.Search, sup.Cells = true, nil
	sg, _, err := models.PyramidTreeNetwork(sup)
	if err != nil {
		t.Fatal(err)
	}
	if err := sg.WriteGraph(arch); err != nil {
		t.Fatal(err)
	}
	if err := run(arch, out); err == nil || !strings.Contains(err.Error(), "derived") {
		t.Errorf("supernet: err = %v", err)
	}
	os.Remove(arch)
	if err := run(arch, out); err == nil {
		t.Error("missing file: no error")
	}
}
