package pipeline

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"bayesnas/hwprofile"
	"bayesnas/internal/runlock"
	"bayesnas/internal/testenv"
	"bayesnas/onnxrt"
)

// tinyPipelineConfig is the pipeline at the scale of the other tests: the
// tiny search, one epoch of retraining, l1 compression with one epoch of
// fine-tuning (verified on the device), a short latency measurement. The
// budget is in milliseconds and generous, so that a shared machine's noise cannot fail the export.
func tinyPipelineConfig(run, profile string) PipelineConfig {
	s := tinySearchConfig("")
	tr := tinyConfig("").Train
	tr.Epochs, tr.Optimizer, tr.LR, tr.WeightDecay = 1, "adam", 0.003, 0
	return PipelineConfig{RunDir: run, Seed: s.Seed, Threads: s.Threads, Data: s.Data, Search: s.Search,
		Retrain:  Retrain{Training: tr},
		Device:   PipelineDevice{Profile: profile},
		Budget:   "50ms",
		Compress: PipelineCompress{Method: "l1", Epochs: 1, Multiple: 4, LR: 0.001, Verify: true, VerifyMargin: 0.05, VerifyTries: 2},
		Export:   PipelineExport{TestImages: 64, Rounds: 2, Warmup: 2, Repeats: 10},
	}
}

func started(t *testing.T, m *Manifest) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, s := range m.Stages {
		if s.Status != StatusDone {
			t.Fatalf("stage %s: status %s (%s)", s.Name, s.Status, s.Error)
		}
		out[s.Name] = s.Started
	}
	return out
}

