package search

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/bayes"
	"bayesnas/models"
	"bayesnas/nn"
)

// resumeConfig is tinyRunConfig with the Monte-Carlo curvature (its sampler's
// state must survive a resume) and pruning that freezes groups after the
// first iteration (the pruned network must be rebuilt on resume), and the
// auxiliary skips (their weight must follow the position on resume).
func resumeConfig() Config {
	cfg := tinyRunConfig()
	cfg.Curvature = bayes.MonteCarloFisher
	cfg.PruneThreshold = 0.5
	cfg.Space.AuxSkip = true
	return cfg
}

// countdown is a context whose Err turns to Canceled after n checks, so a
// test stops the search at an exact point.
type countdown struct {
	context.Context
	n int
}

func (c *countdown) Err() error {
	c.n--
	if c.n < 0 {
		return context.Canceled
	}
	return nil
}

// cancelOnLine cancels a context once the log has received `lines` lines.
type cancelOnLine struct {
	buf    bytes.Buffer
	lines  int
	cancel context.CancelFunc
}

func (w *cancelOnLine) Write(b []byte) (int, error) {
	n, err := w.buf.Write(b)
	if bytes.Count(w.buf.Bytes(), []byte("\n")) >= w.lines {
		w.cancel()
	}
	return n, err
}

// stripTimes drops the fields that legitimately differ between two runs.
func stripTimes(t *testing.T, log string) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		for _, k := range []string{"train_seconds", "curvature_seconds", "elapsed_seconds"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("log line %q lacks %s", l, k)
			}
			delete(m, k)
		}
		b, _ := json.Marshal(m)
		out = append(out, string(b))
	}
	return strings.Join(out, "\n")
}

// outcome is everything a finished search hands on, as bytes.
type outcome struct {
	log, weights, decisions, derived string
}

func outcomeOf(t *testing.T, r *Result, log string) outcome {
	t.Helper()
	dir := t.TempDir()
	if err := r.WriteRunDir(dir); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return outcome{log: stripTimes(t, log), weights: read("supernet.safetensors"), decisions: read("decisions.json"), derived: read("arch.json")}
}

func compareOutcomes(t *testing.T, what string, got, want outcome) {
	t.Helper()
	if got.log != want.log {
		t.Errorf("%s: search log differs:\n%s\nwant\n%s", what, got.log, want.log)
	}
	if got.weights != want.weights {
		t.Errorf("%s: supernet.safetensors differs from the uninterrupted run's", what)
	}
	if got.decisions != want.decisions {
		t.Errorf("%s: decisions.json differs from the uninterrupted run's", what)
	}
	if got.derived != want.derived {
		t.Errorf("%s: arch.json differs from the uninterrupted run's", what)
	}
}

// A search stopped at a boundary, mid-epoch, inside a curvature pass or
// while validating, then resumed, ends exactly as an uninterrupted one: the
// same log (timings aside), decisions, derived network and supernet bytes.
// The uninterrupted reference runs without checkpoints, so writing them
// does not change the search either.
func TestResumeIsExact(t *testing.T) {
	cfg := resumeConfig()
	train, val := tinyData(t, cfg.Batch)
	var refLog bytes.Buffer
	ref, err := Run(context.Background(), cfg, train, val, &refLog)
	if err != nil {
		t.Fatal(err)
	}
	if last := ref.Log[len(ref.Log)-1]; last.Frozen == 0 || last.CurvSamples == 0 {
		t.Fatalf("the reference search froze %d groups with %d curvature samples: the test needs both", last.Frozen, last.CurvSamples)
	}
	want := outcomeOf(t, ref, refLog.String())

	// Err checks of the tiny search: 4 per epoch (3 batches and the end),
	// 1 after each validation, 2 per curvature pass. The warm-up takes
	// checks 1-5, iteration 1 checks 6-12. Stopping inside the curvature
	// pass (or the validation after it) resumes from the epoch before.
	for _, c := range []struct {
		name   string
		checks int // the stop's Err check; 0: cancel on iteration 1's log line
	}{
		{"after iteration 1's log line", 0},
		{"mid-epoch in iteration 1", 8},
		{"in iteration 1's curvature", 11},
	} {
		t.Run(c.name, func(t *testing.T) {
			ckpt := filepath.Join(t.TempDir(), "checkpoint.safetensors")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stop context.Context = &countdown{Context: ctx, n: c.checks - 1}
			var logw io.Writer = io.Discard
			if c.checks == 0 {
				stop, logw = ctx, &cancelOnLine{lines: 2, cancel: cancel}
			}
			_, err := RunWith(stop, cfg, train, val, RunOptions{Log: logw, Checkpoint: ckpt})
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "--resume") {
				t.Fatalf("stopped search: err = %v, want a cancellation that points to --resume", err)
			}
			var log bytes.Buffer
			r, err := RunWith(context.Background(), cfg, train, val, RunOptions{Log: &log, Checkpoint: ckpt, Resume: true})
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			compareOutcomes(t, c.name, outcomeOf(t, r, log.String()), want)
		})
	}
}

