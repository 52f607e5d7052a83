package search

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/dataset"
	"bayesnas/models"
	"bayesnas/nn"
)

// A pyramid-tree search runs end to end on a tiny backbone: it logs per
// cell, writes a tree decision table and a derived network that rebuilds
// from arch.json, compiles and trains a step, and repeats exactly.
func TestRunTreeSearch(t *testing.T) {
	cfg := tinyRunConfig()
	cfg.Kind = KindTree
	cfg.Tree = tinyTreeConfig()
	cfg.Derive = DeriveConfig{Threshold: 0.3, Relative: true}
	var logs []string
	var results []*Result
	for range 2 {
		train, val := tinyData(t, cfg.Batch)
		var buf bytes.Buffer
		r, err := Run(context.Background(), cfg, train, val, &buf)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, buf.String())
		results = append(results, r)
	}
	r := results[0]
	if r.TreeDerivation == nil || r.Derivation != nil {
		t.Fatalf("tree derivation %v, proxy derivation %v", r.TreeDerivation != nil, r.Derivation != nil)
	}
	lines := strings.Split(strings.TrimSpace(logs[0]), "\n")
	var last IterationLog
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || len(last.LiveOps) != len(r.TreeDerivation.Cells) || last.MeanGamma["switch"] == 0 {
		t.Errorf("%d log lines, last %+v", len(lines), last)
	}
	a, _ := json.Marshal(results[0].TreeDerivation)
	b, _ := json.Marshal(results[1].TreeDerivation)
	if !bytes.Equal(a, b) {
		t.Errorf("tree derivations differ between runs with the same seed")
	}
	dir := t.TempDir()
	if err := r.WriteRunDir(dir); err != nil {
		t.Fatal(err)
	}
	dec, err := os.ReadFile(filepath.Join(dir, "decisions.json"))
	if err != nil || !strings.Contains(string(dec), `"posterior_var"`) || !strings.Contains(string(dec), `"kept_edges"`) {
		t.Errorf("decisions.json is not a tree decision table (%v)", err)
	}
	g, err := models.ReadGraph(filepath.Join(dir, "arch.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := g.Count(); err != nil || c.ArchVars != 0 {
		t.Fatalf("arch.json: %d architecture variables, %v", c.ArchVars, err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 2), 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	set, err := dataset.Synthetic(4, 1, 8, 8, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range net.Input.Data {
		net.Input.Data[i] = float32(set.Images[i]) / 255
	}
	net.ZeroGrad()
	net.Forward(true)
	loss := nn.SoftmaxCrossEntropy{}
	if l, _, err := loss.Forward(net.Output, []int32{0, 1, 2, 0}); err != nil || !(l > 0) {
		t.Fatalf("derived network loss %g, %v", l, err)
	}
	net.Backward()
}
