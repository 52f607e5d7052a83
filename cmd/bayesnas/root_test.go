package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"bayesnas/pipeline"
	"bayesnas/search"
)

// resolve runs loadConfig the way `bayesnas train` does, for the given args.
func resolve(t *testing.T, args ...string) (pipeline.Config, error) {
	t.Helper()
	return resolveWith(t, newTrainCmd(""), func(c *cobra.Command) (pipeline.Config, error) { return loadConfig(c, trainBinds) }, args)
}

// resolveSearch runs loadSearchConfig the way `bayesnas search` does.
func resolveSearch(t *testing.T, args ...string) (pipeline.SearchConfig, error) {
	t.Helper()
	return resolveWith(t, newSearchCmd(""), loadSearchConfig, args)
}

// resolveWith executes cmd with args, its action replaced by load.
func resolveWith[C any](t *testing.T, cmd *cobra.Command, load func(*cobra.Command) (C, error), args []string) (C, error) {
	t.Helper()
	var cfg C
	var err error
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		cfg, err = load(c)
		return nil
	}
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	if e := cmd.Execute(); e != nil {
		t.Fatal(e)
	}
	return cfg, err
}

func writeYAML(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedence(t *testing.T) {
	file := writeYAML(t, "train:\n  epochs: 3\n  lr: 0.2\nmodel:\n  params:\n    alpha: 12\n")
	cfg, err := resolve(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Train.Epochs != 3 || cfg.Train.LR != 0.2 || cfg.Train.Batch != 64 {
		t.Errorf("file over defaults: epochs %d lr %g batch %d, want 3 0.2 64", cfg.Train.Epochs, cfg.Train.LR, cfg.Train.Batch)
	}
	if cfg.Model.Params["alpha"] != 12 {
		t.Errorf("model.params.alpha = %v, want 12", cfg.Model.Params["alpha"])
	}
	t.Setenv("BAYESNAS_TRAIN_EPOCHS", "4")
	if cfg, _ = resolve(t, "--config", file); cfg.Train.Epochs != 4 {
		t.Errorf("environment over file: epochs %d, want 4", cfg.Train.Epochs)
	}
	if cfg, _ = resolve(t, "--config", file, "--epochs", "5"); cfg.Train.Epochs != 5 {
		t.Errorf("flag over environment: epochs %d, want 5", cfg.Train.Epochs)
	}
	if cfg.Train.LR != 0.2 {
		t.Errorf("an unset flag overrode the file: lr %g, want 0.2", cfg.Train.LR)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for body, want := range map[string]string{
		"train:\n  epoch: 3\n":           "train.epoch",
		"train:\n  optimizer: lbfgs\n":   "train.optimizer",
		"data:\n  val_count: -1\n":       "data.val_count",
		"train:\n  epochs: [1, 2]\n":     "epochs",
		"train:\n  label_smoothing: 1\n": "train.label_smoothing",
	} {
		_, err := resolve(t, "--config", writeYAML(t, body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: err = %v, want it to name %s", body, err, want)
		}
	}
	if _, err := resolve(t, "--config", filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing config file: err = %v, want it to name the file", err)
	}
}

// The whole command on the synthetic set, as a user would run it.
func TestTrainCommandEndToEnd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	cfg := writeYAML(t, "data:\n  name: synthetic\n  val_count: 100\nmodel:\n  params:\n    blocks_per_stage: 1\n    alpha: 8\n    stem_channels: 8\ntrain:\n  epochs: 1\n  batch: 32\n")
	root := newRoot("test")
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"train", "--config", cfg, "--run-dir", dir, "--limit", "128"})
	if err := root.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "test accuracy:") || strings.Contains(out.String(), "\r") {
		t.Errorf("output %q: want a test accuracy line and no carriage returns off a terminal", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, pipeline.SummaryFile)); err != nil {
		t.Error(err)
	}
	for _, args := range [][]string{
		{"export", "--run", dir},
		{"export", "--arch", filepath.Join(dir, pipeline.ArchFile), "--weights", filepath.Join(dir, pipeline.WeightsFile),
			"--out", filepath.Join(dir, "other.onnx"), "--mean", "0.5", "--std", "0.25"},
	} {
		root = newRoot("test")
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	for _, f := range []string{pipeline.ModelFile, "other.onnx"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	root = newRoot("test")
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"describe", "--preset", "pyramidnet-cifar10"})
	out.Reset()
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "parameters: 2740368") {
		t.Errorf("describe cifar10 preset: %v, output %q", err, out.String())
	}
}

// countdown is a context whose Err turns to Canceled after n checks, so a
// test interrupts a command at an exact point, as Ctrl-C would.
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

