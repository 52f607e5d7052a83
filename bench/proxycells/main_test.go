package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"bayesnas/models"
)

// tinyConfig is a derived network small enough to build thousands of times.
func tinyConfig(normal, reduce []models.ProxyEdge) models.ProxyConfig {
	return models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Channels: 2, Cells: 3, Nodes: 4,
		StemMultiplier: 3, StemStride: 1, Normal: normal, Reduce: reduce}
}

func e(from, to int, ops ...string) models.ProxyEdge {
	return models.ProxyEdge{From: from, To: to, Ops: ops}
}

// bayesCell is shaped like a BayesNAS derivation: several ops per edge, a
// variable number of in-edges per node, node 4 dropped.
var bayesNormal = []models.ProxyEdge{
	e(0, 2, models.ProxySep3, models.ProxySep5, models.ProxySkip),
	e(1, 2, models.ProxyDil3),
	e(1, 3, models.ProxySep5, models.ProxyMax3),
	e(2, 3, models.ProxyAvg3),
	e(0, 5, models.ProxySep3, models.ProxyDil5),
	e(3, 5, models.ProxySkip),
}

var bayesReduce = []models.ProxyEdge{
	e(0, 2, models.ProxySep5, models.ProxyMax3),
	e(1, 3, models.ProxyDil3, models.ProxyDil5, models.ProxySkip),
	e(2, 4, models.ProxySep3),
	e(3, 4, models.ProxyAvg3),
}

func dartsCell(op string) []models.ProxyEdge {
	var edges []models.ProxyEdge
	for k := 2; k < 6; k++ {
		edges = append(edges, e(0, k, op), e(k-1, k, op))
	}
	return edges
}

