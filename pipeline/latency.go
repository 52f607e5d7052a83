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
	"bayesnas/models"
	"bayesnas/nn"
)

// LatencyOptions configure MeasureLatency.
type LatencyOptions struct {
	Model   string // the ONNX model
	Run     string // the compressed run it was exported from (compression.json, arch.json, weights)
	Profile string
	Device  DeviceOptions
}

// DeviceOptions select and drive the device a profile describes: its
// runtime at its thread count and optimisation level, or its plug-in.
type DeviceOptions struct {
	Plugin  string // a plug-in command line; "": the profile's own, or the built-in ONNX Runtime
	Threads int    // built-in ONNX Runtime threads; 0: the profile's
	Library string
	// Rounds loads of a model, each Warmup runs then Repeats timed ones
	// (0: the device's defaults); the median of the rounds' medians is
	// the measured latency.
	Rounds  int
	Warmup  int
	Repeats int
}

// spec is the device of prof as these options amend it.
func (o DeviceOptions) spec(prof *hwprofile.Profile) DeviceSpec {
	spec := DeviceSpec{Plugin: prof.Plugin, Library: o.Library, Threads: prof.Runtime.IntraOpThreads,
		Optimization: prof.Runtime.GraphOptimization}
	if o.Plugin != "" {
		spec.Plugin = strings.Fields(o.Plugin)
	}
	if len(spec.Plugin) > 0 {
		spec.Optimization = ""
	}
	if o.Threads > 0 {
		spec.Threads = o.Threads
	}
	return spec
}

// deviceTimer times models on a profile's device in rounds, the profile's
// reference network beside the model in every round.
type deviceTimer struct {
	dev    hwprofile.Device
	name   string // CPU / runtime, threads
	dir    string // models written to be timed
	ref    string
	proto  hwprofile.Protocol
	rounds int
	n      int // networks written so far
}

// timing is one model's latency over the rounds.
type timing struct {
	MedianMs, P90Ms, ReferenceMs float64
	Repeats                      int
}

func openTimer(ctx context.Context, prof *hwprofile.Profile, profilePath string, o DeviceOptions) (*deviceTimer, error) {
	dev, err := OpenDevice(ctx, o.spec(prof))
	if err != nil {
		return nil, fmt.Errorf("opening the device of %s: %w", profilePath, err)
	}
	t := &deviceTimer{dev: dev, rounds: max(o.Rounds, 1),
		proto: hwprofile.Protocol{Batch: max(prof.Protocol.Batch, 1), Warmup: o.Warmup, Repeats: o.Repeats}}
	di, ri, err := dev.Describe(ctx)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("describing the device: %w", err)
	}
	t.name = fmt.Sprintf("%s / %s %s (%s, %d threads)", cpuName(di), ri.Name, ri.Version, ri.ExecutionProvider, ri.IntraOpThreads)
	if t.dir, err = os.MkdirTemp("", "bayesnas-latency-"); err != nil {
		dev.Close()
		return nil, err
	}
	ref, err := hwprofile.ReferenceNetwork(prof.Protocol.Input)
	if err == nil {
		t.ref = filepath.Join(t.dir, "reference.onnx")
		err = os.WriteFile(t.ref, ref.Marshal(), 0o644)
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("writing the reference network: %w", err)
	}
	return t, nil
}

func (t *deviceTimer) Close() {
	t.dev.Close()
	os.RemoveAll(t.dir)
}

// minRoundMs is the least time a round spends on the model's timed
// inferences: a network of 0.02 ms timed 100 times is 2 ms of timing, and
// its median moves by a third from one round to the next on a shared
// machine.
const minRoundMs = 50

// timeFile times an ONNX model of about expectMs (0: unknown) a round
// (plug-ins run in a directory of their own: the path is made absolute).
func (t *deviceTimer) timeFile(ctx context.Context, path string, expectMs float64) (timing, error) {
	model, err := filepath.Abs(path)
	if err != nil {
		return timing{}, err
	}
	proto := t.proto
	if expectMs > 0 {
		proto.Repeats = max(proto.Repeats, int(minRoundMs/expectMs))
		proto.Warmup = max(proto.Warmup, proto.Repeats/10)
	}
	var medians, p90s, refs []float64
	var tm timing
	for range t.rounds {
		r, err := t.dev.Time(ctx, model, proto)
		if err != nil {
			return timing{}, fmt.Errorf("timing %s: %w", path, err)
		}
		medians, p90s = append(medians, r.MedianMs), append(p90s, r.P90Ms)
		tm.Repeats += r.Repeats
		ref, err := t.dev.Time(ctx, t.ref, t.proto)
		if err != nil {
			return timing{}, fmt.Errorf("timing the reference network: %w", err)
		}
		refs = append(refs, ref.MedianMs)
	}
	tm.MedianMs, tm.P90Ms, tm.ReferenceMs = stats.Median(medians), stats.Median(p90s), stats.Median(refs)
	return tm, nil
}

// timeNetwork exports a network as the export stage would and times it.
func (t *deviceTimer) timeNetwork(ctx context.Context, g *models.Graph, params []*nn.Param, expectMs float64) (timing, error) {
	m, err := hwprofile.Network(g, params)
	if err != nil {
		return timing{}, fmt.Errorf("exporting %s to time it: %w", g.Name, err)
	}
	t.n++
	path := filepath.Join(t.dir, fmt.Sprintf("network-%d.onnx", t.n))
	if err := os.WriteFile(path, m.Marshal(), 0o644); err != nil {
		return timing{}, err
	}
	defer os.Remove(path)
	return t.timeFile(ctx, path, expectMs)
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
	t, err := openTimer(ctx, prof, opt.Profile, opt.Device)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	tm, err := t.timeFile(ctx, opt.Model, pred.TotalMs)
	if err != nil {
		return nil, err
	}
	rep := &hwprofile.LatencyReport{Profile: opt.Profile, Device: t.name, BudgetMs: round6(crep.BudgetMs),
		PredictedMs: round6(pred.TotalMs), Rounds: t.rounds, Batch: t.proto.Batch, ProfileReferenceMs: prof.ReferenceMs,
		MeasuredMs: round6(tm.MedianMs), P90Ms: round6(tm.P90Ms), ReferenceMs: round6(tm.ReferenceMs), Repeats: tm.Repeats}
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
