package hwprofile_test

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"bayesnas/export"
	"bayesnas/hwprofile"
	"bayesnas/models"
	"bayesnas/nn"
)

// ortWebDir is where plugins/ort-wasm/plugin.mjs looks for onnxruntime-web
// (the directory scripts/ortweb.sh fills).
func ortWebDir() string {
	if d := os.Getenv("BAYESNAS_ORTWEB_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("BAYESNAS_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "bayesnas")
	}
	return filepath.Join(cache, "onnxruntime-web-1.24.1")
}

// missing fails the test in CI, where a missing dependency is a broken
// set-up, and skips it elsewhere.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// smallConvNet writes a small PyramidNet with random weights as ONNX.
func smallConvNet(t *testing.T) string {
	t.Helper()
	g, err := models.PyramidNet(models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 12, Groups: 2, StemChannels: 8,
		Input: [3]int{1, 12, 12}, Classes: 5})
	if err != nil {
		t.Fatal(err)
	}
	specs, err := g.ParamSpecs()
	if err != nil {
		t.Fatal(err)
	}
	params := make([]*nn.Param, len(specs))
	for i, s := range specs {
		params[i] = nn.NewParam(s.Name, s.Kind, s.Shape...)
	}
	export.RandomizeParams(params, 1)
	path := filepath.Join(t.TempDir(), "pyramidnet-small.onnx")
	if err := export.Write(path, g, params, export.Options{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestWasmPlugin times a real model with the reference plug-in,
// onnxruntime-web's WebAssembly backend under Node.
func TestWasmPlugin(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node not found (%v): run scripts/setup.sh (Debian package nodejs)", err)
	}
	dir := ortWebDir()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "onnxruntime-web", "dist", "ort.node.min.mjs")); err != nil {
		missing(t, "onnxruntime-web not installed in %s (%v): run scripts/ortweb.sh", dir, err)
	}
	script, err := filepath.Abs(filepath.Join("..", "plugins", "ort-wasm", "plugin.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	model := smallConvNet(t)

	ctx := context.Background()
	p, err := hwprofile.OpenPlugin(ctx, hwprofile.PluginSpec{Command: []string{node, script, "--threads", "1"}, TimeoutSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	dev, rt, err := p.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device %+v, runtime %+v", dev, rt)
	if rt.Name != "onnxruntime-web" || rt.ExecutionProvider != "wasm" || rt.Version != "1.24.1" || rt.IntraOpThreads != 1 || rt.GraphOptimization != "all" {
		t.Errorf("runtime = %+v; want onnxruntime-web 1.24.1, wasm, 1 thread, optimisation all", rt)
	}
	if dev.Cores < 1 || dev.Name == "" {
		t.Errorf("device = %+v", dev)
	}
	for _, batch := range []int{1, 2} {
		pr := hwprofile.Protocol{Batch: batch, Warmup: 3, Repeats: 15}
		tm, err := p.Time(ctx, model, pr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("batch %d: median %.3f ms, p90 %.3f ms", batch, tm.MedianMs, tm.P90Ms)
		if !(tm.MedianMs > 0) || math.IsInf(tm.MedianMs, 0) || !(tm.P90Ms >= tm.MedianMs) || math.IsInf(tm.P90Ms, 0) || tm.Repeats != pr.Repeats {
			t.Errorf("batch %d: timing %+v", batch, tm)
		}
	}
	// A model it cannot load is refused; the plug-in goes on.
	if _, err := p.Time(ctx, filepath.Join(t.TempDir(), "missing.onnx"), hwprofile.Protocol{Batch: 1, Repeats: 1}); err == nil {
		t.Error("timing a missing model: no error")
	}
	if _, err := p.Predict(ctx, model, 1); !errors.Is(err, hwprofile.ErrUnsupported) {
		t.Errorf("Predict: %v; want ErrUnsupported", err)
	}
	if _, err := p.Time(ctx, model, hwprofile.Protocol{Batch: 1, Repeats: 3}); err != nil {
		t.Errorf("Time after a refused request: %v", err)
	}
	// A path is read anew for every request: a measurement writes one
	// kernel's model after another, and a plug-in that kept the first
	// session of a path would time the first kernel every time.
	b, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(model, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Time(ctx, model, hwprofile.Protocol{Batch: 1, Repeats: 3}); err == nil {
		t.Error("timing a model overwritten with half its bytes: no error (the plug-in timed what it had loaded before)")
	}
}
