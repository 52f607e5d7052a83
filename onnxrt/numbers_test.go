//go:build cgo

package onnxrt

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"bayesnas/dataset"
	"bayesnas/export"
	"bayesnas/internal/testenv"
	"bayesnas/models"
	"bayesnas/nn"
)

var (
	fullNumbers = flag.Bool("ort.full", false, "TestDefaultPyramidNetNumbers: the whole Fashion-MNIST test set, longer calibration, timing (minutes)")
	reportPath  = flag.String("ort.report", "", "TestDefaultPyramidNetNumbers: also write the validation report JSON here")
)

// calibrated is the default PyramidNet with random weights whose BN running
// statistics come from real images: a stand-in for a trained network until
// a trained run directory exists. Calibration runs the engine in training
// mode (batch statistics) over calibBatches batches, so each running mean
// and variance moves to the data with momentum 0.1.
type calibrated struct {
	g        *models.Graph
	params   []*nn.Param
	images   []float32 // normalised test images
	labels   []int32
	mean     []float32
	std      []float32
	classes  []string
	nTest    int
	calibImg int
}

func loadCalibrated(tb testing.TB, calibBatches, batch, nTest int) *calibrated {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(dataset.DefaultFashionMNISTDir, "t10k-images-idx3-ubyte.gz")); err != nil {
		testenv.Missing(tb, "Fashion-MNIST in "+dataset.DefaultFashionMNISTDir, "apt-get install dataset-fashion-mnist, or go tool task setup", err)
	}
	train, test, err := dataset.LoadFashionMNIST(dataset.DefaultFashionMNISTDir)
	if err != nil {
		tb.Fatal(err)
	}
	g, err := models.PyramidNet(models.PyramidNetDefault())
	if err != nil {
		tb.Fatal(err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), runtime.NumCPU()), batch)
	if err != nil {
		tb.Fatal(err)
	}
	export.RandomizeParams(net.Params, 2024)
	mean, std := train.Stats()
	norm := dataset.Normalize{Mean: mean, Std: std}
	cb, err := dataset.NewBatcher(train, train.Indices(), batch, dataset.Augment{}, norm, 1)
	if err != nil {
		tb.Fatal(err)
	}
	cb.StartEpoch(0)
	x := make([]float32, batch*train.SampleSize())
	lab := make([]int32, batch)
	for i := 0; i < calibBatches; i++ {
		n, ok := cb.Next(x, lab)
		if !ok {
			tb.Fatal("calibration ran out of images")
		}
		net.SetBatch(n)
		copy(net.Input.Data, x[:n*train.SampleSize()])
		net.Forward(true)
	}
	nTest = min(nTest, test.N)
	tbatch, err := dataset.NewEvalBatcher(test, test.Indices()[:nTest], nTest, norm)
	if err != nil {
		tb.Fatal(err)
	}
	tbatch.StartEpoch(0)
	c := &calibrated{g: g, params: net.Params, images: make([]float32, nTest*test.SampleSize()), labels: make([]int32, nTest),
		mean: mean, std: std, classes: test.ClassNames, nTest: nTest, calibImg: calibBatches * batch}
	if n, ok := tbatch.Next(c.images, c.labels); !ok || n != nTest {
		tb.Fatalf("test batch: %d images", n)
	}
	return c
}

// TestDefaultPyramidNetNumbers exports the default PyramidNet (random,
// BN-calibrated weights) and validates it on real Fashion-MNIST test images:
// the bar is max abs error <= 1e-4 and 100 % top-1 agreement. By
// default 256 images and no timing; -ort.full uses all 10000, calibrates on
// 40 batches of 64 and times batch 1 and 64.
func TestDefaultPyramidNetNumbers(t *testing.T) {
	needORT(t)
	calib, nTest, opts := 8, 256, ValidateOptions{Batch: 64, RandomInputs: 16, SkipTiming: true}
	if *fullNumbers {
		calib, nTest, opts = 40, 10000, ValidateOptions{Batch: 64, RandomInputs: 64, Warmup: 5, Repeats: 30}
	}
	c := loadCalibrated(t, calib, 64, nTest)
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := export.Write(path, c.g, c.params, export.Options{ToolVersion: "test", Mean: c.mean, Std: c.std, Classes: c.classes}); err != nil {
		t.Fatal(err)
	}
	r, err := Validate(path, c.g, c.params, c.images, c.labels, opts)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	r.Table(&sb)
	t.Logf("default PyramidNet, %d calibration images, %d test images:\n%s", c.calibImg, c.nTest, sb.String())
	if *reportPath != "" {
		if err := r.WriteJSON(*reportPath); err != nil {
			t.Error(err)
		}
	}
	if r.Real.MaxAbsErr > 1e-4 {
		t.Errorf("max abs error %g on real images, want <= 1e-4", r.Real.MaxAbsErr)
	}
	if r.Real.Top1Agreement != 1 {
		t.Errorf("top-1 agreement %g on real images, want 1", r.Real.Top1Agreement)
	}
}

var benchNet struct {
	once sync.Once
	c    *calibrated
	path string
	err  error
}

// BenchmarkDefaultPyramidNet times the evaluation-mode forward pass of the
// default PyramidNet in ONNX Runtime and in the engine, at batch 1 and 64,
// with the same thread count (one per CPU) for both.
func BenchmarkDefaultPyramidNet(b *testing.B) {
	needORT(b)
	benchNet.once.Do(func() {
		benchNet.c = loadCalibrated(b, 4, 64, 64)
		dir, err := os.MkdirTemp("", "bayesnas-ort-bench")
		if err != nil {
			benchNet.err = err
			return
		}
		benchNet.path = filepath.Join(dir, "model.onnx")
		benchNet.err = export.Write(benchNet.path, benchNet.c.g, benchNet.c.params, export.Options{})
	})
	if benchNet.err != nil {
		b.Fatal(benchNet.err)
	}
	c := benchNet.c
	threads := runtime.NumCPU()
	sess, err := Open(benchNet.path, SessionOptions{IntraOpThreads: threads})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	per := int(prod(sess.InShape))
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("onnxruntime/batch=%d", batch), func(b *testing.B) {
			r, err := sess.NewRunner(batch)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			copy(r.Input(), c.images[:batch*per])
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := r.Run(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "images/s")
		})
		b.Run(fmt.Sprintf("bayesnas/batch=%d", batch), func(b *testing.B) {
			eng, err := NewEngine(nn.NewCPU(nn.DefaultGemm(), threads), c.g, c.params, batch)
			if err != nil {
				b.Fatal(err)
			}
			eng.Net.SetBatch(batch)
			copy(eng.Net.Input.Data, c.images[:batch*per])
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				eng.Net.Forward(false)
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
