package pipeline

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/hwprofile"
	"bayesnas/internal/testenv"
	"bayesnas/onnxrt"
	"bayesnas/report"
	"bayesnas/search"
)

// A latency-aware search stage on a profile measured for its space: with a
// target under what the same search derives without one, the derived
// network's prediction meets it, the retrained network is timed on the
// device beside it (search/search_latency.json), every op's price is in
// decisions.json, and the stage is current afterwards (nothing re-runs).
func TestLatencyAwareSearchStage(t *testing.T) {
	if _, err := onnxrt.InitDefault(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	base := tinyPipelineConfig("", "")
	prof := filepath.Join(dir, "p.yaml")
	if _, err := MeasureProfile(ctx, ProfileMeasureOptions{Out: prof,
		Networks: ProfileNetworks{Spaces: []hwprofile.Space{{Name: "proxy", Proxy: base.Search.Space}}, Samples: 4, SampleSeed: 1},
		Protocol: hwprofile.Protocol{Batch: 1, Warmup: 1, Repeats: 3}, Rounds: 1, ToolVersion: "test", Device: DeviceSpec{Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	config := func(name string, lc search.LatencyConfig) PipelineConfig {
		cfg := tinyPipelineConfig(filepath.Join(dir, name), prof)
		cfg.Search.Latency = lc
		cfg.Search.Derive = search.DeriveConfig{Threshold: 1e-3, Relative: true} // keep convolutions for the target to drop
		cfg.Export.Rounds, cfg.Export.Repeats = 1, 5
		return cfg
	}
	run := func(name string, lc search.LatencyConfig) search.LatencyReport {
		t.Helper()
		cfg := config(name, lc)
		if _, err := RunPipeline(ctx, cfg, PipelineOptions{Stages: []string{"search"}, ToolVersion: "test"}); err != nil {
			t.Fatal(err)
		}
		var rep search.LatencyReport
		b, err := os.ReadFile(filepath.Join(cfg.RunDir, SearchDir, search.LatencyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		if !(rep.PredictedMs > 0) || !(rep.MeasuredMs > 0) || rep.Device == "" || rep.Statistic != hwprofile.StatisticQuietest || rep.Profile != prof {
			t.Errorf("%s: %s", name, b)
		}
		return rep
	}
	free := run("free", search.LatencyConfig{Weight: 1})
	target := 0.8 * free.PredictedMs
	capped := run("target", search.LatencyConfig{TargetMs: target})
	t.Logf("without a target: predicted %.4f ms, measured %.4f; target %.4f: predicted %.4f, measured %.4f, %d ops dropped", free.PredictedMs, free.MeasuredMs, target, capped.PredictedMs, capped.MeasuredMs, len(capped.Dropped))
	if capped.MeasuredMet == nil || *capped.MeasuredMet != (capped.MeasuredMs <= target) || free.MeasuredMet != nil {
		t.Errorf("measured_met: %v with a target (measured %g, target %g), %v without one", capped.MeasuredMet, capped.MeasuredMs, target, free.MeasuredMet)
	}
	if !capped.Met || capped.PredictedMs > target || len(capped.Dropped) == 0 {
		t.Errorf("target %g ms (the search without one: %g): report %+v", target, free.PredictedMs, capped)
	}
	var d search.Derivation
	b, _ := os.ReadFile(filepath.Join(dir, "target", SearchDir, "decisions.json"))
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if op := d.Table.Cells[0].Edges[0].Ops[0]; op.Op != "sep_conv_3x3" || !(op.LatencyMs > 0) {
		t.Errorf("decisions.json's first op: %+v, want sep_conv_3x3 with its latency", op)
	}
	// The report says what the search aimed at and what it got.
	if _, err := report.Write(filepath.Join(dir, "target")); err != nil {
		t.Fatal(err)
	}
	if md, err := os.ReadFile(filepath.Join(dir, "target", "report.md")); err != nil || !strings.Contains(string(md), "Latency-aware on "+prof) ||
		!strings.Contains(string(md), "(met;") || !strings.Contains(string(md), "Retrained, it measured") {
		t.Errorf("report.md lacks the search's latency (%v):\n%s", err, md)
	}
	// Unchanged, the stage is current: nothing re-runs, nothing is re-timed.
	cfg := config("target", search.LatencyConfig{TargetMs: target})
	before, _ := os.Stat(filepath.Join(cfg.RunDir, SearchDir, search.LatencyFile))
	man, err := RunPipeline(ctx, cfg, PipelineOptions{Stages: []string{"search"}, ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(cfg.RunDir, SearchDir, search.LatencyFile))
	if !after.ModTime().Equal(before.ModTime()) || man.Stage("search").Status != StatusDone {
		t.Errorf("an unchanged latency-aware search stage ran again")
	}
}