// A finished search resumed again does no more work and hands on the same
// result; resume refuses another configuration, a training checkpoint and a
// missing file, naming what is wrong.
func TestResumeRefusals(t *testing.T) {
	cfg := resumeConfig()
	cfg.Iterations = 1
	train, val := tinyData(t, cfg.Batch)
	ckpt := filepath.Join(t.TempDir(), "checkpoint.safetensors")
	var log bytes.Buffer
	r, err := RunWith(context.Background(), cfg, train, val, RunOptions{Log: &log, Checkpoint: ckpt})
	if err != nil {
		t.Fatal(err)
	}
	want := outcomeOf(t, r, log.String())
	calls := 0
	log.Reset()
	again, err := RunWith(context.Background(), cfg, train, val, RunOptions{Log: &log, Checkpoint: ckpt, Resume: true,
		Progress: func(Progress) { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Errorf("resuming a finished search trained or estimated %d batches, want none", calls)
	}
	compareOutcomes(t, "finished search resumed", outcomeOf(t, again, log.String()), want)

	other := cfg
	other.LambdaOp *= 2
	if _, err := RunWith(context.Background(), other, train, val, RunOptions{Checkpoint: ckpt, Resume: true}); err == nil || !strings.Contains(err.Error(), "another configuration") {
		t.Errorf("resume with another lambda_op: err = %v", err)
	}
	trainCkpt := filepath.Join(t.TempDir(), "train.safetensors")
	if err := models.SaveWeights(trainCkpt, []*nn.Param{{Name: "w", Shape: []int{1}, Data: []float32{1}}}, map[string]string{"format": "bayesnas.checkpoint/v1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := RunWith(context.Background(), cfg, train, val, RunOptions{Checkpoint: trainCkpt, Resume: true}); err == nil || !strings.Contains(err.Error(), "bayesnas.checkpoint/v1") {
		t.Errorf("resume from a training checkpoint: err = %v, want it to name the format", err)
	}
	missing := filepath.Join(t.TempDir(), "none.safetensors")
	if _, err := RunWith(context.Background(), cfg, train, val, RunOptions{Checkpoint: missing, Resume: true}); err == nil || !strings.Contains(err.Error(), "none.safetensors") {
		t.Errorf("resume from a missing checkpoint: err = %v, want it to name the file", err)
	}
}

// Progress reports cover every training and curvature batch once, in order,
// and count up to the search's total.
func TestProgressReports(t *testing.T) {
	cfg := resumeConfig()
	cfg.Iterations = 1
	train, val := tinyData(t, cfg.Batch)
	var reps []Progress
	if _, err := RunWith(context.Background(), cfg, train, val, RunOptions{Progress: func(p Progress) { reps = append(reps, p) }}); err != nil {
		t.Fatal(err)
	}
	// 96 images in batches of 32: 3 per epoch, 2 epochs; 2 curvature batches.
	if len(reps) != 8 {
		t.Fatalf("%d reports, want 8: %+v", len(reps), reps)
	}
	for i, p := range reps {
		if p.Done != i+1 || p.Total != 8 {
			t.Errorf("report %d: done %d of %d, want %d of 8", i, p.Done, p.Total, i+1)
		}
	}
	if p := reps[4]; p.Phase != "epoch" || p.I != 2 || p.N != 2 || p.Batch != 2 || p.Batches != 3 || !p.Training || !(p.Loss > 0) {
		t.Errorf("report 4: %+v, want epoch 2/2 batch 2/3 with a loss", p)
	}
	if p := reps[7]; p.Phase != "curvature" || p.I != 1 || p.N != 1 || p.Batch != 2 || p.Batches != 2 || p.Training {
		t.Errorf("last report: %+v, want curvature 1/1 batch 2/2", p)
	}
}

// The cost of one checkpoint of the default supernet (written after every
// epoch): compare with package bayes's BenchmarkSupernetTrainStep (the same
// supernet, batch 64) times the batches of an epoch.
func BenchmarkCheckpointDefaultSupernet(b *testing.B) {
	cfg := DefaultConfig()
	_, net, _, err := buildSupernet(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	var weights, arch []*nn.Param
	for _, p := range net.Params {
		if p.Kind == nn.ArchVar {
			arch = append(arch, p)
		} else {
			weights = append(weights, p)
		}
	}
	optW, err := nn.NewSGD(weights, nn.SGDConfig{Momentum: 0.9})
	if err != nil {
		b.Fatal(err)
	}
	optA, err := nn.NewAdam(arch, nn.AdamConfig{Beta1: 0.5, Beta2: 0.999})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "checkpoint.safetensors")
	opts := []models.CheckpointOptimizer{{Name: "optimizer", Opt: optW}, {Name: "arch_optimizer", Opt: optA}}
	for b.Loop() {
		if err := models.SaveCheckpoint(path, net.Params, opts, map[string]string{"format": checkpointFormat}); err != nil {
			b.Fatal(err)
		}
	}
	if st, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(st.Size())/1e6, "MB")
	}
}

// rewriteCheckpoint copies the search checkpoint src (written with cfg) to
// dst with its position, groups and log metadata passed through edit as
// plain JSON values (lat: the latency model of a latency-aware cfg).
func rewriteCheckpoint(t *testing.T, cfg Config, lat LatencyModel, src, dst string, edit func(pos map[string]any, groups []any, log []any)) {
	t.Helper()
	s, err := newSearcher(cfg, lat)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := models.LoadCheckpoint(src, checkpointFormat, s.net.Params, s.optimizers())
	if err != nil {
		t.Fatal(err)
	}
	var (
		pos          map[string]any
		groups, logs []any
	)
	for k, v := range map[string]any{"position": &pos, "groups": &groups, "log": &logs} {
		if err := json.Unmarshal([]byte(meta[k]), v); err != nil {
			t.Fatal(err)
		}
	}
	edit(pos, groups, logs)
	for k, v := range map[string]any{"position": pos, "groups": groups, "log": logs} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		meta[k] = string(b)
	}
	if err := models.SaveCheckpoint(dst, s.net.Params, s.optimizers(), meta); err != nil {
		t.Fatal(err)
	}
}