func writeArch(t *testing.T, cfg models.ProxyConfig) string {
	t.Helper()
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "arch.json")
	if err := g.WriteGraph(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// readNet reads a written network back through the file, as a retrain would.
func readNet(t *testing.T, path string) (models.ProxyConfig, int64) {
	t.Helper()
	cfg, err := readDerived(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := models.ReadGraph(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c.Params
}

func opCounts(edges []models.ProxyEdge) []int {
	var n []int
	for _, e := range edges {
		n = append(n, len(e.Ops))
	}
	slices.Sort(n)
	return n
}

func TestMatchedRandomsKeepShapeAndSize(t *testing.T) {
	arch := writeArch(t, tinyConfig(bayesNormal, bayesReduce))
	out := t.TempDir()
	var stdout bytes.Buffer
	o := options{arch: arch, n: 3, seed: 1, tolerance: 0.1, cells: 4, channels: 3, sample: "auto", maxTries: 20000, out: out}
	if err := run(o, &stdout); err != nil {
		t.Fatal(err)
	}
	want := tinyConfig(bayesNormal, bayesReduce)
	want.Cells, want.Channels = 4, 3
	der, derParams := readNet(t, filepath.Join(out, "derived.json"))
	if a, b := cellsKey(der), cellsKey(want); a != b || der.Cells != 4 || der.Channels != 3 || der.Input != want.Input {
		t.Fatalf("derived.json is not the restacked derived network: %+v", der)
	}
	seen := map[string]string{cellsKey(der): "derived"}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("random%d", i)
		cfg, params := readNet(t, filepath.Join(out, name+".json"))
		if cfg.Input != der.Input || cfg.Classes != der.Classes || cfg.Cells != der.Cells || cfg.Channels != der.Channels ||
			cfg.Nodes != der.Nodes || cfg.StemMultiplier != der.StemMultiplier || cfg.StemStride != der.StemStride || cfg.Search {
			t.Errorf("%s: network config %+v differs from the derived one beyond the cells", name, cfg)
		}
		for _, c := range []struct {
			what      string
			got, want []models.ProxyEdge
		}{{"normal", cfg.Normal, der.Normal}, {"reduce", cfg.Reduce, der.Reduce}} {
			if len(c.got) != len(c.want) || !slices.Equal(opCounts(c.got), opCounts(c.want)) {
				t.Errorf("%s %s cell: %d edges with op counts %v, want %d with %v", name, c.what,
					len(c.got), opCounts(c.got), len(c.want), opCounts(c.want))
			}
		}
		if d := math.Abs(float64(params-derParams)) / float64(derParams); d > 0.1 {
			t.Errorf("%s: %d parameters, %.1f%% from the derived %d (tolerance 10%%)", name, params, 100*d, derParams)
		}
		if prev, ok := seen[cellsKey(cfg)]; ok {
			t.Errorf("%s has the cells of %s", name, prev)
		}
		seen[cellsKey(cfg)] = name
		if !strings.Contains(stdout.String(), fmt.Sprintf("%-10s %10d", name, params)) {
			t.Errorf("table lacks %s with %d parameters:\n%s", name, params, stdout.String())
		}
	}
	if !strings.Contains(stdout.String(), "random cells: matched") {
		t.Errorf("a multi-op derived cell should sample matched cells:\n%s", stdout.String())
	}
}

func TestDeterministicAndPrefixStable(t *testing.T) {
	arch := writeArch(t, tinyConfig(bayesNormal, bayesReduce))
	files := func(seed uint64, n int) map[string][]byte {
		out := t.TempDir()
		o := options{arch: arch, n: n, seed: seed, tolerance: 0.1, sample: "auto", maxTries: 20000, out: out}
		if err := run(o, &bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
		m := map[string][]byte{}
		for i := 1; i <= n; i++ {
			name := fmt.Sprintf("random%d.json", i)
			b, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatal(err)
			}
			m[name] = b
		}
		return m
	}
	a, b, c, other := files(7, 3), files(7, 3), files(7, 2), files(8, 3)
	for name := range a {
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("%s differs between two runs with seed 7", name)
		}
	}
	for name := range c {
		if !bytes.Equal(a[name], c[name]) {
			t.Errorf("%s of -n 2 differs from that of -n 3", name)
		}
	}
	differ := 0
	for name := range a {
		if !bytes.Equal(a[name], other[name]) {
			differ++
		}
	}
	if differ == 0 {
		t.Error("seeds 7 and 8 gave the same random networks")
	}
}

func TestAutoSamplesDARTSCellsForDARTSShapedDerived(t *testing.T) {
	arch := writeArch(t, tinyConfig(dartsCell(models.ProxySep3), dartsCell(models.ProxyDil3)))
	out := t.TempDir()
	var stdout bytes.Buffer
	if err := run(options{arch: arch, n: 2, seed: 3, tolerance: 0.3, sample: "auto", maxTries: 20000, out: out}, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "random cells: darts") {
		t.Errorf("a DARTS-shaped derived cell should sample DARTS cells:\n%s", stdout.String())
	}
	for i := 1; i <= 2; i++ {
		cfg, _ := readNet(t, filepath.Join(out, fmt.Sprintf("random%d.json", i)))
		for _, cell := range [][]models.ProxyEdge{cfg.Normal, cfg.Reduce} {
			if !dartsShaped(cell, cfg.Nodes) {
				t.Errorf("random%d: cell %v is not DARTS-shaped", i, cell)
			}
		}
	}
}

// TestSampleDARTSIsUniform: ops and predecessor pairs are drawn uniformly.
func TestSampleDARTSIsUniform(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	const draws = 7000
	ops := map[string]int{}
	pairs := map[[2]int]int{} // predecessors of node 3
	total := 0
	for range draws {
		cell := models.RandomDARTSCell(r, 4, models.ProxyOps)
		if !dartsShaped(cell, 4) {
			t.Fatalf("not DARTS-shaped: %v", cell)
		}
		var pred []int
		for _, e := range cell {
			if e.From >= e.To {
				t.Fatalf("edge %d->%d goes backwards", e.From, e.To)
			}
			ops[e.Ops[0]]++
			total++
			if e.To == 3 {
				pred = append(pred, e.From)
			}
		}
		if pred[0] == pred[1] {
			t.Fatalf("node 3 has two edges from node %d", pred[0])
		}
		pairs[[2]int{pred[0], pred[1]}]++
	}
	for _, op := range models.ProxyOps {
		// 56,000 draws: the standard error of a frequency of 1/7 is 0.0015.
		if f := float64(ops[op]) / float64(total); math.Abs(f-1.0/7) > 0.01 {
			t.Errorf("op %s drawn with frequency %.4f, want 1/7", op, f)
		}
	}
	if len(pairs) != 3 {
		t.Errorf("node 3 predecessor pairs %v, want the 3 pairs of {0,1,2}", pairs)
	}
	for p, n := range pairs {
		if f := float64(n) / draws; math.Abs(f-1.0/3) > 0.03 {
			t.Errorf("node 3 predecessors %v drawn with frequency %.3f, want 1/3", p, f)
		}
	}
}

// TestSampleMatchedShapeAndValidity: every draw has the shape, builds, and
// every candidate edge gets drawn.
func TestSampleMatchedShapeAndValidity(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	s := shapeOf(bayesNormal)
	edgeSeen := map[[2]int]int{}
	for i := range 2000 {
		cell := sampleMatched(r, s, 4, models.ProxyOps)
		if len(cell) != len(bayesNormal) || !slices.Equal(opCounts(cell), opCounts(bayesNormal)) {
			t.Fatalf("draw %d: op counts %v, want %v", i, opCounts(cell), opCounts(bayesNormal))
		}
		for _, e := range cell {
			edgeSeen[[2]int{e.From, e.To}]++
			if len(slices.Compact(slices.Clone(e.Ops))) != len(e.Ops) {
				t.Fatalf("draw %d: edge %d->%d repeats an op: %v", i, e.From, e.To, e.Ops)
			}
		}
		if i < 50 { // building is the slow part; the validity rule is the same every time
			if _, _, err := models.ProxyNetwork(tinyConfig(cell, bayesReduce)); err != nil {
				t.Fatalf("draw %d does not build: %v", i, err)
			}
		}
	}
	if len(edgeSeen) != 14 {
		t.Errorf("only %d of the 14 edges of a 4-node cell were ever drawn: %v", len(edgeSeen), edgeSeen)
	}
}

func TestErrorsNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	good := writeArch(t, tinyConfig(bayesNormal, bayesReduce))

	pyr, err := models.Builders["pyramidnet"](json.RawMessage(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	pyrPath := filepath.Join(dir, "pyramid.json")
	if err := pyr.WriteGraph(pyrPath); err != nil {
		t.Fatal(err)
	}
	super := tinyConfig(nil, nil)
	super.Search = true
	superPath := writeArch(t, super)

	edited, _, err := models.ProxyNetwork(tinyConfig(bayesNormal, bayesReduce))
	if err != nil {
		t.Fatal(err)
	}
	edited.Node("head.fc").Attrs.Bias = false
	editedPath := filepath.Join(dir, "edited.json")
	if err := edited.WriteGraph(editedPath); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	unknownPath := filepath.Join(dir, "unknown.json")
	if err := os.WriteFile(unknownPath, bytes.Replace(raw, []byte(`"cells":`), []byte(`"cellz": 1, "cells":`), 1), 0o644); err != nil {
		t.Fatal(err)
	}

	heavy := writeArch(t, tinyConfig(dartsCell(models.ProxySep5), dartsCell(models.ProxySep5)))

	base := options{n: 2, seed: 1, tolerance: 0.1, sample: "auto", maxTries: 100, out: filepath.Join(dir, "out")}
	for _, c := range []struct {
		name string
		edit func(*options)
		want []string
	}{
		{"missing file", func(o *options) { o.arch = filepath.Join(dir, "nope.json") }, []string{"nope.json"}},
		{"not proxy", func(o *options) { o.arch = pyrPath }, []string{pyrPath, "builder.name", "pyramidnet"}},
		{"supernet", func(o *options) { o.arch = superPath }, []string{superPath, "search", "supernet"}},
		{"edited nodes", func(o *options) { o.arch = editedPath }, []string{editedPath, "do not rebuild"}},
		{"unknown field", func(o *options) { o.arch = unknownPath }, []string{unknownPath, "builder.params", "cellz"}},
		{"no arch", func(o *options) { o.arch = "" }, []string{"-arch"}},
		{"n", func(o *options) { o.arch, o.n = good, 0 }, []string{"-n"}},
		{"tolerance", func(o *options) { o.arch, o.tolerance = good, -1 }, []string{"-tolerance"}},
		{"tolerance nan", func(o *options) { o.arch, o.tolerance = good, math.NaN() }, []string{"-tolerance"}},
		{"cells", func(o *options) { o.arch, o.cells = good, -2 }, []string{"-cells"}},
		{"sample", func(o *options) { o.arch, o.sample = good, "grid" }, []string{"-sample", "grid"}},
		// All-sep5 cells are the largest of the space: a DARTS sample matches
		// their parameter count exactly only by drawing sep5 on all 16 edges.
		{"unreachable tolerance", func(o *options) { o.arch, o.tolerance = heavy, 0 }, []string{"random1", "no darts sample", "-tolerance"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.edit(&o)
			err := run(o, &bytes.Buffer{})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := os.Stat(base.out); !os.IsNotExist(err) {
		t.Errorf("a failed run left %s behind (err %v)", base.out, err)
	}
}
