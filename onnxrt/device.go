//go:build cgo

package onnxrt

import (
	"context"
	"fmt"
	"math/rand/v2"

	"bayesnas/hwprofile"
	"bayesnas/nn"
)

// Device is ONNX Runtime in this process as a hwprofile.Device: the
// built-in device that profiles are measured on when no plug-in is named.
// Sessions run as Open sets them up (sequential execution, all graph
// optimisations), with IntraOpThreads threads.
type Device struct {
	Library      string
	Threads      int
	Optimization string // graph optimisation level, see SessionOptions
}

// NewDevice loads the library (see LibraryPath) and returns the device.
func NewDevice(configured string, threads int, optimization string) (*Device, error) {
	if err := nn.CheckWorkers("threads", threads); err != nil {
		return nil, fmt.Errorf("ONNX Runtime device: %w", err)
	}
	lib, err := InitDefault(configured)
	if err != nil {
		return nil, err
	}
	o := SessionOptions{IntraOpThreads: threads, Optimization: optimization}
	if _, err := o.level(); err != nil {
		return nil, err
	}
	if o.Optimization == "" {
		o.Optimization = "all"
	}
	return &Device{Library: lib, Threads: o.threads(), Optimization: o.Optimization}, nil
}

// Describe implements hwprofile.Device.
func (d *Device) Describe(context.Context) (hwprofile.DeviceInfo, hwprofile.RuntimeInfo, error) {
	return hwprofile.ThisMachine(), hwprofile.RuntimeInfo{Name: "onnxruntime", Version: RuntimeVersion,
		ExecutionProvider: "cpu", IntraOpThreads: d.Threads, InterOpThreads: 1, GraphOptimization: d.Optimization}, nil
}

// Time implements hwprofile.Device: the model is loaded once, its input
// filled with N(0,1) values, then run p.Warmup + p.Repeats times.
func (d *Device) Time(ctx context.Context, modelPath string, p hwprofile.Protocol) (hwprofile.Timing, error) {
	if err := ctx.Err(); err != nil {
		return hwprofile.Timing{}, err
	}
	if p.Batch < 1 || p.Repeats < 1 || p.Warmup < 0 {
		return hwprofile.Timing{}, fmt.Errorf("timing %s: protocol %+v: want batch >= 1, repeats >= 1, warmup >= 0", modelPath, p)
	}
	s, err := Open(modelPath, SessionOptions{IntraOpThreads: d.Threads, Optimization: d.Optimization})
	if err != nil {
		return hwprofile.Timing{}, err
	}
	defer s.Close()
	r, err := s.NewRunner(p.Batch)
	if err != nil {
		return hwprofile.Timing{}, fmt.Errorf("timing %s: %w", modelPath, err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	in := r.Input()
	for i := range in {
		in[i] = float32(rng.NormFloat64())
	}
	med, p90, err := timeRuns(ctx, p.Warmup, p.Repeats, r.Run)
	if err != nil {
		return hwprofile.Timing{}, fmt.Errorf("timing %s: %w", modelPath, err)
	}
	return hwprofile.Timing{MedianMs: med, P90Ms: p90, Repeats: p.Repeats}, nil
}

// Close implements hwprofile.Device; the runtime stays loaded for the process.
func (d *Device) Close() error { return nil }

var _ hwprofile.Device = (*Device)(nil)
