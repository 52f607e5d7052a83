//go:build cgo

package onnxrt

import (
	"fmt"
	"runtime"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"bayesnas/nn"
)

var env struct {
	sync.Mutex
	lib string // the library the environment was started with; "" before Init
}

// Init loads the ONNX Runtime library at libPath and starts its environment,
// once per process: ONNX Runtime has one environment per process, so a later
// call with another path is an error rather than a silent no-op.
func Init(libPath string) error {
	env.Lock()
	defer env.Unlock()
	if env.lib != "" {
		if env.lib != libPath {
			return fmt.Errorf("ONNX Runtime already loaded from %s; cannot switch to %s in the same process", env.lib, libPath)
		}
		return nil
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("starting ONNX Runtime from %s: %w", libPath, err)
	}
	if v := ort.GetVersion(); v != RuntimeVersion {
		// onnxruntime_go checks the C API version, not the release; a
		// different release would make recorded timings incomparable.
		_ = ort.DestroyEnvironment()
		return fmt.Errorf("ONNX Runtime at %s is version %s, want %s (run scripts/ort.sh)", libPath, v, RuntimeVersion)
	}
	env.lib = libPath
	return nil
}

// Ready says whether ONNX Runtime can be loaded (from configured, as
// InitDefault resolves it), so that a command checks it before it writes
// anything that a validation would follow.
func Ready(configured string) error {
	_, err := InitDefault(configured)
	return err
}

// InitDefault resolves the library with LibraryPath(configured) and calls Init.
func InitDefault(configured string) (string, error) {
	lib, err := LibraryPath(configured)
	if err != nil {
		return "", err
	}
	return lib, Init(lib)
}

// SessionOptions fix how ONNX Runtime runs a model.
type SessionOptions struct {
	// IntraOpThreads is the number of threads one operator may use; 0 means
	// one per CPU. Inter-op parallelism is always 1 (sequential execution).
	IntraOpThreads int
	// Optimization is the graph optimisation level: "all" (the default,
	// with the x86 NCHWc layout rewrite), "extended" (fusions, no layout
	// rewrite), "basic" or "disabled".
	Optimization string
	// OptimizedModelPath, when set, is where ONNX Runtime writes the model
	// as it runs it (after fusions and the NCHWc rewrite), to see which
	// kernels a network really runs.
	OptimizedModelPath string
	// ProfilePrefix, when set, turns on ONNX Runtime's profiler: every
	// node's time in every run goes to a JSON file named from the prefix
	// when the session closes (Session.ProfilePath).
	ProfilePrefix string
}

// optimizationLevels maps the names profiles and reports use to ONNX
// Runtime's levels.
var optimizationLevels = map[string]ort.GraphOptimizationLevel{
	"all": ort.GraphOptimizationLevelEnableAll, "extended": ort.GraphOptimizationLevelEnableExtended,
	"basic": ort.GraphOptimizationLevelEnableBasic, "disabled": ort.GraphOptimizationLevelDisableAll,
}

func (o SessionOptions) level() (ort.GraphOptimizationLevel, error) {
	name := o.Optimization
	if name == "" {
		name = "all"
	}
	l, ok := optimizationLevels[name]
	if !ok {
		return 0, fmt.Errorf("graph optimisation %q: want all, extended, basic or disabled", o.Optimization)
	}
	return l, nil
}

func (o SessionOptions) threads() int {
	if o.IntraOpThreads > 0 {
		return o.IntraOpThreads
	}
	return runtime.NumCPU()
}

// Session is a loaded model with one float input of shape [batch, ...] and
// one float output [batch, ...].
type Session struct {
	s             *ort.DynamicAdvancedSession
	Input, Output string
	InShape       []int64 // per sample
	OutShape      []int64 // per sample
	Threads       int
}

