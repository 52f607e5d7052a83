package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"bayesnas/export"
	"bayesnas/hwprofile"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/onnxrt"
)

// DeviceSpec names the device that times models: a plug-in command, or the
// built-in ONNX Runtime with Threads intra-op threads.
type DeviceSpec struct {
	Plugin         []string
	TimeoutSeconds float64
	Library        string // ONNX Runtime library for the built-in device
	Threads        int
}

// openPlugin starts a plug-in device.
func openPlugin(ctx context.Context, spec DeviceSpec) (hwprofile.Device, error) {
	return nil, fmt.Errorf("plug-in %v: not supported yet", spec.Plugin)
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
	d, err := onnxrt.NewDevice(spec.Library, threads)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// ProfileNetworks are the networks a profile command works on.
type ProfileNetworks struct {
	Spaces []string // hwprofile.Spaces entries: the space's base network
	// Samples random networks per space (seed SampleSeed) join the base
	// networks: they bring the kernels a derived network has and the base
	// does not (a concat of fewer nodes, an add of fewer terms).
	Samples    int
	SampleSeed uint64
	Archs      []string // architecture files
	Runs       []string // run directories (arch.json and weights.safetensors)
}

func (n ProfileNetworks) models() ([]*export.Model, []string, error) {
	var nets []*export.Model
	var names []string
	add := func(name string, g *models.Graph, params []*nn.Param) error {
		m, err := hwprofile.Network(g, params)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		nets, names = append(nets, m), append(names, name)
		return nil
	}
	for _, s := range n.Spaces {
		g, err := hwprofile.Base(s)
		if err != nil {
			return nil, nil, err
		}
		if err := add("space "+s, g, nil); err != nil {
			return nil, nil, err
		}
		sample, err := hwprofile.Sample(s, n.Samples, n.SampleSeed)
		if err != nil {
			return nil, nil, err
		}
		for _, g := range sample {
			if err := add(g.Name, g, nil); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, a := range n.Archs {
		g, err := models.ReadGraph(a)
		if err != nil {
			return nil, nil, err
		}
		if err := add(a, g, nil); err != nil {
			return nil, nil, err
		}
	}
	for _, dir := range n.Runs {
		g, params, err := loadArchWeights(filepath.Join(dir, ArchFile), filepath.Join(dir, WeightsFile))
		if err != nil {
			return nil, nil, fmt.Errorf("run %s: %w", dir, err)
		}
		if err := add(dir, g, params); err != nil {
			return nil, nil, err
		}
	}
	if len(nets) == 0 {
		return nil, nil, fmt.Errorf("no networks: give a space, an architecture file or a run directory")
	}
	return nets, names, nil
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
	Device      DeviceSpec
	ToolVersion string
	Progress    io.Writer
	TTY         bool
	Log         *slog.Logger
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
	nets, _, err := opt.Networks.models()
	if err != nil {
		return nil, err
	}
	input := inputOf(nets[0])
	for _, m := range nets {
		if !slices.Equal(inputOf(m), input) {
			return nil, fmt.Errorf("networks with inputs %v and %v: a profile is measured for one input size", input, inputOf(m))
		}
	}
	if prof != nil && !slices.Equal(prof.Protocol.Input, input) {
		return nil, fmt.Errorf("%s was measured for input %v, these networks take %v", opt.Out, prof.Protocol.Input, input)
	}
	jobs, err := hwprofile.Plan(nets, hwprofile.GridOptions{Step: opt.GridStep})
	if err != nil {
		return nil, err
	}
	dev, err := OpenDevice(ctx, opt.Device)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	if opt.Log != nil {
		opt.Log.Info("measuring kernels", "kernels", len(jobs), "networks", len(nets), "out", opt.Out)
	}
	prog := newProgress(opt.Progress, opt.TTY)
	defer prog.done()
	prof, err = hwprofile.Measure(ctx, dev, jobs, prof, hwprofile.MeasureOptions{
		Protocol: opt.Protocol, Tool: opt.ToolVersion, Input: input, SaveEvery: 50,
		Save: func(p *hwprofile.Profile) error { return p.Write(opt.Out) },
		Progress: func(done, total int, k hwprofile.Key) {
			prog.update(progressStep{Phase: "kernels", I: 1, N: 1, Batch: done, Batches: total, Done: done, Total: total})
		},
	})
	if errors.Is(err, context.Canceled) {
		return prof, fmt.Errorf("interrupted: %d kernels saved in %s; run again with --missing-only to measure the rest", len(prof.Entries), opt.Out)
	}
	return prof, err
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
	pr, err := prof.PredictKernels(ks)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", archPath, err)
	}
	return pr, nil
}

// ProfileCheckOptions configure CheckProfile.
type ProfileCheckOptions struct {
	Profile  string
	Spaces   []string
	N        int    // networks per space
	Seed     uint64 // their seed; keep it apart from the measurement's
	Protocol hwprofile.Protocol
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
	var nets []hwprofile.CheckNet
	for _, s := range opt.Spaces {
		gs, err := hwprofile.Sample(s, opt.N, opt.Seed)
		if err != nil {
			return nil, err
		}
		for _, g := range gs {
			m, err := hwprofile.Network(g, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", g.Name, err)
			}
			nets = append(nets, hwprofile.CheckNet{Space: s, Name: g.Name, Model: m})
		}
	}
	dev, err := OpenDevice(ctx, opt.Device)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	prog := newProgress(opt.Progress, opt.TTY)
	defer prog.done()
	return hwprofile.Check(ctx, dev, prof, nets, opt.Protocol, func(done, total int) {
		prog.update(progressStep{Phase: "networks", I: 1, N: 1, Batch: done, Batches: total, Done: done, Total: total})
	})
}
