package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

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