// tinySearchYAML is a search of a few seconds on synthetic data, shared by the
// tests that need a finished search.
const tinySearchYAML = `data:
  name: synthetic
  val_count: 64
search:
  space: {input: [1, 28, 28], classes: 10, channels: 2, cells: 3, nodes: 4, stem_multiplier: 1, stem_stride: 2}
  batch: 32
  warmup_epochs: 1
  iterations: 1
  curvature: mc
  curvature_batches: 1
`

// search (interrupted, then resumed), then train the derived architecture
// from scratch, as the README says.
func TestSearchThenTrainArch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "search")
	cfg := writeYAML(t, tinySearchYAML)
	var out, errOut bytes.Buffer
	run := func(args ...string) {
		t.Helper()
		root := newRoot("test")
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
	}
	root := newRoot("test")
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"search", "--config", cfg, "--run-dir", dir, "--limit", "128"})
	// 4 batches per epoch: the 8th check of the context is in the second epoch.
	if err := root.ExecuteContext(&countdown{Context: context.Background(), n: 7}); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("interrupted search: err = %v, want a cancellation that points to --resume", err)
	}
	out.Reset()
	run("search", "--config", cfg, "--run-dir", dir, "--limit", "128", "--resume")
	for _, f := range []string{"arch.json", "decisions.json", pipeline.SearchLogFile, "supernet.safetensors"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if o := out.String(); !strings.Contains(o, "derived:") || !strings.Contains(o, "curvature 1/1 batch 1/1") || strings.Contains(o, "\r") {
		t.Errorf("search output %q: want progress lines without carriage returns off a terminal and the derived cells", o)
	}
	run("train", "--arch", filepath.Join(dir, "arch.json"), "--data", "synthetic", "--run-dir", filepath.Join(dir, "retrain"),
		"--epochs", "1", "--limit", "64", "--batch", "32", "--val-count", "64")
	bad := writeYAML(t, "search:\n  iteratons: 2\n")
	root = newRoot("test")
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"search", "--config", bad, "--run-dir", filepath.Join(dir, "bad")})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "iteratons") {
		t.Errorf("misspelt search key: err = %v, want it named", err)
	}
}

// The search: section is search.Config's JSON form, which viper does not
// know key by key: BAYESNAS_SEARCH_* must still override the file (a CI job
// sets them), nested keys and lists included, and a bad value names its key.
func TestSearchConfigEnvironment(t *testing.T) {
	file := writeYAML(t, "search:\n  warmup_epochs: 2\n  derive: {threshold: 0.2, relative: true}\n")
	cfg, err := resolveSearch(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Search.WarmupEpochs != 2 || cfg.Search.Derive.Threshold != 0.2 || cfg.Search.Iterations != search.DefaultConfig().Iterations {
		t.Fatalf("file over defaults: warm-up %d threshold %g iterations %d", cfg.Search.WarmupEpochs, cfg.Search.Derive.Threshold, cfg.Search.Iterations)
	}
	t.Setenv("BAYESNAS_SEARCH_WARMUP_EPOCHS", "5")
	t.Setenv("BAYESNAS_SEARCH_DERIVE_THRESHOLD", "0.05")
	t.Setenv("BAYESNAS_SEARCH_CURVATURE", "ggn")
	t.Setenv("BAYESNAS_SEARCH_SPACE_INPUT", "3,32,32")
	t.Setenv("BAYESNAS_SEARCH_TRAIN_OP_BN_AFFINE", "true")
	if cfg, err = resolveSearch(t, "--config", file); err != nil {
		t.Fatal(err)
	}
	s := cfg.Search
	if s.WarmupEpochs != 5 || s.Derive.Threshold != 0.05 || !s.Derive.Relative || s.Curvature != "ggn" ||
		len(s.Space.Input) != 3 || s.Space.Input[0] != 3 || s.Space.Input[2] != 32 || !s.TrainOpBNAffine {
		t.Errorf("environment over file: warm-up %d, derive %+v, curvature %q, input %v, op-BN affine %v",
			s.WarmupEpochs, s.Derive, s.Curvature, s.Space.Input, s.TrainOpBNAffine)
	}
	if cfg, _ = resolveSearch(t, "--config", file, "--space", "pyramid-tree"); cfg.Search.Kind != "pyramid-tree" || cfg.Search.WarmupEpochs != 5 {
		t.Errorf("flag with environment: kind %q warm-up %d", cfg.Search.Kind, cfg.Search.WarmupEpochs)
	}
	t.Setenv("BAYESNAS_SEARCH_ITERATIONS", "three")
	if _, err = resolveSearch(t, "--config", file); err == nil || !strings.Contains(err.Error(), "search.iterations") || !strings.Contains(err.Error(), "BAYESNAS_SEARCH_ITERATIONS") {
		t.Errorf("bad environment value: err = %v, want it to name search.iterations and the variable", err)
	}
}