// The pipeline over one run directory: stages chained through the run
// directory, the manifest, skipping what is current, re-running what a
// changed setting touches, exit codes for a bad config, stale inputs, a
// missed budget and a locked directory, and an interrupted stage resumed
// to the result of an uninterrupted one.
func TestPipeline(t *testing.T) {
	if _, err := onnxrt.InitDefault(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	// The search stage reads no profile: the committed one stands in until
	// one is measured for the derived network.
	cfg := tinyPipelineConfig(run, "../profiles/native-1t.yaml")
	man, err := RunPipeline(ctx, cfg, PipelineOptions{Stages: []string{"search"}, ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Stages) != 1 || man.Stages[0].Name != "search" || man.Stages[0].Outputs["train/weights.safetensors"] == "" {
		t.Fatalf("manifest after the search stage: %+v", man.Stages)
	}
	prof := filepath.Join(dir, "p.yaml")
	if _, err := MeasureProfile(ctx, ProfileMeasureOptions{Out: prof, Networks: ProfileNetworks{Runs: []string{filepath.Join(run, TrainDir)}},
		GridStep: 4, Protocol: hwprofile.Protocol{Batch: 1, Warmup: 1, Repeats: 3}, Rounds: 1, ToolVersion: "test", Device: DeviceSpec{Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	cfg.Device.Profile = prof

	// The stages after search need it current: the export alone is stale.
	if _, err := RunPipeline(ctx, cfg, PipelineOptions{Stages: []string{"export"}}); ExitCode(err) != ExitStale {
		t.Fatalf("export before compress: %v (exit %d), want exit %d", err, ExitCode(err), ExitStale)
	}
	man, err = RunPipeline(ctx, cfg, PipelineOptions{ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	first := started(t, man)
	if len(first) != 3 {
		t.Fatalf("manifest: %+v", man.Stages)
	}
	// The report of the whole run, written by the pipeline itself.
	if want := filepath.Join(run, "report.html"); man.Report != want {
		t.Errorf("report %q, want %s", man.Report, want)
	} else if st, err := os.Stat(want); err != nil || st.Size() < 10_000 {
		t.Errorf("report.html: %v, %v", st, err)
	}
	// The report package cannot import this one (this one calls it) and
	// repeats the run directory's names: after a whole run it must find
	// every stage's files.
	if md, err := os.ReadFile(filepath.Join(run, "report.md")); err != nil || strings.Contains(string(md), "is missing") {
		t.Errorf("report.md misses a stage's files (%v):\n%s", err, md)
	}
	onDisk, err := ReadManifest(run)
	if err != nil || len(onDisk.Stages) != 3 || onDisk.Stages[2].OutputsHash != man.Stages[2].OutputsHash || onDisk.Stages[1].InputsHash == "" {
		t.Fatalf("pipeline.json: %+v, %v", onDisk, err)
	}
	for _, f := range []string{"search/arch.json", "train/summary.json", "compress/compression.json", "compress/weights.safetensors",
		"export/model.onnx", "export/validation.json", "export/latency.json"} {
		if _, ok := man.Stage(map[byte]string{'s': "search", 't': "search", 'c': "compress", 'e': "export"}[f[0]]).Outputs[f]; !ok {
			t.Errorf("manifest lacks output %s", f)
		}
	}
	var lat hwprofile.LatencyReport
	b, _ := os.ReadFile(filepath.Join(run, ExportDir, hwprofile.LatencyFile))
	if err := json.Unmarshal(b, &lat); err != nil || lat.Verdict != "pass" || lat.BudgetMs != 50 || !(lat.MeasuredMs > 0) || !(lat.PredictedMs > 0) || lat.Repeats < 20 || lat.Device == "" {
		t.Fatalf("latency.json %s: %v", b, err)
	}
	// compress timed the unpruned network and its selection on the device
	// (compress.verify is on by default).
	var comp CompressionReport
	b, _ = os.ReadFile(filepath.Join(run, CompressDir, CompressionFile))
	if err := json.Unmarshal(b, &comp); err != nil || comp.Verification == nil || len(comp.Verification.Tries) == 0 ||
		!(comp.Verification.BaseMeasuredMs > 0) || !comp.Verification.Tries[comp.Verification.Chosen].MetGoal || comp.BudgetMs != 50 {
		t.Fatalf("compression.json's verification: %+v, %v", comp.Verification, err)
	}

	// Nothing changed: every stage skipped.
	man, err = RunPipeline(ctx, cfg, PipelineOptions{ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range started(t, man) {
		if !s.Equal(first[name]) {
			t.Errorf("second run re-ran %s", name)
		}
	}

	// A compression setting changed: compress and export again, search not.
	cfg.Compress.LR = 0.002
	man, err = RunPipeline(ctx, cfg, PipelineOptions{ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	again := started(t, man)
	if !again["search"].Equal(first["search"]) || again["compress"].Equal(first["compress"]) || again["export"].Equal(first["export"]) {
		t.Errorf("after a compress change: started %v, before %v", again, first)
	}

	// Exit codes: a bad configuration, a budget compress cannot meet, a
	// directory in use.
	for _, c := range []struct {
		name string
		edit func(*PipelineConfig)
		code int
	}{
		{"no budget", func(c *PipelineConfig) { c.Budget = "" }, ExitUsage},
		{"no profile", func(c *PipelineConfig) { c.Device.Profile = filepath.Join(dir, "missing.yaml") }, ExitUsage},
		{"unknown method", func(c *PipelineConfig) { c.Compress.Method = "magic" }, ExitUsage},
	} {
		bad := cfg
		c.edit(&bad)
		if _, err := RunPipeline(ctx, bad, PipelineOptions{}); ExitCode(err) != c.code {
			t.Errorf("%s: %v (exit %d), want exit %d", c.name, err, ExitCode(err), c.code)
		}
	}
	// A measurement over the budget fails the verdict (compress's own
	// missed budget: TestCompressToBudget).
	tight := filepath.Join(dir, "tight")
	if err := os.CopyFS(tight, os.DirFS(filepath.Join(run, CompressDir))); err != nil {
		t.Fatal(err)
	}
	var crep CompressionReport
	b, _ = os.ReadFile(filepath.Join(tight, CompressionFile))
	json.Unmarshal(b, &crep)
	crep.BudgetMs = 1e-6
	if err := writeJSON(filepath.Join(tight, CompressionFile), crep); err != nil {
		t.Fatal(err)
	}
	if lat, err := MeasureLatency(ctx, LatencyOptions{Model: filepath.Join(run, ExportDir, ModelFile), Run: tight, Profile: prof, Device: DeviceOptions{Rounds: 1, Repeats: 3}}); err != nil || lat.Verdict != "fail" {
		t.Errorf("latency over the budget: %+v, %v", lat, err)
	}
	// A fraction budget is checked against the unpruned network timed in
	// the same rounds: a budget of 0.001x of it fails whatever the device's
	// speed now, and the milliseconds follow the unpruned network's.
	crep.Budget = "0.001x"
	if err := writeJSON(filepath.Join(tight, CompressionFile), crep); err != nil {
		t.Fatal(err)
	}
	if lat, err := MeasureLatency(ctx, LatencyOptions{Model: filepath.Join(run, ExportDir, ModelFile), Run: tight, Profile: prof,
		Device: DeviceOptions{Rounds: 1, Repeats: 3}, Unpruned: filepath.Join(run, TrainDir)}); err != nil || lat.Verdict != "fail" ||
		!(lat.UnprunedMs > 0) || math.Abs(lat.BudgetMs-0.001*lat.UnprunedMs) > 1e-6 || lat.Budget != "0.001x" {
		t.Errorf("a fraction budget: %+v, %v", lat, err)
	}

	lock, err := runlock.Acquire(run)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RunPipeline(ctx, cfg, PipelineOptions{}); ExitCode(err) != ExitLocked {
		t.Errorf("locked run directory: %v (exit %d), want exit %d", err, ExitCode(err), ExitLocked)
	}
	lock.Release()

	// The retraining interrupted after two batches, then resumed: the run
	// directory ends as the uninterrupted one did.
	run2 := filepath.Join(dir, "run2")
	cfg2 := tinyPipelineConfig(run2, prof)
	interrupt := func(ctx context.Context, step string) context.Context {
		if step == "train" {
			return &countdown{Context: ctx, n: 2}
		}
		return ctx
	}
	if _, err := RunPipeline(ctx, cfg2, PipelineOptions{Stages: []string{"search"}, stepCtx: interrupt}); err == nil {
		t.Fatal("interrupted retraining: no error")
	}
	m2, err := ReadManifest(run2)
	if err != nil || m2.Stage("search") == nil || m2.Stage("search").Status != StatusFailed {
		t.Fatalf("manifest after the interruption: %+v, %v", m2, err)
	}
	if _, err := os.Stat(filepath.Join(run2, TrainDir, CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := RunPipeline(ctx, cfg2, PipelineOptions{Stages: []string{"search"}}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	for _, f := range []string{"search/arch.json", "train/weights.safetensors"} {
		a, _ := fileHash(filepath.Join(run, f))
		b, _ := fileHash(filepath.Join(run2, f))
		if a == "" || a != b {
			t.Errorf("resumed run: %s differs from the uninterrupted run's", f)
		}
	}
}
