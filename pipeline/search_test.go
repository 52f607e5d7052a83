package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/search"
)

// tinySearchConfig searches a very small supernet on 96 synthetic images:
// a second or two.
func tinySearchConfig(dir string) SearchConfig {
	s := search.DefaultConfig()
	s.Space = models.ProxyConfig{Input: [3]int{1, 28, 28}, Classes: 10, Channels: 2, Cells: 3, Nodes: 4,
		StemMultiplier: 1, StemStride: 4}
	s.Batch = 32
	s.Iterations = 1
	s.CurvatureBatches = 1
	s.PruneThreshold = 0.5
	return SearchConfig{RunDir: dir, Seed: 5, Threads: 2,
		Data: Data{Name: "synthetic", ValCount: 64, Limit: 96}, Search: s}
}

// searchOutputs reads what a finished search leaves, the log without its
// timings.
func searchOutputs(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range []string{SearchLogFile, "decisions.json", ArchFile, "supernet.safetensors", "supernet.json", "search_config.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = string(b)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out[SearchLogFile]), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%s line %q: %v", SearchLogFile, l, err)
		}
		delete(m, "train_seconds")
		delete(m, "curvature_seconds")
		delete(m, "elapsed_seconds")
		b, _ := json.Marshal(m)
		lines = append(lines, string(b))
	}
	out[SearchLogFile] = strings.Join(lines, "\n")
	return out
}

