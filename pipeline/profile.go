package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"bayesnas/export"
	"bayesnas/hwprofile"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/onnxrt"
	"bayesnas/search"
)

// DeviceSpec names the device that times models: a plug-in command, or the
// built-in ONNX Runtime with Threads intra-op threads.
type DeviceSpec struct {
	Plugin         []string
	TimeoutSeconds float64
	Library        string // ONNX Runtime library for the built-in device
	Threads        int
	Optimization   string // its graph optimisation level ("" = all)
}

// openPlugin starts a plug-in device. Arguments that name an existing file
// relative to the working directory are made absolute (the plug-in runs in
// a directory of its own), so a profile can record its plug-in as
// "node plugins/ort-wasm/plugin.mjs" and work from any checkout.
func openPlugin(ctx context.Context, spec DeviceSpec) (hwprofile.Device, error) {
	cmd := slices.Clone(spec.Plugin)
	for i, a := range cmd[1:] {
		if filepath.IsAbs(a) || strings.HasPrefix(a, "-") {
			continue
		}
		if _, err := os.Stat(a); err == nil {
			if abs, err := filepath.Abs(a); err == nil {
				cmd[i+1] = abs
			}
		}
	}
	p, err := hwprofile.OpenPlugin(ctx, hwprofile.PluginSpec{Command: cmd, TimeoutSeconds: spec.TimeoutSeconds})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// OpenDevice starts the device.
func OpenDevice(ctx context.Context, spec DeviceSpec) (hwprofile.Device, error) {
	if len(spec.Plugin) > 0 {
		return openPlugin(ctx, spec)
	}
	threads := spec.Threads
	if threads <= 0 {
		threads = 1
	}
	d, err := onnxrt.NewDevice(spec.Library, threads, spec.Optimization)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// SearchSpace is the space of a search configuration: its derived
// networks are what a profile must price for that search.
func SearchSpace(cfg search.Config) hwprofile.Space {
	if cfg.Kind == search.KindTree {
		return hwprofile.Space{Name: "tree", Tree: cfg.Tree}
	}
	return hwprofile.Space{Name: "proxy", Proxy: cfg.Space}
}

// NamedSpaces looks up hwprofile.NamedSpace for each name.
func NamedSpaces(names []string) ([]hwprofile.Space, error) {
	var out []hwprofile.Space
	for _, n := range names {
		sp, err := hwprofile.NamedSpace(n)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, nil
}

// ProfileNetworks are the networks a profile command works on.
type ProfileNetworks struct {
	// Spaces are the families whose networks the profile must price: the
	// named ones (hwprofile.NamedSpace) and those of search configs
	// (SearchSpace). Each brings its base network and Samples samples.
	Spaces []hwprofile.Space
	// Samples random networks per space (seed SampleSeed) join the base
	// networks: they bring the kernels a derived network has and the base
	// does not (a concat of fewer nodes, an add of fewer terms).
	Samples    int
	SampleSeed uint64
	Archs      []string // architecture files
	Runs       []string // run directories (arch.json and weights.safetensors)
}

func (n ProfileNetworks) models() ([]*export.Model, error) {
	var nets []*export.Model
	add := func(name string, g *models.Graph, params []*nn.Param) error {
		m, err := hwprofile.Network(g, params)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		nets = append(nets, m)
		return nil
	}
	for _, sp := range n.Spaces {
		g, err := sp.Base()
		if err != nil {
			return nil, err
		}
		if err := add("space "+sp.Name, g, nil); err != nil {
			return nil, err
		}
		sample, err := sp.Sample(n.Samples, n.SampleSeed)
		if err != nil {
			return nil, err
		}
		for _, g := range sample {
			if err := add(g.Name, g, nil); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range n.Archs {
		g, err := models.ReadGraph(a)
		if err != nil {
			return nil, err
		}
		if err := add(a, g, nil); err != nil {
			return nil, err
		}
	}
	for _, dir := range n.Runs {
		g, params, err := loadArchWeights(filepath.Join(dir, ArchFile), filepath.Join(dir, WeightsFile))
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", dir, err)
		}
		if err := add(dir, g, params); err != nil {
			return nil, err
		}
	}
	if len(nets) == 0 {
		return nil, fmt.Errorf("no networks: give a space, an architecture file or a run directory")
	}
	return nets, nil
}

// inputOf is the per-sample input shape of an exported model.
func inputOf(m *export.Model) []int {
	var s []int
	for _, d := range m.Graph.Inputs[0].Shape[1:] {
		s = append(s, int(d.Value))
	}
	return s
}

// ProfileMeasureOptions configure MeasureProfile.
type ProfileMeasureOptions struct {
	Out         string
	Networks    ProfileNetworks
	GridStep    int
	Protocol    hwprofile.Protocol
	MissingOnly bool
	// Calibrate whole networks per space (seed Networks.SampleSeed+1) are
	// measured to fit the profile's calibration; 0 leaves it as it is.
	Calibrate int
	// Sessions is how many times each calibration network is loaded and
	// timed, Rounds how many times each kernel is (the quietest round is
	// kept: hwprofile.StatisticQuietest).
	Sessions    int
	Rounds      int
	Device      DeviceSpec
	ToolVersion string
	Progress    io.Writer
	TTY         bool
	Log         *slog.Logger

	afterKernel func(done int) // tests interrupt a measurement here
	chunk       int            // kernels per saved chunk (500 when 0)
}

// The defaults of `bayesnas profile measure`, with which the committed
// profiles were measured: a plan with other values is another set of
// kernels.
const (
	DefaultProfileSamples    = 20
	DefaultProfileSampleSeed = 1000
	DefaultProfileGridStep   = 8
	DefaultProfileCalibrate  = 20
)

// profilePlan is what MeasureProfile times.
type profilePlan struct {
	input    []int
	networks int
	calib    []hwprofile.CheckNet
	jobs     []hwprofile.Job
}

// PlanProfile lists the kernel configurations MeasureProfile would time
// for opt (before skipping those an existing profile holds): every kernel
// of the networks and of the calibration networks, with channel grids.
// Nothing is measured.
func PlanProfile(opt ProfileMeasureOptions) ([]hwprofile.Job, error) {
	pl, err := planProfile(opt)
	if err != nil {
		return nil, err
	}
	return pl.jobs, nil
}

func planProfile(opt ProfileMeasureOptions) (*profilePlan, error) {
	nets, err := opt.Networks.models()
	if err != nil {
		return nil, err
	}
	pl := &profilePlan{input: inputOf(nets[0]), networks: len(nets)}
	for _, m := range nets {
		if !slices.Equal(inputOf(m), pl.input) {
			return nil, fmt.Errorf("networks with inputs %v and %v: a profile is measured for one input size", pl.input, inputOf(m))
		}
	}
	if opt.Calibrate > 0 {
		if pl.calib, err = hwprofile.SampleNets(opt.Networks.Spaces, opt.Calibrate, opt.Networks.SampleSeed+1); err != nil {
			return nil, err
		}
	}
	// The calibration networks' kernels are planned too: they must be
	// priced from the profile like any network.
	planned := slices.Clone(nets)
	for _, c := range pl.calib {
		planned = append(planned, c.Model)
	}
	if pl.jobs, err = hwprofile.Plan(planned, hwprofile.GridOptions{Step: opt.GridStep}); err != nil {
		return nil, err
	}
	return pl, nil
}

// MeasureProfile builds the micro models every kernel of the networks needs
// (with channel grids), times them on the device and writes the profile to
// opt.Out, saving it as it goes: an interrupted measurement is continued
// with MissingOnly, which times only what the file lacks.
func MeasureProfile(ctx context.Context, opt ProfileMeasureOptions) (*hwprofile.Profile, error) {
	if opt.Out == "" {
		return nil, fmt.Errorf("profile measure: no output file (--out)")
	}
	var prof *hwprofile.Profile
	if _, err := os.Stat(opt.Out); err == nil {
		if !opt.MissingOnly {
			return nil, fmt.Errorf("%s exists: give --missing-only to extend it (or another --out)", opt.Out)
		}
		if prof, err = hwprofile.Read(opt.Out); err != nil {
			return nil, err
		}
	}
	pl, err := planProfile(opt)
	if err != nil {
		return nil, err
	}
	input, calib, jobs := pl.input, pl.calib, pl.jobs
	if prof != nil && !slices.Equal(prof.Protocol.Input, input) {
		return nil, fmt.Errorf("%s was measured for input %v, these networks take %v", opt.Out, prof.Protocol.Input, input)
	}
	dev, err := OpenDevice(ctx, opt.Device)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	if opt.Log != nil {
		todo := len(jobs)
		if prof != nil {
			have := map[hwprofile.Key]bool{}
			for _, e := range prof.Entries {
				have[e.Key] = true
			}
			todo = 0
			for _, j := range jobs {
				if !have[j.Key] {
					todo++
				}
			}
		}
		opt.Log.Info("measuring kernels", "kernels", len(jobs), "missing", todo, "networks", pl.networks, "out", opt.Out)
	}
	prog := newProgress(opt.Progress, opt.TTY)
	defer prog.done()
	prof, err = hwprofile.Measure(ctx, dev, jobs, prof, hwprofile.MeasureOptions{
		Protocol: opt.Protocol, Tool: opt.ToolVersion, Input: input, Plugin: opt.Device.Plugin,
		SaveEvery: cmp.Or(opt.chunk, 500), Rounds: opt.Rounds,
		Save: func(p *hwprofile.Profile) error { return p.Write(opt.Out) },
		Progress: func(done, total int, k hwprofile.Key) {
			prog.update(progressStep{Phase: "kernels", I: 1, N: 1, Batch: done, Batches: total, Done: done, Total: total})
			if opt.afterKernel != nil {
				opt.afterKernel(done)
			}
		},
	})
	if errors.Is(err, context.Canceled) {
		return prof, fmt.Errorf("interrupted: %d kernels saved in %s; run again with --missing-only to measure the rest", len(prof.Entries), opt.Out)
	}
	if err != nil || len(calib) == 0 {
		return prof, err
	}
	if err := calibrate(ctx, dev, prof, calib, opt.Protocol, opt.Sessions, prog); err != nil {
		return prof, err
	}
	return prof, prof.Write(opt.Out)
}

// calibrate measures the calibration networks whole (the median over
// sessions loads) and fits the profile's calibration to them: one per
// space, and one over all of them.
func calibrate(ctx context.Context, dev hwprofile.Device, prof *hwprofile.Profile, nets []hwprofile.CheckNet, proto hwprofile.Protocol, sessions int, prog *progress) error {
	dir, err := os.MkdirTemp("", "bayesnas-calibrate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	preds := map[string][]*hwprofile.Prediction{}
	meas := map[string][]float64{}
	var spaces []string
	paths := make([]string, len(nets))
	all := make([]*hwprofile.Prediction, len(nets))
	for i, n := range nets {
		ks, err := hwprofile.Kernels(n.Model)
		if err != nil {
			return err
		}
		if all[i], err = prof.PredictKernels(ks, n.Space); err != nil {
			return fmt.Errorf("calibration network %s: %w", n.Name, err)
		}
		paths[i] = filepath.Join(dir, n.Name+".onnx")
		if err := os.WriteFile(paths[i], n.Model.Marshal(), 0o644); err != nil {
			return err
		}
	}
	ref, err := hwprofile.ReferenceNetwork(prof.Protocol.Input)
	if err != nil {
		return err
	}
	refPath := filepath.Join(dir, "reference.onnx")
	if err := os.WriteFile(refPath, ref.Marshal(), 0o644); err != nil {
		return err
	}
	times, err := hwprofile.TimeRounds(ctx, dev, append(paths, refPath), proto, max(sessions, 1), func(done, total int) {
		prog.update(progressStep{Phase: "calibration", I: 1, N: 1, Batch: done, Batches: total, Done: done, Total: total})
	})
	if err != nil {
		return err
	}
	// The quietest round of each network, at the speed of the profile's
	// entries: the reference's quietest round against ReferenceMs.
	speed := 1.0
	if prof.ReferenceMs > 0 {
		speed = prof.ReferenceMs / hwprofile.Quietest(times[len(nets)])
	}
	for i, n := range nets {
		if _, ok := preds[n.Space]; !ok {
			spaces = append(spaces, n.Space)
		}
		ms := hwprofile.Quietest(times[i]) * speed
		for _, sp := range []string{n.Space, ""} {
			preds[sp], meas[sp] = append(preds[sp], all[i]), append(meas[sp], ms)
		}
	}
	for _, sp := range append(spaces, "") {
		if err := prof.Calibrate(sp, preds[sp], meas[sp]); err != nil {
			return fmt.Errorf("calibrating %q: %w", sp, err)
		}
	}
	return nil
}

// PredictArch prices an architecture file (with its weights when given) on
// a profile.
func PredictArch(prof *hwprofile.Profile, archPath, weightsPath string) (*hwprofile.Prediction, error) {
	var g *models.Graph
	var params []*nn.Param
	var err error
	if weightsPath != "" {
		g, params, err = loadArchWeights(archPath, weightsPath)
	} else {
		g, err = models.ReadGraph(archPath)
	}
	if err != nil {
		return nil, err
	}
	m, err := hwprofile.Network(g, params)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", archPath, err)
	}
	if in := inputOf(m); !slices.Equal(in, prof.Protocol.Input) {
		return nil, fmt.Errorf("%s takes input %v, the profile was measured for %v", archPath, in, prof.Protocol.Input)
	}
	ks, err := hwprofile.Kernels(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", archPath, err)
	}
	pr, err := prof.PredictKernels(ks, hwprofile.SpaceOf(g))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", archPath, err)
	}
	return pr, nil
}

// ProfileCheckOptions configure CheckProfile.
type ProfileCheckOptions struct {
	Profile  string
	Spaces   []hwprofile.Space
	N        int    // networks per space
	Seed     uint64 // their seed; keep it apart from the measurement's
	Protocol hwprofile.Protocol
	Sessions int // loads per network and measurement; the quietest is kept
	Device   DeviceSpec
	Progress io.Writer
	TTY      bool
}

// CheckProfile samples networks from each space, predicts them with the
// profile and measures them whole on the device.
func CheckProfile(ctx context.Context, opt ProfileCheckOptions) (*hwprofile.CheckReport, error) {
	prof, err := hwprofile.Read(opt.Profile)
	if err != nil {
		return nil, err
	}
	nets, err := hwprofile.SampleNets(opt.Spaces, opt.N, opt.Seed)
	if err != nil {
		return nil, err
	}
	if len(opt.Device.Plugin) == 0 {
		// The profile's own plug-in and threads, unless given.
		opt.Device.Plugin = prof.Plugin
	}
	if opt.Device.Threads <= 0 {
		opt.Device.Threads = prof.Runtime.IntraOpThreads
	}
	if opt.Device.Optimization == "" && len(opt.Device.Plugin) == 0 {
		opt.Device.Optimization = prof.Runtime.GraphOptimization
	}
	dev, err := OpenDevice(ctx, opt.Device)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	prog := newProgress(opt.Progress, opt.TTY)
	defer prog.done()
	return hwprofile.Check(ctx, dev, prof, nets, opt.Protocol, opt.Sessions, func(done, total int) {
		prog.update(progressStep{Phase: "networks", I: 1, N: 1, Batch: done, Batches: total, Done: done, Total: total})
	})
}
