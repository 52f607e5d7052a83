package onnxrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"bayesnas/internal/atomicfile"
	"bayesnas/models"
	"bayesnas/nn"
)

// ReportFile is the name Validate's report gets in a run directory.
const ReportFile = "validation.json"

// ErrTolerance is wrapped by Validate's error when ONNX Runtime and the
// engine disagree beyond the tolerance (the report is returned as well).
var ErrTolerance = errors.New("ONNX Runtime and the engine disagree beyond tolerance")

// ValidateOptions configure Validate; zero values take the defaults shown.
type ValidateOptions struct {
	// Library is the configured library path (see LibraryPath); "" looks
	// at $ONNXRUNTIME_LIB and the cache directory.
	Library string
	// Threads is both ONNX Runtime's intra-op thread count and the engine's
	// worker count, so the two are timed on equal terms; 0: one per CPU.
	Threads int
	// Backend is the engine's backend (nn/backends: auto, cpu, reference),
	// the run's `backend` setting as training, search and compression use
	// it; "" is auto.
	Backend string
	// Batch is the chunk size for comparisons and the second timed batch
	// size (the first is 1); default 64.
	Batch int
	// Warmup and Repeats are the timing protocol: Warmup untimed runs, then
	// Repeats timed ones; defaults 5 and 30.
	Warmup, Repeats int
	// RandomInputs is how many N(0,1) inputs to compare besides the real
	// images; default 64. Seed seeds them.
	RandomInputs int
	Seed         uint64
	// RTol and ATol: an output passes when |ort-ours| <= ATol + RTol*|ours|;
	// defaults 1e-3 and 1e-5.
	RTol, ATol float64
	// SkipTiming leaves Latency empty (for quick checks).
	SkipTiming bool
	// Context, when set, stops a validation early (Ctrl-C, SIGTERM): Validate
	// checks it between batches and timed runs and returns its error.
	Context context.Context
}

func (o *ValidateOptions) defaults() {
	if o.Batch <= 0 {
		o.Batch = 64
	}
	if o.Warmup <= 0 {
		o.Warmup = 5
	}
	if o.Repeats <= 0 {
		o.Repeats = 30
	}
	if o.RandomInputs <= 0 {
		o.RandomInputs = 64
	}
	if o.RTol <= 0 {
		o.RTol = 1e-3
	}
	if o.ATol <= 0 {
		o.ATol = 1e-5
	}
}

// Report is the outcome of Validate, written as JSON into the run directory.
type Report struct {
	Model       string       `json:"model"`
	Runtime     RuntimeInfo  `json:"runtime"`
	Engine      string       `json:"engine"`
	Tolerance   Tolerance    `json:"tolerance"`
	Softmax     bool         `json:"softmax_output"`
	Real        *Comparison  `json:"real_images,omitempty"`
	Random      *Comparison  `json:"random_inputs"`
	Latency     []Latency    `json:"latency,omitempty"`
	Passed      bool         `json:"passed"`
	Failures    []string     `json:"failures,omitempty"`
	GeneratedAt time.Time    `json:"generated_at"`
	Timing      TimingMethod `json:"timing_method"`
}

// RuntimeInfo records what ran the model, since timings mean nothing without it.
type RuntimeInfo struct {
	Name           string `json:"name"`
	Version        string `json:"version"`
	Library        string `json:"library"`
	IntraOpThreads int    `json:"intra_op_threads"`
	InterOpThreads int    `json:"inter_op_threads"`
	Optimization   string `json:"graph_optimization"`
}

// Tolerance is the pass rule |ort-ours| <= ATol + RTol*|ours|.
type Tolerance struct {
	RTol float64 `json:"rtol"`
	ATol float64 `json:"atol"`
}

// TimingMethod records the latency protocol.
type TimingMethod struct {
	Warmup  int    `json:"warmup"`
	Repeats int    `json:"repeats"`
	Clock   string `json:"clock"`
}

