// Package hwprofile holds device latency profiles: plain YAML files that
// price every kernel of a network as one runtime on one device executes it,
// the devices that measure them (the built-in ONNX Runtime, or a vendor's
// plug-in speaking a JSON-lines protocol), and prediction of a whole
// network's latency from a profile.
package hwprofile

import "context"

// Device runs ONNX models and times them. The built-in one is ONNX Runtime
// in this process; a plug-in is an executable that speaks the protocol in
// PLUGINS.md.
type Device interface {
	// Describe says what the device and its runtime are; recorded in every
	// profile measured on it.
	Describe(ctx context.Context) (DeviceInfo, RuntimeInfo, error)
	// Time loads the ONNX model at modelPath (an absolute path) and times
	// inference at the protocol's batch size with random inputs.
	Time(ctx context.Context, modelPath string, p Protocol) (Timing, error)
	// Close releases the device (stops a plug-in process).
	Close() error
}

// DeviceInfo describes the machine a profile was measured on.
type DeviceInfo struct {
	Name     string `yaml:"name" json:"name"`
	CPU      string `yaml:"cpu" json:"cpu"`
	Cores    int    `yaml:"cores" json:"cores"`
	Governor string `yaml:"governor,omitempty" json:"governor,omitempty"`
}

// RuntimeInfo describes the runtime that executed the kernels: timings of
// another runtime, version, thread count or optimisation level are not
// comparable (nn-Meter's users saw 1.5x between benchmark tool versions).
type RuntimeInfo struct {
	Name              string `yaml:"name" json:"name"`
	Version           string `yaml:"version" json:"version"`
	ExecutionProvider string `yaml:"execution_provider" json:"execution_provider"`
	IntraOpThreads    int    `yaml:"intra_op_threads" json:"intra_op_threads"`
	InterOpThreads    int    `yaml:"inter_op_threads" json:"inter_op_threads"`
	GraphOptimization string `yaml:"graph_optimization" json:"graph_optimization"`
}

// Protocol is how one model is timed: Warmup untimed runs, then Repeats
// timed runs, each one inference on a batch of Batch random inputs.
type Protocol struct {
	Batch   int `yaml:"batch" json:"batch"`
	Warmup  int `yaml:"warmup" json:"warmup"`
	Repeats int `yaml:"repeats" json:"repeats"`
}

// Timing is the outcome of timing one model, per inference, in milliseconds.
type Timing struct {
	MedianMs float64 `json:"median_ms"`
	P90Ms    float64 `json:"p90_ms"`
	Repeats  int     `json:"repeats"`
}