// `bayesnas search` interrupted and resumed leaves the run directory of an
// uninterrupted search; a used directory needs --resume, and a resume under
// another setting is refused naming it.
func TestSearchResume(t *testing.T) {
	ref := t.TempDir()
	if _, err := Search(context.Background(), tinySearchConfig(ref), Options{}); err != nil {
		t.Fatal(err)
	}
	want := searchOutputs(t, ref)
	if n := strings.Count(want[SearchLogFile], "\n") + 1; n != 2 {
		t.Fatalf("reference log has %d lines, want 2", n)
	}
	if _, err := Search(context.Background(), tinySearchConfig(ref), Options{}); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("second search into a finished run directory: err = %v, want a hint to use --resume", err)
	}

	dir := t.TempDir()
	// Err checks: 4 per epoch of 3 batches, 1 per validation; the 8th is
	// in iteration 1's epoch, after its first batch.
	_, err := Search(&countdown{Context: context.Background(), n: 7}, tinySearchConfig(dir), Options{})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("interrupted search: err = %v", err)
	}
	for _, f := range []string{ArchFile, "decisions.json", "supernet.safetensors"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("an interrupted search wrote %s", f)
		}
	}
	if _, err := Search(context.Background(), tinySearchConfig(dir), Options{}); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("search into an interrupted run directory without --resume: err = %v, want a hint to use --resume", err)
	}
	changed := tinySearchConfig(dir)
	changed.Search.LambdaOp = 0.02
	if _, err := Search(context.Background(), changed, Options{Resume: true}); err == nil || !strings.Contains(err.Error(), "search.lambda_op") {
		t.Errorf("resume with another lambda_op: err = %v, want it to name search.lambda_op", err)
	}
	var bar bytes.Buffer
	if _, err := Search(context.Background(), tinySearchConfig(dir), Options{Resume: true, Progress: &bar}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	got := searchOutputs(t, dir)
	for f, w := range want {
		if got[f] != w {
			t.Errorf("resumed search: %s differs from the uninterrupted search's", f)
		}
	}
	// Plain lines off a terminal, from the resumed epoch on.
	out := bar.String()
	for _, s := range []string{"epoch 2/2 batch 3/3 loss ", "curvature 1/1 batch 1/1 elapsed "} {
		if !strings.Contains(out, s) {
			t.Errorf("progress output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "\r") || strings.Contains(out, "epoch 1/2") {
		t.Errorf("progress output off a terminal has carriage returns or the epoch before the resume:\n%s", out)
	}
}

func TestResumeWithoutSearch(t *testing.T) {
	dir := t.TempDir()
	if _, err := Search(context.Background(), tinySearchConfig(dir), Options{Resume: true}); err == nil || !strings.Contains(err.Error(), ConfigFile) {
		t.Errorf("resume in an empty directory: err = %v, want it to name %s", err, ConfigFile)
	}
	if err := writeJSON(filepath.Join(dir, ConfigFile), tinyConfig(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Search(context.Background(), tinySearchConfig(dir), Options{Resume: true}); err == nil || !strings.Contains(err.Error(), "model") {
		t.Errorf("resume a search in a training run: err = %v, want it to name the foreign key", err)
	}
}

// The bar on a terminal redraws one line with the phase, batch, loss,
// elapsed time and ETA.
func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true)
	for b := 1; b <= 4; b++ {
		p.update(progressStep{Phase: "epoch", I: 2, N: 3, Batch: b, Batches: 4, HasLoss: true, Loss: 0.5, Acc: 0.25, Done: 4 + b, Total: 12})
	}
	p.done()
	out := buf.String()
	for _, s := range []string{"\repoch 2/3 [", "] 4/4 loss 0.5000 acc 25.00% ", " ETA ", "\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("bar %q lacks %q", out, s)
		}
	}
	// The first update has no rate yet; the last one has.
	draws := strings.Split(out, "\r")
	if last := draws[len(draws)-1]; strings.Contains(last, "ETA ?") || !strings.Contains(last, "4/4") {
		t.Errorf("bar %q: the last update, of batch 4/4, has no ETA", out)
	}
}

// `bayesnas derive` re-thresholds a finished search: the same derivation
// under the search's own settings, another under a significance floor (no
// more ops, each kept op above the floor), a run directory whose arch.json
// builds; the search's own directory as output and an unfinished search
// are refused.
func TestRederive(t *testing.T) {
	run := filepath.Join(t.TempDir(), "search")
	cfg := tinySearchConfig(run)
	cfg.Search.PruneThreshold = 0
	if _, err := Search(context.Background(), cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	same := filepath.Join(t.TempDir(), "same")
	if _, err := Rederive(run, same, func(d search.DeriveConfig) search.DeriveConfig { return d }); err != nil {
		t.Fatal(err)
	}
	want, got := searchOutputs(t, run), searchOutputs(t, same)
	for _, f := range []string{"decisions.json", ArchFile, SearchLogFile, "search_config.json"} {
		if got[f] != want[f] {
			t.Errorf("%s differs from the search's under the same settings", f)
		}
	}
	d := cfg.Search.Derive
	d.MinSignificance = 3
	floor := filepath.Join(t.TempDir(), "floor")
	to := func(search.DeriveConfig) search.DeriveConfig { return d }
	res, err := Rederive(run, floor, to)
	if err != nil {
		t.Fatal(err)
	}
	var before search.Derivation
	if err := json.Unmarshal([]byte(want["decisions.json"]), &before); err != nil {
		t.Fatal(err)
	}
	for i, c := range res.Derivation.Table.Cells {
		if c.CopiedFrom != "" {
			continue
		}
		if c.KeptOps > before.Table.Cells[i].KeptOps {
			t.Errorf("%s: %d ops kept with the floor, %d without", c.Type, c.KeptOps, before.Table.Cells[i].KeptOps)
		}
		for _, e := range c.Edges {
			for _, op := range e.Ops {
				if op.Kept && !c.Forced && op.Significance < 3 {
					t.Errorf("%s %d->%d %s kept with significance %g", c.Type, e.From, e.To, op.Op, op.Significance)
				}
			}
		}
	}
	saved, err := readSearchConfig(filepath.Join(floor, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if saved.Search.Derive != d || saved.RunDir != floor {
		t.Errorf("config.json of the derivation: %+v in %s", saved.Search.Derive, saved.RunDir)
	}
	g, err := models.ReadGraph(filepath.Join(floor, ArchFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), 2); err != nil {
		t.Fatalf("re-derived arch.json: %v", err)
	}
	if _, err := Rederive(run, run, to); err == nil || !strings.Contains(err.Error(), "another") {
		t.Errorf("output into the search's own directory: err = %v", err)
	}
	// A search stopped after its warm-up has not finished.
	stopped := filepath.Join(t.TempDir(), "stopped")
	ctx, cancel := context.WithCancel(context.Background())
	c2 := tinySearchConfig(stopped)
	var lines int
	_, err = Search(ctx, c2, Options{Progress: writerFunc(func(b []byte) (int, error) {
		lines++
		if lines > 3 {
			cancel()
		}
		return len(b), nil
	})})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopping the search: %v", err)
	}
	if _, err := Rederive(stopped, filepath.Join(t.TempDir(), "x"), to); err == nil || !strings.Contains(err.Error(), "not finished") {
		t.Errorf("unfinished search: err = %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
