package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"bayesnas/compress"
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
	// Unpruned is the trained run the model was compressed from: a
	// fraction budget is checked against it timed beside the model ("":
	// against the budget in milliseconds compression.json recorded).
	Unpruned string
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

// Timing is one model's latency over interleaved rounds: MedianMs the
// lowest of the rounds' medians (RoundMs; hwprofile.StatisticQuietest),
// P90Ms the median of their 90th percentiles, ReferenceMs the reference
// network's quietest round.
type Timing struct {
	MedianMs, P90Ms, ReferenceMs float64
	RoundMs                      []float64
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

// timeFiles times ONNX models of about expectMs each (0: unknown) in the
// given number of interleaved rounds, each round every model once and the reference once,
// so that a slow spell of a shared machine falls on all of them alike
// (plug-ins run in a directory of their own: paths are made absolute).
func (t *deviceTimer) timeFiles(ctx context.Context, paths []string, expectMs []float64, rounds int) ([]Timing, error) {
	models := make([]string, len(paths))
	protos := make([]hwprofile.Protocol, len(paths))
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		models[i], protos[i] = abs, t.proto
		if expectMs[i] > 0 {
			protos[i].Repeats = max(t.proto.Repeats, int(minRoundMs/expectMs[i]))
			protos[i].Warmup = max(t.proto.Warmup, protos[i].Repeats/10)
		}
	}
	medians := make([][]float64, len(paths))
	p90s := make([][]float64, len(paths))
	var refs []float64
	out := make([]Timing, len(paths))
	for range rounds {
		for i, m := range models {
			r, err := t.dev.Time(ctx, m, protos[i])
			if err != nil {
				return nil, fmt.Errorf("timing %s: %w", paths[i], err)
			}
			medians[i], p90s[i] = append(medians[i], r.MedianMs), append(p90s[i], r.P90Ms)
			out[i].Repeats += r.Repeats
		}
		ref, err := t.dev.Time(ctx, t.ref, t.proto)
		if err != nil {
			return nil, fmt.Errorf("timing the reference network: %w", err)
		}
		refs = append(refs, ref.MedianMs)
	}
	for i := range out {
		out[i].MedianMs, out[i].P90Ms, out[i].ReferenceMs = hwprofile.Quietest(medians[i]), stats.Median(p90s[i]), hwprofile.Quietest(refs)
		out[i].RoundMs = medians[i]
	}
	return out, nil
}

// TimeModels times ONNX models on the device of the profile at
// profilePath as o says, in o.Rounds interleaved rounds (o.Repeats timed
// runs each): for benchmarks that compare models already exported.
func TimeModels(ctx context.Context, profilePath string, o DeviceOptions, paths []string) ([]Timing, error) {
	prof, err := hwprofile.Read(profilePath)
	if err != nil {
		return nil, err
	}
	t, err := openTimer(ctx, prof, profilePath, o)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return t.timeFiles(ctx, paths, make([]float64, len(paths)), t.rounds)
}

// writeNetwork exports a network as the export stage would, to be timed.
func (t *deviceTimer) writeNetwork(g *models.Graph, params []*nn.Param) (string, error) {
	m, err := hwprofile.Network(g, params)
	if err != nil {
		return "", fmt.Errorf("exporting %s to time it: %w", g.Name, err)
	}
	t.n++
	path := filepath.Join(t.dir, fmt.Sprintf("network-%d.onnx", t.n))
	return path, os.WriteFile(path, m.Marshal(), 0o644)
}

// MeasureLatency times the model on the profile's device (its runtime at its
// thread count and optimisation level, or its plug-in) in rounds, the
// profile's reference network in each round beside it, and sets the verdict
// against the budget recorded in the run's compression.json. A fraction
// budget (0.5x) is of the unpruned network of opt.Unpruned timed in the same
// rounds, when given: a slow spell of a shared device moves both alike.
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
	var budget compress.Budget
	if crep.Budget != "" {
		if budget, err = compress.ParseBudget(crep.Budget); err != nil {
			return nil, fmt.Errorf("reading %s: %w", filepath.Join(opt.Run, CompressionFile), err)
		}
	}
	t, err := openTimer(ctx, prof, opt.Profile, opt.Device)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	paths, expect := []string{opt.Model}, []float64{pred.TotalMs}
	if budget.Fraction > 0 && opt.Unpruned != "" {
		r, err := loadTrainedRun(opt.Unpruned)
		if err != nil {
			return nil, fmt.Errorf("the unpruned network a %s budget is of: %w", crep.Budget, err)
		}
		path, err := t.writeNetwork(r.g, r.params)
		if err != nil {
			return nil, err
		}
		paths, expect = append(paths, path), append(expect, crep.Before.PredictedMs)
	}
	tms, err := t.timeFiles(ctx, paths, expect, t.rounds)
	if err != nil {
		return nil, err
	}
	tm := tms[0]
	rep := &hwprofile.LatencyReport{Profile: opt.Profile, Device: t.name, Budget: crep.Budget, BudgetMs: round6(crep.BudgetMs),
		PredictedMs: round6(pred.TotalMs), Rounds: t.rounds, Batch: t.proto.Batch, ProfileReferenceMs: prof.ReferenceMs,
		MeasuredMs: round6(tm.MedianMs), P90Ms: round6(tm.P90Ms), ReferenceMs: round6(tm.ReferenceMs), Repeats: tm.Repeats}
	if len(tms) > 1 {
		rep.UnprunedMs = round6(tms[1].MedianMs)
		rep.BudgetMs = round6(budget.Of(tms[1].MedianMs))
	}
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

// timeRun times a trained run's network on the device of the profile at
// profilePath, as the export stage times (o), expecting about expectMs:
// the timing and the device's name.
func timeRun(ctx context.Context, profilePath string, o DeviceOptions, run string, expectMs float64) (Timing, string, error) {
	prof, err := hwprofile.Read(profilePath)
	if err != nil {
		return Timing{}, "", err
	}
	r, err := loadTrainedRun(run)
	if err != nil {
		return Timing{}, "", err
	}
	t, err := openTimer(ctx, prof, profilePath, o)
	if err != nil {
		return Timing{}, "", err
	}
	defer t.Close()
	path, err := t.writeNetwork(r.g, r.params)
	if err != nil {
		return Timing{}, "", err
	}
	tms, err := t.timeFiles(ctx, []string{path}, []float64{expectMs}, t.rounds)
	if err != nil {
		return Timing{}, "", err
	}
	return tms[0], t.name, nil
}