// Every field of a search checkpoint's metadata is checked against the
// configuration before the search resumes (or re-derives) from it: a
// position the search cannot reach, running sums that do not fit it, a
// latency scale off its bounds, NaN or negative variances, curvature of the
// wrong length. The error names the file and the field.
func TestCheckpointStateChecked(t *testing.T) {
	cfg := resumeConfig()
	cfg.Iterations = 1
	train, val := tinyData(t, cfg.Batch)
	dir := t.TempDir()
	done := filepath.Join(dir, "done.safetensors") // finished: 2 epochs, 2 log lines
	if _, err := RunWith(context.Background(), cfg, train, val, RunOptions{Checkpoint: done}); err != nil {
		t.Fatal(err)
	}
	mid := filepath.Join(dir, "mid.safetensors") // stopped at epoch 1 batch 1 (after the warm-up's line)
	if _, err := RunWith(&countdown{Context: context.Background(), n: 6}, cfg, train, val, RunOptions{Checkpoint: mid}); !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped search: err = %v", err)
	}
	hasH := func(groups []any) int {
		for i, g := range groups {
			if h, _ := g.(map[string]any)["h"].([]any); len(h) > 0 {
				return i
			}
		}
		t.Fatal("no group of the finished search holds curvature")
		return 0
	}
	group := func(groups []any, i int) map[string]any { return groups[i].(map[string]any) }
	for _, c := range []struct {
		name, src, field string
		edit             func(pos map[string]any, groups, log []any)
	}{
		{"unchanged finished", done, "", func(map[string]any, []any, []any) {}},
		{"unchanged mid-epoch", mid, "", func(map[string]any, []any, []any) {}},
		{"epoch past the end", done, "position.epoch = 9: want 0..2", func(p map[string]any, _, _ []any) { p["epoch"] = 9 }},
		{"epoch negative", mid, "position.epoch = -1", func(p map[string]any, _, _ []any) { p["epoch"] = -1 }},
		{"epoch before the log lines", done, "position.epoch = 0: want 2..2 (2 log lines written)", func(p map[string]any, _, _ []any) { p["epoch"] = 0 }},
		{"batch past the epoch", mid, "position.batch = 4: want 0..3 (batches per epoch)", func(p map[string]any, _, _ []any) { p["batch"] = 4 }},
		{"batch negative", mid, "position.batch = -2", func(p map[string]any, _, _ []any) { p["batch"] = -2 }},
		{"batch after the last epoch", done, "position.batch = 1: want 0", func(p map[string]any, _, _ []any) { p["batch"] = 1 }},
		{"seen past the batches", mid, "position.seen = 33: want 0..32", func(p map[string]any, _, _ []any) { p["seen"] = 33 }},
		{"seen negative", mid, "position.seen = -1", func(p map[string]any, _, _ []any) { p["seen"] = -1 }},
		{"correct past seen", mid, "position.correct = 33: want 0..32 (seen)", func(p map[string]any, _, _ []any) { p["correct"] = 33 }},
		{"correct negative", mid, "position.correct = -1", func(p map[string]any, _, _ []any) { p["correct"] = -1 }},
		{"loss sum negative", mid, "position.loss_sum = -1", func(p map[string]any, _, _ []any) { p["loss_sum"] = -1 }},
		{"elapsed negative", mid, "position.elapsed = -5", func(p map[string]any, _, _ []any) { p["elapsed"] = -5 }},
		{"logged past the end", done, "position.logged = 3: want 0..2", func(p map[string]any, _, _ []any) { p["logged"] = 3 }},
		{"latency scale off", done, "position.latency_scale = -1: want 0 (the search is not latency-aware)", func(p map[string]any, _, _ []any) { p["latency_scale"] = -1 }},
		{"log line's epochs", done, "log[1].epochs = 7: want 2", func(_ map[string]any, _, l []any) { l[1].(map[string]any)["epochs"] = 7 }},
		{"gamma NaN", done, ".gamma = NaN: want a finite value >= 0", func(_ map[string]any, g, _ []any) { group(g, 0)["gamma"] = "NaN" }},
		{"gamma negative", done, ".gamma = -0.5", func(_ map[string]any, g, _ []any) { group(g, 0)["gamma"] = "-0.5" }},
		{"gamma_eff +Inf", done, ".gamma_eff = +Inf", func(_ map[string]any, g, _ []any) { group(g, 1)["gamma_eff"] = "+Inf" }},
		{"omega negative", done, ".omega = -1", func(_ map[string]any, g, _ []any) { group(g, 2)["omega"] = "-1" }},
		{"h NaN", done, ".h[0] = NaN", func(_ map[string]any, g, _ []any) { group(g, hasH(g))["h"].([]any)[0] = "NaN" }},
		{"c negative", done, ".c[0] = -1", func(_ map[string]any, g, _ []any) { group(g, hasH(g))["c"].([]any)[0] = "-1" }},
		{"h too long", done, ".h holds 2 values: want 1 (one per variable", func(_ map[string]any, g, _ []any) {
			gr := group(g, hasH(g))
			gr["h"] = append(gr["h"].([]any), "1")
		}},
		{"c too short", done, ".c holds 0 values", func(_ map[string]any, g, _ []any) { group(g, hasH(g))["c"] = []any{} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ckpt := filepath.Join(t.TempDir(), "checkpoint.safetensors")
			rewriteCheckpoint(t, cfg, nil, c.src, ckpt, c.edit)
			_, err := RunWith(context.Background(), cfg, train, val, RunOptions{Checkpoint: ckpt, Resume: true})
			if c.field == "" {
				if err != nil {
					t.Fatalf("an unchanged checkpoint: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), ckpt+": metadata ") || !strings.Contains(err.Error(), c.field) {
				t.Errorf("err = %v, want it to name %s and %q", err, ckpt, c.field)
			}
		})
	}
}
