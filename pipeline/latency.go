package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"bayesnas/hwprofile"
	"bayesnas/internal/stats"
)

// LatencyOptions configure MeasureLatency.
type LatencyOptions struct {
	Model   string // the ONNX model
	Run     string // the compressed run it was exported from (compression.json, arch.json, weights)
	Profile string
	Plugin  string // a plug-in command line; "": the profile's own, or the built-in ONNX Runtime
	Threads int    // built-in ONNX Runtime threads; 0: the profile's
	Library string
	Rounds  int
	Warmup  int
	Repeats int
}

// MeasureLatency times the model on the profile's device (its runtime at its
// thread count and optimisation level, or its plug-in) in rounds, the
// profile's reference network in each round beside it, and sets the verdict
// against the budget recorded in the run's compression.json.
func MeasureLatency(ctx context.Context, opt LatencyOptions) (*hwprofile.LatencyReport, error) {
	prof, err := hwprofile.Read(opt.Profile)
	if err != nil {
		return nil, err
	}
	var crep CompressionReport
	b, err := os.ReadFile(filepath.Join(opt.Run, CompressionFile))
	if err != nil {
		return nil, Mark(ErrStale, fmt.Errorf("latency budget: %w (the compress stage's output)", err))
	}
	if err := json.Unmarshal(b, &crep); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(opt.Run, CompressionFile), err)
	}
	pred, err := PredictArch(prof, filepath.Join(opt.Run, ArchFile), filepath.Join(opt.Run, WeightsFile))
	if err != nil {
		return nil, fmt.Errorf("predicting the exported network on %s: %w", opt.Profile, err)
	}
	spec := DeviceSpec{Plugin: prof.Plugin, Library: opt.Library, Threads: prof.Runtime.IntraOpThreads,
		Optimization: prof.Runtime.GraphOptimization}
	if opt.Plugin != "" {
		spec.Plugin = strings.Fields(opt.Plugin)
	}
	if len(spec.Plugin) > 0 {
		spec.Optimization = ""
	}
	if opt.Threads > 0 {
		spec.Threads = opt.Threads
	}
	dev, err := OpenDevice(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("opening the device of %s: %w", opt.Profile, err)
	}
	defer dev.Close()
	di, ri, err := dev.Describe(ctx)
	if err != nil {
		return nil, fmt.Errorf("describing the device: %w", err)
	}
	dir, err := os.MkdirTemp("", "bayesnas-latency-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ref, err := hwprofile.ReferenceNetwork(prof.Protocol.Input)
	if err != nil {
		return nil, err
	}
	refPath, err := filepath.Abs(filepath.Join(dir, "reference.onnx"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(refPath, ref.Marshal(), 0o644); err != nil {
		return nil, fmt.Errorf("writing the reference network: %w", err)
	}
	// Plug-ins run in a directory of their own: absolute paths.
	model, err := filepath.Abs(opt.Model)
	if err != nil {
		return nil, err
	}
	proto := hwprofile.Protocol{Batch: max(prof.Protocol.Batch, 1), Warmup: opt.Warmup, Repeats: opt.Repeats}
	var medians, p90s, refs []float64
	rep := &hwprofile.LatencyReport{Profile: opt.Profile, BudgetMs: crep.BudgetMs, PredictedMs: pred.TotalMs,
		Rounds: max(opt.Rounds, 1), Batch: proto.Batch, ProfileReferenceMs: prof.ReferenceMs,
		Device: fmt.Sprintf("%s / %s %s (%s, %d threads)", cpuName(di), ri.Name, ri.Version, ri.ExecutionProvider, ri.IntraOpThreads)}
	for range rep.Rounds {
		t, err := dev.Time(ctx, model, proto)
		if err != nil {
			return nil, fmt.Errorf("timing %s: %w", opt.Model, err)
		}
		medians, p90s = append(medians, t.MedianMs), append(p90s, t.P90Ms)
		rep.Repeats += t.Repeats
		r, err := dev.Time(ctx, refPath, proto)
		if err != nil {
			return nil, fmt.Errorf("timing the reference network: %w", err)
		}
		refs = append(refs, r.MedianMs)
	}
	rep.MeasuredMs, rep.P90Ms, rep.ReferenceMs = round6(stats.Median(medians)), round6(stats.Median(p90s)), round6(stats.Median(refs))
	rep.PredictedMs, rep.BudgetMs = round6(rep.PredictedMs), round6(rep.BudgetMs)
	rep.Verdict = "pass"
	if rep.MeasuredMs > rep.BudgetMs {
		rep.Verdict = "fail"
	}
	return rep, nil
}

func cpuName(d hwprofile.DeviceInfo) string {
	if d.CPU != "" {
		return d.CPU
	}
	return d.Name
}

func round6(v float64) float64 { return float64(int64(v*1e6+0.5)) / 1e6 }
