//go:build cgo

package onnxrt

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/export"
	"bayesnas/internal/testenv"
	"bayesnas/models"
	"bayesnas/nn"
)

// needORT loads ONNX Runtime or skips (fails in CI), saying how to get it.
func needORT(t testing.TB) {
	t.Helper()
	if _, err := InitDefault(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
}

func randomNet(t testing.TB, g *models.Graph, seed uint64) *nn.Network {
	t.Helper()
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), 1)
	if err != nil {
		t.Fatal(err)
	}
	export.RandomizeParams(net.Params, seed)
	return net
}

func randomInputs(n, per int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*per)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// compareCase exports g and checks ONNX Runtime's output against the engine's.
func compareCase(t *testing.T, g *models.Graph, params []*nn.Param, opts export.Options, n int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := export.Write(path, g, params, opts); err != nil {
		t.Fatal(err)
	}
	sess, err := Open(path, SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	eng, err := NewEngine(nn.NewCPU(nn.DefaultGemm(), 1), g, params, n)
	if err != nil {
		t.Fatal(err)
	}
	per, outPer := eng.Net.Input.PerSample(), eng.Net.Output.PerSample()
	x := randomInputs(n, per, 9)
	got, err := sess.RunBatch(x, n, n)
	if err != nil {
		t.Fatal(err)
	}
	want, err := eng.Run(x, n)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Softmax {
		softmaxRows(want, outPer)
	}
	c, err := Compare(got, want, n, outPer, nil, Tolerance{RTol: 1e-4, ATol: 1e-5})
	if err != nil {
		t.Fatal(err)
	}
	if c.Violations > 0 {
		t.Errorf("%d outputs beyond rtol 1e-4 atol 1e-5, max abs err %g; worst %s", c.Violations, c.MaxAbsErr, c.Worst)
	}
}

// TestCasesInORT: every op kind and attribute combination, exported alone,
// folded and unfolded, at the default opset and the newest allowed, runs in
// ONNX Runtime and matches the engine.
func TestCasesInORT(t *testing.T) {
	needORT(t)
	cases, err := export.Cases()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		net := randomNet(t, c.Graph, 4)
		for _, v := range []struct {
			name string
			opts export.Options
		}{
			{"folded", export.Options{Softmax: c.Softmax}},
			{"nofold", export.Options{Softmax: c.Softmax, NoFold: true}},
			{"opset_max", export.Options{Softmax: c.Softmax, Opset: export.MaxOpset}},
		} {
			t.Run(c.Name+"/"+v.name, func(t *testing.T) { compareCase(t, c.Graph, net.Params, v.opts, 3) })
		}
	}
}

