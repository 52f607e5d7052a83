//go:build cgo

package onnxrt

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/nn/backends"
)

// Validate loads modelPath (exported from g and params) in ONNX Runtime and
// checks it against the engine: on the real images (n normalised NCHW
// samples in images, with labels for accuracy; both may be empty) and on
// RandomInputs N(0,1) inputs it reports max absolute and relative error,
// top-1 agreement and accuracy; unless SkipTiming, it times both runtimes at
// batch 1 and opts.Batch. When outputs disagree beyond tolerance the report
// is returned together with an error wrapping ErrTolerance.
func Validate(modelPath string, g *models.Graph, params []*nn.Param, images []float32, labels []int32, opts ValidateOptions) (*Report, error) {
	opts.defaults()
	if err := nn.CheckWorkers("threads", opts.Threads); err != nil {
		return nil, fmt.Errorf("validating %s: %w", modelPath, err)
	}
	// Before the library loads: a backend this binary lacks is a
	// configuration error whatever the runtime.
	if err := backends.Check("backend", opts.Backend); err != nil {
		return nil, fmt.Errorf("validating %s: %w", modelPath, err)
	}
	lib, err := InitDefault(opts.Library)
	if err != nil {
		return nil, fmt.Errorf("validating %s: %w", modelPath, err)
	}
	m, err := export.Read(modelPath)
	if err != nil {
		return nil, fmt.Errorf("validating: %w", err)
	}
	softmax := false
	if v, ok := m.MetadataValue(export.MetaOutputSoftmax); ok && v == "true" {
		softmax = true
	}
	sess, err := Open(modelPath, SessionOptions{IntraOpThreads: opts.Threads})
	if err != nil {
		return nil, fmt.Errorf("validating: %w", err)
	}
	defer sess.Close()
	be, err := backends.New(opts.Backend, sess.Threads)
	if err != nil {
		return nil, fmt.Errorf("validating %s: %w", modelPath, err)
	}
	eng, err := NewEngine(be, g, params, opts.Batch)
	if err != nil {
		return nil, fmt.Errorf("validating %s: %w", modelPath, err)
	}
	per, outPer := eng.Net.Input.PerSample(), eng.Net.Output.PerSample()
	if int(prod(sess.InShape)) != per || int(prod(sess.OutShape)) != outPer {
		return nil, fmt.Errorf("validating %s: the model maps %v to %v per sample, graph %q maps %d values to %d (exported from another graph?)",
			modelPath, sess.InShape, sess.OutShape, g.Name, per, outPer)
	}
	if len(images)%per != 0 {
		return nil, fmt.Errorf("validating %s: %d image values is not a whole number of %d-value samples", modelPath, len(images), per)
	}
	nReal := len(images) / per
	if len(labels) != 0 && len(labels) != nReal {
		return nil, fmt.Errorf("validating %s: %d labels for %d images", modelPath, len(labels), nReal)
	}

	tol := Tolerance{RTol: opts.RTol, ATol: opts.ATol}
	r := &Report{
		Model: modelPath,
		Runtime: RuntimeInfo{Name: "onnxruntime", Version: RuntimeVersion, Library: lib,
			IntraOpThreads: sess.Threads, InterOpThreads: 1, Optimization: "all"},
		Engine:      eng.Name(),
		Tolerance:   tol,
		Softmax:     softmax,
		GeneratedAt: time.Now().UTC().Truncate(time.Second),
		Timing:      TimingMethod{Warmup: opts.Warmup, Repeats: opts.Repeats, Clock: "wall, per batch; median and nearest-rank p90"},
	}
	ctx := opts.Context
	if ctx == nil {
		ctx = context.Background()
	}
	compare := func(x []float32, n int, labels []int32) (*Comparison, error) {
		// Batch by batch, so that a cancellation stops it within one batch.
		got := make([]float32, 0, n*outPer)
		want := make([]float32, 0, n*outPer)
		for lo := 0; lo < n; lo += opts.Batch {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("stopped: %w", err)
			}
			b := min(opts.Batch, n-lo)
			chunk := x[lo*per : (lo+b)*per]
			g, err := sess.RunBatch(chunk, b, opts.Batch)
			if err != nil {
				return nil, err
			}
			w, err := eng.Run(chunk, b)
			if err != nil {
				return nil, err
			}
			got, want = append(got, g...), append(want, w...)
		}
		if softmax {
			softmaxRows(want, outPer)
		}
		return Compare(got, want, n, outPer, labels, tol)
	}
	if nReal > 0 {
		var lab []int32
		if len(labels) > 0 {
			lab = labels
		}
		if r.Real, err = compare(images, nReal, lab); err != nil {
			return nil, fmt.Errorf("validating %s on real images: %w", modelPath, err)
		}
	}
	rnd := rand.New(rand.NewPCG(opts.Seed, 0x6f6e6e78))
	x := make([]float32, opts.RandomInputs*per)
	for i := range x {
		x[i] = float32(rnd.NormFloat64())
	}
	if r.Random, err = compare(x, opts.RandomInputs, nil); err != nil {
		return nil, fmt.Errorf("validating %s on random inputs: %w", modelPath, err)
	}

	if !opts.SkipTiming {
		if r.Latency, err = timeBoth(ctx, sess, eng, x, opts); err != nil {
			return nil, fmt.Errorf("timing %s: %w", modelPath, err)
		}
	}

	for _, c := range []struct {
		name string
		c    *Comparison
	}{{"real images", r.Real}, {"random inputs", r.Random}} {
		if c.c != nil && c.c.Violations > 0 {
			r.Failures = append(r.Failures, fmt.Sprintf("%s: %d outputs beyond tolerance, max abs err %.3g (worst: %s)",
				c.name, c.c.Violations, c.c.MaxAbsErr, c.c.Worst))
		}
	}
	r.Passed = len(r.Failures) == 0
	if !r.Passed {
		return r, fmt.Errorf("validating %s: %w: %s", modelPath, ErrTolerance, r.Failures[0])
	}
	return r, nil
}

// timeBoth times ONNX Runtime and the engine at batch 1 and opts.Batch on
// inputs taken from x (repeated when x is shorter).
func timeBoth(ctx context.Context, sess *Session, eng *Engine, x []float32, opts ValidateOptions) ([]Latency, error) {
	per := int(prod(sess.InShape))
	var out []Latency
	for _, b := range []int{1, opts.Batch} {
		in := make([]float32, b*per)
		for i := range in {
			in[i] = x[i%len(x)]
		}
		run, err := sess.NewRunner(b)
		if err != nil {
			return nil, err
		}
		copy(run.Input(), in)
		med, p90, err := timeRuns(ctx, opts.Warmup, opts.Repeats, run.Run)
		run.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, Latency{Runtime: "onnxruntime", Batch: b, MedianMs: med, P90Ms: p90,
			ImagesPerSec: float64(b) / (med / 1e3), Threads: sess.Threads})

		eng.Net.SetBatch(b)
		eng.Net.Input.SetHost(in)
		med, p90, err = timeRuns(ctx, opts.Warmup, opts.Repeats, func() error { eng.Net.Forward(false); return nil })
		if err != nil {
			return nil, err
		}
		out = append(out, Latency{Runtime: "bayesnas", Batch: b, MedianMs: med, P90Ms: p90,
			ImagesPerSec: float64(b) / (med / 1e3), Threads: eng.Workers()})
	}
	return out, nil
}
