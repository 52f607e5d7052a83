package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/pipeline"
)

// runRoot executes the whole CLI with args and returns its error.
func runRoot(t *testing.T, ctx context.Context, args ...string) error {
	t.Helper()
	root := newRoot("")
	root.SetArgs(args)
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	return root.ExecuteContext(ctx)
}

// Every thread or worker count, from a flag, the config file, a BAYESNAS_*
// variable or a pipeline section, is bounded by nn.MaxWorkers: beyond it is a
// usage error naming the setting, before anything starts.
func TestThreadSettingsBounded(t *testing.T) {
	huge := fmt.Sprint(nn.MaxWorkers() + 1)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"validate", filepath.Join(dir, "m.onnx"), "--run", dir, "--threads", "100000"},
		{"export", "--run", dir, "--threads", huge},
		{"profile", "measure", "--space", "proxy", "--out", filepath.Join(dir, "p.yaml"), "--threads", "100000"},
		{"compress", "--run", dir, "--profile", "x.yaml", "--budget", "0.5x", "--out", dir, "--threads", "-3"},
		{"train", "--config", "../../configs/demo.yaml", "--arch", filepath.Join(dir, "missing.json"), "--run-dir", filepath.Join(dir, "run"), "--threads", "100000"},
	} {
		err := runRoot(t, context.Background(), args...)
		if err == nil || !strings.Contains(err.Error(), "--threads = ") || pipeline.ExitCode(err) != pipeline.ExitUsage {
			t.Errorf("%v: %v (exit %d), want a usage error naming --threads", args, err, pipeline.ExitCode(err))
		}
	}
	if _, err := resolve(t, "--config", writeYAML(t, "threads: 100000\n")); err == nil || !strings.Contains(err.Error(), "threads = 100000") {
		t.Errorf("threads in the config file: %v", err)
	}
	t.Setenv("BAYESNAS_THREADS", huge)
	if _, err := resolveSearch(t, "--config", "../../configs/search-proxy.yaml"); err == nil || !strings.Contains(err.Error(), "threads = "+huge) {
		t.Errorf("BAYESNAS_THREADS=%s: %v", huge, err)
	}
	t.Setenv("BAYESNAS_THREADS", "0")
	t.Setenv("BAYESNAS_DEVICE_THREADS", "100000")
	if _, err := resolvePipeline(t, "--config", "../../configs/pipeline.yaml", "--profile", "../../profiles/native-1t.yaml"); err == nil || !strings.Contains(err.Error(), "device.threads = 100000") {
		t.Errorf("BAYESNAS_DEVICE_THREADS=100000: %v", err)
	}
	// Within the bound, nothing changes.
	t.Setenv("BAYESNAS_DEVICE_THREADS", "0")
	if _, err := resolve(t, "--config", "../../configs/demo.yaml", "--threads", fmt.Sprint(nn.MaxWorkers())); err != nil {
		t.Errorf("--threads %d: %v", nn.MaxWorkers(), err)
	}
}

// export and validate hand the command's context (cancelled by SIGINT and
// SIGTERM in main) to the validation, which checks it between batches.
func TestValidationGetsTheCommandContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, newCmd := range []func() *cobra.Command{newExportCmd, newValidateCmd} {
		cmd := newCmd()
		var got context.Context
		cmd.RunE = func(c *cobra.Command, _ []string) error {
			opt, err := exportOptions(c)
			got = opt.Validation.Context
			return err
		}
		cmd.SetArgs([]string{"--run", "x"})
		cmd.Args = nil
		if err := cmd.ExecuteContext(ctx); err != nil {
			t.Fatal(err)
		}
		if got != ctx {
			t.Errorf("%s: the validation's context is %v, not the command's", cmd.Name(), got)
		}
	}
}