// Comparison is ONNX Runtime against the engine on one set of inputs.
type Comparison struct {
	Inputs int `json:"inputs"`
	// MaxAbsErr is max |ort-ours|; MaxRelErr is max |ort-ours|/|ours| over
	// outputs with ours != 0 (large where logits are near zero, which is
	// why the pass rule also has an absolute part).
	MaxAbsErr  float64 `json:"max_abs_err"`
	MaxRelErr  float64 `json:"max_rel_err"`
	Violations int     `json:"violations"` // outputs beyond tolerance
	Worst      string  `json:"worst,omitempty"`
	// Top1Agreement is the fraction of inputs whose argmax agrees.
	Top1Agreement float64 `json:"top1_agreement"`
	// AccuracyOurs and AccuracyORT are top-1 accuracies against the
	// labels (real images only).
	AccuracyOurs *float64 `json:"accuracy_ours,omitempty"`
	AccuracyORT  *float64 `json:"accuracy_ort,omitempty"`
}

// Latency is one runtime's timing at one batch size, per batch.
type Latency struct {
	Runtime      string  `json:"runtime"` // "onnxruntime" or "bayesnas"
	Batch        int     `json:"batch"`
	MedianMs     float64 `json:"median_ms"`
	P90Ms        float64 `json:"p90_ms"`
	ImagesPerSec float64 `json:"images_per_sec"` // batch / median
	Threads      int     `json:"threads"`
}

// WriteJSON writes the report atomically.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return atomicfile.Write(path, append(b, '\n'))
}

// Table prints a short human summary.
func (r *Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model\t%s\n", r.Model)
	fmt.Fprintf(tw, "runtime\t%s %s, %d intra-op threads; engine %s\n", r.Runtime.Name, r.Runtime.Version, r.Runtime.IntraOpThreads, r.Engine)
	fmt.Fprintf(tw, "inputs\tn\tmax abs err\tmax rel err\tviolations\ttop-1 agree\taccuracy ours / ort\n")
	for _, c := range []struct {
		name string
		c    *Comparison
	}{{"real images", r.Real}, {"random", r.Random}} {
		if c.c == nil {
			continue
		}
		acc := "-"
		if c.c.AccuracyOurs != nil {
			acc = fmt.Sprintf("%.4f / %.4f", *c.c.AccuracyOurs, *c.c.AccuracyORT)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.3g\t%.3g\t%d\t%.4f\t%s\n", c.name, c.c.Inputs, c.c.MaxAbsErr, c.c.MaxRelErr, c.c.Violations, c.c.Top1Agreement, acc)
	}
	if len(r.Latency) > 0 {
		fmt.Fprintf(tw, "latency\tbatch\tmedian ms\tp90 ms\timages/s\n")
		for _, l := range r.Latency {
			fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.0f\n", l.Runtime, l.Batch, l.MedianMs, l.P90Ms, l.ImagesPerSec)
		}
	}
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL: " + strings.Join(r.Failures, "; ")
	}
	fmt.Fprintf(tw, "result\t%s (rtol %g, atol %g)\n", verdict, r.Tolerance.RTol, r.Tolerance.ATol)
	return tw.Flush()
}

