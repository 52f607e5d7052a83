package search

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"bayesnas/bayes"
	"bayesnas/dataset"
	"bayesnas/models"
)

func tinyRunConfig() Config {
	cfg := DefaultConfig()
	cfg.Space = models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Channels: 2, Cells: 3, Nodes: 4,
		StemMultiplier: 1, StemStride: 1, Search: true}
	cfg.Batch = 32
	cfg.WarmupEpochs = 1
	cfg.Iterations = 2
	cfg.Curvature = bayes.GGN
	cfg.CurvatureBatches = 2
	cfg.Workers = 2
	return cfg
}

func tinyData(t *testing.T, batch int) (train, val *dataset.Batcher) {
	t.Helper()
	set, err := dataset.Synthetic(128, 1, 8, 8, 3, 7)
	if err != nil {
		t.Fatal(err)
	}
	idx := set.Indices()
	train, err = dataset.NewBatcher(set, idx[:96], batch, dataset.Augment{}, dataset.Normalize{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	val, err = dataset.NewEvalBatcher(set, idx[96:], batch, dataset.Normalize{})
	if err != nil {
		t.Fatal(err)
	}
	return train, val
}

// A tiny search runs end to end, logs one JSON line per iteration (plus
// the warm-up), moves the gammas away from their start, writes its run
// directory, and gives identical results for the same seed.
func TestRunSmallDeterministic(t *testing.T) {
	cfg := tinyRunConfig()
	var results []*Result
	var logs []string
	for range 2 {
		train, val := tinyData(t, cfg.Batch)
		var buf bytes.Buffer
		r, err := Run(context.Background(), cfg, train, val, &buf)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
		logs = append(logs, buf.String())
	}
	r := results[0]
	lines := strings.Split(strings.TrimSpace(logs[0]), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3 (warm-up + 2 iterations)", len(lines))
	}
	var last IterationLog
	if err := json.Unmarshal([]byte(lines[2]), &last); err != nil {
		t.Fatal(err)
	}
	if last.Iteration != 2 || last.Epochs != 3 || last.CurvSamples != 64 || !(last.ValAcc >= 0) || last.MeanGamma["switch"] == 0 {
		t.Errorf("last log line %+v", last)
	}
	moved := 0
	for i, g := range r.Space.Groups {
		if g.Gamma != 1 {
			moved++
		}
		if h := results[1].Space.Groups[i]; h.Gamma != g.Gamma || h.GammaEff != g.GammaEff {
			t.Fatalf("%s: gamma %g / %g in two runs with the same seed", g.Name, g.Gamma, h.Gamma)
		}
	}
	if moved < len(r.Space.Groups)/2 {
		t.Errorf("only %d of %d gammas moved", moved, len(r.Space.Groups))
	}
	if !reflect.DeepEqual(results[0].Derivation.Normal, results[1].Derivation.Normal) {
		t.Errorf("derived cells differ between runs with the same seed")
	}
	strip := func(s string) string { // timings legitimately differ
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			var m map[string]any
			json.Unmarshal([]byte(l), &m)
			for _, k := range []string{"train_seconds", "curvature_seconds", "elapsed_seconds"} {
				delete(m, k)
			}
			b, _ := json.Marshal(m)
			out = append(out, string(b))
		}
		return strings.Join(out, "\n")
	}
	if strip(logs[0]) != strip(logs[1]) {
		t.Errorf("logs differ between runs with the same seed:\n%s\n%s", strip(logs[0]), strip(logs[1]))
	}
	dir := t.TempDir()
	if err := r.WriteRunDir(dir); err != nil {
		t.Fatal(err)
	}
	g, err := models.ReadGraph(filepath.Join(dir, "arch.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := g.Count(); err != nil || c.ArchVars != 0 {
		t.Errorf("arch.json: %d architecture variables, %v", c.ArchVars, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "decisions.json"))
	if err != nil || !strings.Contains(string(b), `"posterior_var"`) || !strings.Contains(string(b), `"curvature"`) {
		t.Errorf("decisions.json lacks curvature or posterior variance (%v)", err)
	}
}

// Skipping the layers of frozen branches computes exactly the function of
// the whole network with those variables at zero, with fewer layers.
func TestPruningIsExact(t *testing.T) {
	g, net, s := tinySpace(t, 2)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, gr := range s.Groups {
		for _, v := range gr.Vars {
			v.Set(0.1 + 0.3*rng.Float64())
		}
		gr.Gamma = rng.Float64()
	}
	s.ApplyDependency()
	for i := range net.Input.Data {
		net.Input.Data[i] = float32(rng.NormFloat64())
	}
	n := s.freezeBelow(0.2)
	if n == 0 {
		t.Fatal("nothing frozen")
	}
	net.Forward(false)
	want := append([]float32(nil), net.Output.Data...)
	pr := newPruner(g, net)
	pr.apply(s)
	if len(net.Layers) >= len(pr.all) {
		t.Fatalf("pruning %d groups left %d of %d layers", n, len(net.Layers), len(pr.all))
	}
	net.Forward(false)
	for i, v := range net.Output.Data {
		if v != want[i] {
			t.Fatalf("logit %d: %g pruned, %g whole", i, v, want[i])
		}
	}
	t.Logf("%d frozen groups: %d of %d layers run", n, len(net.Layers), len(pr.all))
}

func TestRunConfigErrors(t *testing.T) {
	for field, mod := range map[string]func(*Config){
		"batch":            func(c *Config) { c.Batch = 0 },
		"iterations":       func(c *Config) { c.Iterations = 0 },
		"lambda_op":        func(c *Config) { c.LambdaOp = -1 },
		"omega_eps":        func(c *Config) { c.OmegaEps = 0 },
		"curvature":        func(c *Config) { c.Curvature = "exact" },
		"threshold":        func(c *Config) { c.Derive.Threshold = -1 },
		"penalty_step":     func(c *Config) { c.PenaltyStep = "adam" },
		"min_significance": func(c *Config) { c.Derive.MinSignificance = -2 },
	} {
		cfg := tinyRunConfig()
		mod(&cfg)
		_, err := Run(context.Background(), cfg, nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v", field, err)
		}
	}
}

// The BN that ends each candidate op keeps scale 1 and shift 0 through a
// search (its scale would absorb the op's architecture weight); the other
// BNs train.
func TestOpBNAffineStaysFixed(t *testing.T) {
	cfg := tinyRunConfig()
	cfg.Iterations = 1
	train, val := tinyData(t, cfg.Batch)
	r, err := Run(context.Background(), cfg, train, val, nil)
	if err != nil {
		t.Fatal(err)
	}
	fixed := opBNAffine(r.Supernet)
	if len(fixed) == 0 {
		t.Fatal("no op-final BN found")
	}
	moved := 0
	for _, p := range r.Net.Params {
		if strings.HasSuffix(p.Name, ".weight") || strings.HasSuffix(p.Name, ".bias") {
			want := float32(0)
			if strings.HasSuffix(p.Name, ".weight") {
				want = 1
			}
			changed := false
			for _, v := range p.Data {
				changed = changed || v != want
			}
			if fixed[p.Name] && changed {
				t.Errorf("%s moved during the search", p.Name)
			}
			if !fixed[p.Name] && changed && strings.Contains(p.Name, "bn") {
				moved++
			}
		}
	}
	if moved == 0 {
		t.Error("no other BN parameter trained")
	}
}

// The auxiliary skips (DARTS-) sit on every stride-1 edge, are neither
// architecture variables nor trained network weights, fall linearly from 1
// to 0 over the search, and leave no trace in the derived network.
func TestAuxSkipDecays(t *testing.T) {
	cfg := tinyRunConfig()
	cfg.Space.AuxSkip = true
	cfg.Iterations = 1
	train, val := tinyData(t, cfg.Batch)
	_, _, space, err := buildSupernet(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Cell 0 is normal (14 stride-1 edges), cells 1 and 2 reduce (the 8
	// edges out of the cell inputs have stride 2, 6 remain).
	if len(space.Aux) != 14+6+6 {
		t.Fatalf("%d auxiliary skips, want 26", len(space.Aux))
	}
	for _, gr := range space.Groups {
		for _, v := range gr.Vars {
			if slices.Contains(space.Aux, v.P) {
				t.Fatalf("auxiliary weight %s is in group %s", v.P.Name, gr.Name)
			}
		}
	}
	s := &searcher{cfg: cfg, space: space, batches: 3}
	for _, c := range []struct {
		epoch, batch int
		want         float32
	}{{0, 0, 1}, {0, 1, 1 - 1.0/6}, {1, 0, 0.5}, {1, 2, 1 - (1+2.0/3)/2}, {2, 0, 0}} {
		s.pos.Epoch, s.pos.Batch = c.epoch, c.batch
		s.setAux()
		if got := space.Aux[0].Data[0]; math.Abs(float64(got-c.want)) > 1e-6 {
			t.Errorf("epoch %d batch %d: beta %g, want %g", c.epoch, c.batch, got, c.want)
		}
	}
	r, err := Run(context.Background(), cfg, train, val, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range r.Space.Aux {
		if p.Data[0] != 0 {
			t.Errorf("%s = %g after the search, want 0", p.Name, p.Data[0])
		}
	}
	for _, n := range r.Derived.Nodes {
		if strings.HasSuffix(n.Name, ".aux") {
			t.Errorf("the derived network has auxiliary node %s", n.Name)
		}
	}
	if strings.Contains(string(r.Derived.Builder.Params), "aux_skip") {
		t.Errorf("the derived network's builder record keeps aux_skip: %s", r.Derived.Builder.Params)
	}
}

// With the proximal penalty step a tiny search ends with groups at exactly
// zero (gamma 0, so never kept), which the subgradient step never reaches,
// and stays deterministic.
func TestProximalPenaltyZeros(t *testing.T) {
	zeros := func(cfg Config) (int, *Result) {
		train, val := tinyData(t, cfg.Batch)
		r, err := Run(context.Background(), cfg, train, val, nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, g := range r.Space.Groups {
			if g.Norm() == 0 {
				n++
				if g.Gamma != 0 {
					t.Errorf("%s: zero weights, gamma %g", g.Name, g.Gamma)
				}
			}
		}
		return n, r
	}
	cfg := tinyRunConfig()
	cfg.LambdaOp, cfg.LambdaSwitch = 0.05, 0.05
	cfg.PenaltyStep = "subgradient"
	if n, _ := zeros(cfg); n != 0 {
		t.Errorf("subgradient step: %d groups at exactly zero, want none", n)
	}
	cfg.PenaltyStep = "proximal"
	n, r1 := zeros(cfg)
	if n == 0 {
		t.Errorf("proximal step: no group at exactly zero")
	}
	_, r2 := zeros(cfg)
	for i, g := range r1.Space.Groups {
		if !reflect.DeepEqual(g.Values(), r2.Space.Groups[i].Values()) {
			t.Fatalf("%s differs between two identical proximal searches", g.Name)
		}
	}
	t.Logf("proximal: %d of %d groups at zero", n, len(r1.Space.Groups))
}

// The backend setting reaches the supernet: the tiny search on the
// reference backend keeps the same ops as on the CPU backend, with gammas
// equal to float32 rounding; a backend this binary lacks is a config error.
func TestSearchOnBackend(t *testing.T) {
	cfg := tinyRunConfig()
	cfg.Iterations = 1
	var res [2]*Result
	for i, be := range []string{"", "reference"} {
		cfg.Backend = be
		train, val := tinyData(t, cfg.Batch)
		r, err := Run(context.Background(), cfg, train, val, nil)
		if err != nil {
			t.Fatalf("backend %q: %v", be, err)
		}
		res[i] = r
	}
	if fmt.Sprintf("%T", res[1].Net.Layers[0]) == fmt.Sprintf("%T", res[0].Net.Layers[0]) {
		t.Errorf("both searches ran on layers of type %T", res[0].Net.Layers[0])
	}
	for i, g := range res[0].Space.Groups {
		h := res[1].Space.Groups[i]
		if d := math.Abs(g.Gamma - h.Gamma); d > 1e-3*math.Max(1, g.Gamma) {
			t.Errorf("%s: gamma %g on the CPU backend, %g on the reference", g.Name, g.Gamma, h.Gamma)
		}
	}
	cfg.Backend = "cuda"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "backend = cuda") {
		t.Errorf("cuda: %v", err)
	}
}