// writeSmallNet writes a small PyramidNet's arch.json and weights into dir.
func writeSmallNet(t *testing.T, dir string) (arch, weights string) {
	t.Helper()
	g, err := models.PyramidNet(models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 4, Groups: 1, StemChannels: 4,
		Input: [3]int{1, 8, 8}, Classes: 3})
	if err != nil {
		t.Fatal(err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	arch, weights = filepath.Join(dir, "arch.json"), filepath.Join(dir, "w.safetensors")
	if err := g.WriteGraph(arch); err != nil {
		t.Fatal(err)
	}
	if err := models.SaveWeights(weights, net.Params, nil); err != nil {
		t.Fatal(err)
	}
	return arch, weights
}

// export refuses a normalisation no deployment could use, naming the flag,
// writes nothing and does not say it wrote the model.
func TestExportRefusesImpossibleNormalisation(t *testing.T) {
	dir := t.TempDir()
	arch, weights := writeSmallNet(t, dir)
	out := filepath.Join(dir, "m.onnx")
	for _, c := range []struct{ mean, std, want string }{
		{"0.3", "0", "--std value 1 is 0"},
		{"0.3", "-0.35", "--std value 1 is -0.35"},
		{"0.3", "NaN", "--std value 1 is NaN"},
		{"0.3", "Inf", "--std value 1 is +Inf"},
		{"NaN", "0.35", "--mean value 1 is NaN"},
		{"0.3,0.2", "0.35", "--mean has 2 values but --std has 1"},
	} {
		root := newRoot("")
		var stdout bytes.Buffer
		root.SetArgs([]string{"export", "--arch", arch, "--weights", weights, "--out", out, "--mean", c.mean, "--std", c.std})
		root.SetOut(&stdout)
		root.SetErr(&bytes.Buffer{})
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) || pipeline.ExitCode(err) != pipeline.ExitUsage {
			t.Errorf("--mean %s --std %s: %v (exit %d), want a usage error containing %q", c.mean, c.std, err, pipeline.ExitCode(err), c.want)
		}
		if _, serr := os.Stat(out); serr == nil || strings.Contains(stdout.String(), "wrote") {
			t.Errorf("--mean %s --std %s: the model was written or said to be (%q)", c.mean, c.std, stdout.String())
		}
	}
	// A normalisation with as many values as the input has channels: one too
	// many is refused by the exporter, and nothing is written either.
	root := newRoot("")
	var stdout bytes.Buffer
	root.SetArgs([]string{"export", "--arch", arch, "--weights", weights, "--out", out, "--mean", "0.3,0.3", "--std", "0.35,0.35"})
	root.SetOut(&stdout)
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "2 means and 2 stds") {
		t.Errorf("two channels of normalisation for one: %v", err)
	}
	if _, serr := os.Stat(out); serr == nil || strings.Contains(stdout.String(), "wrote") {
		t.Errorf("a failed export wrote %s or said so (%q)", out, stdout.String())
	}
	root = newRoot("")
	root.SetArgs([]string{"export", "--arch", arch, "--weights", weights, "--out", out, "--mean", "0.3", "--std", "0.35"})
	root.SetOut(&stdout)
	if err := root.Execute(); err != nil {
		t.Fatalf("a good normalisation: %v", err)
	}
}

// A BAYESNAS_* variable that no command reads is a usage error naming it and
// the nearest known variable, for every command that reads configuration;
// the variables of other commands and the tool's own are accepted.
func TestUnknownEnvironmentVariable(t *testing.T) {
	t.Setenv("BAYESNAS_TRAIN_LERNRATE", "0.05")
	want := "BAYESNAS_TRAIN_LERNRATE is not a setting bayesnas reads; did you mean BAYESNAS_TRAIN_LR (train.lr)?"
	if _, err := resolve(t, "--config", "../../configs/demo.yaml"); err == nil || !strings.Contains(err.Error(), want) || pipeline.ExitCode(err) != pipeline.ExitUsage {
		t.Errorf("train: %v, want a usage error containing %q", err, want)
	}
	if _, err := resolveSearch(t, "--config", "../../configs/search-proxy.yaml"); err == nil || !strings.Contains(err.Error(), "BAYESNAS_TRAIN_LERNRATE") {
		t.Errorf("search: %v", err)
	}
	if _, err := resolvePipeline(t, "--config", "../../configs/pipeline.yaml", "--profile", "../../profiles/native-1t.yaml"); err == nil || !strings.Contains(err.Error(), "BAYESNAS_TRAIN_LERNRATE") {
		t.Errorf("pipeline: %v", err)
	}
	os.Unsetenv("BAYESNAS_TRAIN_LERNRATE")
	t.Setenv("BAYESNAS_SEARCH_DERIVE_TRESHOLD", "0.1")
	if _, err := resolve(t, "--config", "../../configs/demo.yaml"); err == nil || !strings.Contains(err.Error(), "did you mean BAYESNAS_SEARCH_DERIVE_THRESHOLD (search.derive.threshold)") {
		t.Errorf("a misspelt search variable: %v", err)
	}
	os.Unsetenv("BAYESNAS_SEARCH_DERIVE_TRESHOLD")
	for _, v := range []string{"BAYESNAS_TRAIN_LR", "BAYESNAS_SEARCH_DERIVE_THRESHOLD", "BAYESNAS_BUDGET", "BAYESNAS_DEVICE_THREADS",
		"BAYESNAS_RUN_DIR", "BAYESNAS_CACHE", "BAYESNAS_MODEL_PARAMS_ALPHA", "BAYESNAS_SEARCH_SPACE_INPUT"} {
		val := map[string]string{"BAYESNAS_TRAIN_LR": "0.05", "BAYESNAS_SEARCH_DERIVE_THRESHOLD": "0.05", "BAYESNAS_BUDGET": "0.5x",
			"BAYESNAS_DEVICE_THREADS": "1", "BAYESNAS_RUN_DIR": filepath.Join(t.TempDir(), "r"), "BAYESNAS_CACHE": t.TempDir(),
			"BAYESNAS_MODEL_PARAMS_ALPHA": "12", "BAYESNAS_SEARCH_SPACE_INPUT": "1,28,28"}[v]
		t.Setenv(v, val)
	}
	if _, err := resolve(t, "--config", "../../configs/demo.yaml"); err != nil {
		t.Errorf("known variables of every command: %v", err)
	}
}