// Compare measures got (ONNX Runtime) against want (the engine), n rows of
// per values each; labels (may be nil) give accuracies.
func Compare(got, want []float32, n, per int, labels []int32, tol Tolerance) (*Comparison, error) {
	if len(got) != n*per || len(want) != n*per {
		return nil, fmt.Errorf("compare: %d and %d values for %d rows of %d", len(got), len(want), n, per)
	}
	if labels != nil && len(labels) != n {
		return nil, fmt.Errorf("compare: %d labels for %d rows", len(labels), n)
	}
	c := &Comparison{Inputs: n}
	worstExcess := 0.0
	agree, okOurs, okORT := 0, 0, 0
	for i := 0; i < n; i++ {
		g, w := got[i*per:(i+1)*per], want[i*per:(i+1)*per]
		for j := range g {
			d := math.Abs(float64(g[j]) - float64(w[j]))
			if math.IsNaN(d) {
				d = math.Inf(1) // a NaN on either side is a failure, never a pass
			}
			c.MaxAbsErr = max(c.MaxAbsErr, d)
			if w[j] != 0 {
				c.MaxRelErr = max(c.MaxRelErr, d/math.Abs(float64(w[j])))
			}
			if excess := d - (tol.ATol + tol.RTol*math.Abs(float64(w[j]))); excess > 0 {
				c.Violations++
				if excess > worstExcess {
					worstExcess = excess
					c.Worst = fmt.Sprintf("input %d output %d: onnxruntime %g, engine %g", i, j, g[j], w[j])
				}
			}
		}
		ag, aw := argmax(g), argmax(w)
		if ag == aw {
			agree++
		}
		if labels != nil {
			if int32(aw) == labels[i] {
				okOurs++
			}
			if int32(ag) == labels[i] {
				okORT++
			}
		}
	}
	if n > 0 {
		c.Top1Agreement = float64(agree) / float64(n)
		if labels != nil {
			a, b := float64(okOurs)/float64(n), float64(okORT)/float64(n)
			c.AccuracyOurs, c.AccuracyORT = &a, &b
		}
	}
	return c, nil
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// Engine is a graph compiled by the bayesnas engine for evaluation, with
// parameters copied in by name.
type Engine struct {
	Net     *nn.Network
	backend nn.Backend
	batch   int
}

// NewEngine compiles g on be for batches of up to batch samples and loads
// params.
func NewEngine(be nn.Backend, g *models.Graph, params []*nn.Param, batch int) (*Engine, error) {
	if be == nil {
		return nil, fmt.Errorf("engine for graph %q: no backend", g.Name)
	}
	net, err := models.Compile(g, be, batch)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]*nn.Param, len(params))
	for _, p := range params {
		byName[p.Name] = p
	}
	for _, p := range net.Params {
		src := byName[p.Name]
		if src == nil {
			return nil, fmt.Errorf("engine for graph %q: parameter %q missing", g.Name, p.Name)
		}
		if !slices.Equal(src.Shape, p.Shape) || len(src.Data) != len(p.Data) {
			return nil, fmt.Errorf("engine for graph %q: parameter %q has shape %v, want %v", g.Name, p.Name, src.Shape, p.Shape)
		}
		p.SetHost(src.Host())
	}
	return &Engine{Net: net, backend: be, batch: batch}, nil
}

// Name describes the kernels in use.
func (e *Engine) Name() string { return e.backend.Name() }

// Workers is the goroutines the engine computes on: the CPU backend's pool,
// 1 for one without (the reference backend runs on the calling goroutine).
func (e *Engine) Workers() int {
	if c, ok := e.backend.(*nn.CPU); ok {
		return c.Pool.Workers()
	}
	return 1
}

// Run evaluates n samples of x in chunks of the compiled batch.
func (e *Engine) Run(x []float32, n int) ([]float32, error) {
	per, outPer := e.Net.Input.PerSample(), e.Net.Output.PerSample()
	if len(x) != n*per {
		return nil, fmt.Errorf("engine: %d input values for %d samples of %d", len(x), n, per)
	}
	out := make([]float32, n*outPer)
	for lo := 0; lo < n; lo += e.batch {
		b := min(e.batch, n-lo)
		e.Net.SetBatch(b)
		e.Net.Input.SetHost(x[lo*per : (lo+b)*per])
		e.Net.Forward(false)
		copy(out[lo*outPer:], e.Net.Output.Host())
	}
	return out, nil
}

// softmaxRows applies a softmax to each row in place (in float64), to compare
// a model exported with the softmax option against the engine's logits.
func softmaxRows(v []float32, per int) {
	for lo := 0; lo+per <= len(v); lo += per {
		row := v[lo : lo+per]
		m := row[0]
		for _, x := range row {
			m = max(m, x)
		}
		var s float64
		for _, x := range row {
			s += math.Exp(float64(x - m))
		}
		for i, x := range row {
			row[i] = float32(math.Exp(float64(x-m)) / s)
		}
	}
}

// timeRuns runs f warmup times, then repeats timed times, and returns the
// median and the 90th percentile (nearest rank) in milliseconds.
func timeRuns(ctx context.Context, warmup, repeats int, f func() error) (median, p90 float64, err error) {
	for i := 0; i < warmup; i++ {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		if err := f(); err != nil {
			return 0, 0, err
		}
	}
	ms := make([]float64, repeats)
	for i := range ms {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		if err := f(); err != nil {
			return 0, 0, err
		}
		ms[i] = float64(time.Since(t0).Nanoseconds()) / 1e6
	}
	sort.Float64s(ms)
	return percentile(ms, 0.5), percentile(ms, 0.9), nil
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(k, len(sorted)-1))]
}