func smallPyramidNet(t testing.TB, dropPath float64) *models.Graph {
	t.Helper()
	g, err := models.PyramidNet(models.PyramidNetConfig{BlocksPerStage: 2, Alpha: 12, Groups: 2, StemChannels: 8,
		Input: [3]int{1, 16, 16}, Classes: 10, DropPath: dropPath})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestPyramidNetInORT exports a small PyramidNet (every op of the backbone:
// folded and kept BN, grouped conv, avgpool + zero-padded shortcut, GAP,
// Gemm, drop-path) and runs Validate on it, softmax output included.
func TestPyramidNetInORT(t *testing.T) {
	needORT(t)
	g := smallPyramidNet(t, 0.1)
	net := randomNet(t, g, 5)
	for _, opts := range []export.Options{{}, {NoFold: true}, {Softmax: true, Opset: 17}} {
		path := filepath.Join(t.TempDir(), "p.onnx")
		if err := export.Write(path, g, net.Params, opts); err != nil {
			t.Fatal(err)
		}
		images := randomInputs(20, 256, 3)
		labels := make([]int32, 20)
		for i := range labels {
			labels[i] = int32(i % 10)
		}
		r, err := Validate(path, g, net.Params, images, labels, ValidateOptions{Threads: 1, Batch: 8, Warmup: 1, Repeats: 3, RandomInputs: 10})
		if err != nil {
			t.Fatalf("%+v: %v", opts, err)
		}
		if !r.Passed || r.Real == nil || r.Real.Inputs != 20 || r.Random.Inputs != 10 || r.Real.AccuracyORT == nil {
			t.Fatalf("report %+v", r)
		}
		if r.Real.Top1Agreement != 1 || r.Random.Top1Agreement != 1 {
			t.Errorf("%+v: top-1 agreement %g / %g", opts, r.Real.Top1Agreement, r.Random.Top1Agreement)
		}
		if r.Softmax != opts.Softmax {
			t.Errorf("report softmax %v, exported with %v", r.Softmax, opts.Softmax)
		}
		if len(r.Latency) != 4 || r.Latency[0].Batch != 1 || r.Latency[3].Batch != 8 || r.Latency[0].MedianMs <= 0 || r.Runtime.IntraOpThreads != 1 {
			t.Errorf("latency %+v runtime %+v", r.Latency, r.Runtime)
		}
		t.Logf("nofold %v softmax %v opset %d: real max abs err %.3g, random %.3g", opts.NoFold, opts.Softmax, opts.Opset, r.Real.MaxAbsErr, r.Random.MaxAbsErr)
		var sb strings.Builder
		if err := r.Table(&sb); err != nil || !strings.Contains(sb.String(), "PASS") {
			t.Errorf("table %q, %v", sb.String(), err)
		}
		if err := r.WriteJSON(filepath.Join(t.TempDir(), ReportFile)); err != nil {
			t.Error(err)
		}
	}
}

// TestValidateCatchesMismatch: a model whose weights differ from the
// engine's fails validation, names the worst output, and still reports.
func TestValidateCatchesMismatch(t *testing.T) {
	needORT(t)
	g := smallPyramidNet(t, 0)
	net := randomNet(t, g, 6)
	path := filepath.Join(t.TempDir(), "p.onnx")
	if err := export.Write(path, g, net.Params, export.Options{}); err != nil {
		t.Fatal(err)
	}
	other := randomNet(t, g, 6)
	other.Param("stage3.block1.conv3.weight").Data[3] += 0.05
	r, err := Validate(path, g, other.Params, nil, nil, ValidateOptions{Threads: 1, Batch: 4, RandomInputs: 8, SkipTiming: true})
	if !errors.Is(err, ErrTolerance) || r == nil || r.Passed || r.Random.Violations == 0 || len(r.Failures) != 1 {
		t.Fatalf("err %v, report %+v", err, r)
	}
	var sb strings.Builder
	r.Table(&sb)
	if !strings.Contains(sb.String(), "FAIL") {
		t.Errorf("table does not say FAIL:\n%s", sb.String())
	}
	// Another graph altogether is refused before anything runs.
	g2 := smallPyramidNet(t, 0)
	g2.Nodes[len(g2.Nodes)-1].Attrs.OutChannels = 7
	net2 := randomNet(t, g2, 1)
	if _, err := Validate(path, g2, net2.Params, nil, nil, ValidateOptions{SkipTiming: true}); err == nil || !strings.Contains(err.Error(), "another graph") {
		t.Errorf("mismatched graph: %v", err)
	}
}

func TestInitTwice(t *testing.T) {
	needORT(t)
	if err := Init("/somewhere/else/libonnxruntime.so.1"); err == nil || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("second Init with another path: %v", err)
	}
}

// A stride-2 stem leaves odd maps (14 -> 7 -> 4 -> 2): the ceil-mode
// shortcut pools, with their overhanging last windows, match ONNX Runtime.
func TestPyramidNetStemStride2InORT(t *testing.T) {
	needORT(t)
	g, err := models.PyramidNet(models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 12, Groups: 2, StemChannels: 8,
		StemStride: 2, Input: [3]int{1, 14, 14}, Classes: 10})
	if err != nil {
		t.Fatal(err)
	}
	net := randomNet(t, g, 6)
	for _, opts := range []export.Options{{}, {NoFold: true}} {
		compareCase(t, g, net.Params, opts, 3)
	}
}

// TestValidateStopsAndBoundsThreads: a thread count beyond nn.MaxWorkers is
// refused before anything starts, and a cancelled context (Ctrl-C, SIGTERM)
// stops a validation with its error instead of finishing and passing.
func TestValidateStopsAndBoundsThreads(t *testing.T) {
	g := smallPyramidNet(t, 0)
	net := randomNet(t, g, 7)
	path := filepath.Join(t.TempDir(), "p.onnx")
	if err := export.Write(path, g, net.Params, export.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Validate(path, g, net.Params, nil, nil, ValidateOptions{Threads: 100000}); err == nil || !strings.Contains(err.Error(), "threads = 100000") {
		t.Errorf("100000 threads: %v", err)
	}
	if _, err := Open(path, SessionOptions{IntraOpThreads: 100000}); err == nil || !strings.Contains(err.Error(), "intra-op threads = 100000") {
		t.Errorf("a session of 100000 threads: %v", err)
	}
	if _, err := Validate(path, g, net.Params, nil, nil, ValidateOptions{Backend: "cuda"}); err == nil || !strings.Contains(err.Error(), "no CUDA backend built in") {
		t.Errorf("backend cuda: %v", err)
	}
	needORT(t)
	// The engine runs on the backend the options name, as the run's other
	// stages do: the reference backend's outputs agree with ONNX Runtime too.
	r, err := Validate(path, g, net.Params, nil, nil, ValidateOptions{Backend: "reference", Threads: 1, Batch: 4, RandomInputs: 8, SkipTiming: true})
	if err != nil || !r.Passed || r.Engine != "reference" || r.Random.Top1Agreement != 1 {
		t.Errorf("validation on the reference backend: %v, report %+v", err, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err = Validate(path, g, net.Params, nil, nil, ValidateOptions{Threads: 1, Batch: 4, RandomInputs: 8, Context: ctx})
	if !errors.Is(err, context.Canceled) || r != nil {
		t.Errorf("cancelled validation: report %v, error %v; want context.Canceled", r, err)
	}
}