// Open loads modelPath in ONNX Runtime (Init must have been called) with the
// graph optimisations of opts (all of them by default, as a deployment would).
func Open(modelPath string, opts SessionOptions) (*Session, error) {
	if err := nn.CheckWorkers("intra-op threads", opts.IntraOpThreads); err != nil {
		return nil, fmt.Errorf("opening %s: %w", modelPath, err)
	}
	ins, outs, err := ort.GetInputOutputInfo(modelPath)
	if err != nil {
		return nil, fmt.Errorf("opening %s in ONNX Runtime: %w", modelPath, err)
	}
	if len(ins) != 1 || len(outs) != 1 {
		return nil, fmt.Errorf("opening %s: %d inputs and %d outputs, want one of each", modelPath, len(ins), len(outs))
	}
	for _, io := range []ort.InputOutputInfo{ins[0], outs[0]} {
		if io.DataType != ort.TensorElementDataTypeFloat || len(io.Dimensions) < 2 {
			return nil, fmt.Errorf("opening %s: %s, want a float tensor [batch, ...]", modelPath, io.String())
		}
		for _, d := range io.Dimensions[1:] {
			if d < 1 {
				return nil, fmt.Errorf("opening %s: %s has a symbolic dimension besides the batch", modelPath, io.String())
			}
		}
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", modelPath, err)
	}
	defer so.Destroy()
	threads := opts.threads()
	if err := so.SetIntraOpNumThreads(threads); err != nil {
		return nil, fmt.Errorf("opening %s: intra-op threads %d: %w", modelPath, threads, err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("opening %s: %w", modelPath, err)
	}
	if err := so.SetExecutionMode(ort.ExecutionModeSequential); err != nil {
		return nil, fmt.Errorf("opening %s: %w", modelPath, err)
	}
	level, err := opts.level()
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", modelPath, err)
	}
	if err := so.SetGraphOptimizationLevel(level); err != nil {
		return nil, fmt.Errorf("opening %s: %w", modelPath, err)
	}
	if opts.OptimizedModelPath != "" {
		if err := so.SetOptimizedModelFilePath(opts.OptimizedModelPath); err != nil {
			return nil, fmt.Errorf("opening %s: optimized model path: %w", modelPath, err)
		}
	}
	if opts.ProfilePrefix != "" {
		if err := so.EnableProfiling(opts.ProfilePrefix); err != nil {
			return nil, fmt.Errorf("opening %s: profiling: %w", modelPath, err)
		}
	}
	s, err := ort.NewDynamicAdvancedSession(modelPath, []string{ins[0].Name}, []string{outs[0].Name}, so)
	if err != nil {
		return nil, fmt.Errorf("opening %s in ONNX Runtime: %w", modelPath, err)
	}
	return &Session{s: s, Input: ins[0].Name, Output: outs[0].Name,
		InShape: append([]int64(nil), ins[0].Dimensions[1:]...), OutShape: append([]int64(nil), outs[0].Dimensions[1:]...),
		Threads: threads}, nil
}

// Close releases the session.
func (s *Session) Close() error { return s.s.Destroy() }

func prod(d []int64) int64 {
	n := int64(1)
	for _, v := range d {
		n *= v
	}
	return n
}

// Runner runs a session on one batch size with preallocated input and
// output tensors, so that timing measures ONNX Runtime, not allocation.
type Runner struct {
	s       *Session
	batch   int
	in, out *ort.Tensor[float32]
}

// NewRunner prepares tensors for batch samples.
func (s *Session) NewRunner(batch int) (*Runner, error) {
	if batch < 1 {
		return nil, fmt.Errorf("runner: batch %d, want >= 1", batch)
	}
	in, err := ort.NewEmptyTensor[float32](ort.NewShape(append([]int64{int64(batch)}, s.InShape...)...))
	if err != nil {
		return nil, fmt.Errorf("input tensor: %w", err)
	}
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(append([]int64{int64(batch)}, s.OutShape...)...))
	if err != nil {
		in.Destroy()
		return nil, fmt.Errorf("output tensor: %w", err)
	}
	return &Runner{s: s, batch: batch, in: in, out: out}, nil
}

// Input is the input buffer, batch*prod(InShape) values.
func (r *Runner) Input() []float32 { return r.in.GetData() }

// Output is the output buffer, filled by Run.
func (r *Runner) Output() []float32 { return r.out.GetData() }

// Run runs the model on Input into Output.
func (r *Runner) Run() error {
	if err := r.s.s.Run([]ort.Value{r.in}, []ort.Value{r.out}); err != nil {
		return fmt.Errorf("ONNX Runtime run (batch %d): %w", r.batch, err)
	}
	return nil
}

// Close releases the tensors.
func (r *Runner) Close() {
	r.in.Destroy()
	r.out.Destroy()
}

// RunBatch runs n samples from x (n*prod(InShape) values) in chunks of at
// most chunk samples and returns n*prod(OutShape) outputs.
func (s *Session) RunBatch(x []float32, n, chunk int) ([]float32, error) {
	inPer, outPer := int(prod(s.InShape)), int(prod(s.OutShape))
	if len(x) != n*inPer {
		return nil, fmt.Errorf("run: %d input values for %d samples of %v", len(x), n, s.InShape)
	}
	out := make([]float32, n*outPer)
	runners := map[int]*Runner{}
	defer func() {
		for _, r := range runners {
			r.Close()
		}
	}()
	for lo := 0; lo < n; lo += chunk {
		b := min(chunk, n-lo)
		r := runners[b]
		if r == nil {
			var err error
			if r, err = s.NewRunner(b); err != nil {
				return nil, err
			}
			runners[b] = r
		}
		copy(r.Input(), x[lo*inPer:(lo+b)*inPer])
		if err := r.Run(); err != nil {
			return nil, err
		}
		copy(out[lo*outPer:], r.Output())
	}
	return out, nil
}
