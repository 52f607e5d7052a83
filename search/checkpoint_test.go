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
