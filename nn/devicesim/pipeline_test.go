package devicesim_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/models/backendtest"
	"bayesnas/nn"
	"bayesnas/nn/devicesim"
)

// batches is a fixed stream of random labelled images (nn.Batches).
type batches struct {
	x      [][]float32
	labels [][]int32
	i, per int
}

func newBatches(n, batch, per, classes int) *batches {
	rng := rand.New(rand.NewPCG(9, 10))
	b := &batches{per: per}
	for range n {
		x := make([]float32, batch*per)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		l := make([]int32, batch)
		for i := range l {
			l[i] = int32(rng.IntN(classes))
		}
		b.x, b.labels = append(b.x, x), append(b.labels, l)
	}
	// A short last batch, as a data set's last one.
	b.x[n-1], b.labels[n-1] = b.x[n-1][:(batch-3)*per], b.labels[n-1][:batch-3]
	return b
}

func (b *batches) StartEpoch(int) { b.i = 0 }
func (b *batches) BatchSize() int { return len(b.labels[0]) }
func (b *batches) Next(x []float32, labels []int32) (int, bool) {
	if b.i == len(b.x) {
		return 0, false
	}
	copy(x, b.x[b.i])
	copy(labels, b.labels[b.i])
	b.i++
	return len(b.labels[b.i-1]), true
}

// TestPipelineCode runs the code a training run, a search and an export
// run outside the kernels on the simulated device, against the CPU backend
// from the same initialisation: training steps (models.Compile with BN
// fusion, InitParams, ZeroGrad, the loss, Backward, SGD), nn.Evaluate with
// a short last batch, nn.RecalibrateBN, the weights file written and read
// back, and the ONNX model export builds from the parameters. Any of them
// reading Data without Host would see NaN here, and a write without Commit
// would be lost.
func TestPipelineCode(t *testing.T) {
	g, err := models.PyramidNet(backendtest.SmallPyramidNet())
	if err != nil {
		t.Fatal(err)
	}
	const batch = 8
	dev, err := backendtest.NewTrainer(g, devicesim.New(2), batch)
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := backendtest.NewTrainer(g, nn.NewCPU(nn.DefaultGemm(), 2), batch)
	if err != nil {
		t.Fatal(err)
	}
	for step := range 2 {
		ld, err := dev.Step(step)
		if err != nil {
			t.Fatal(err)
		}
		lc, err := cpu.Step(step)
		if err != nil {
			t.Fatal(err)
		}
		if ld != lc {
			t.Fatalf("step %d: loss %g on devicesim, %g on the CPU", step, ld, lc)
		}
	}
	per, classes := dev.Net.Input.PerSample(), dev.Net.Output.PerSample()
	loss := &nn.SoftmaxCrossEntropy{Smoothing: 0.1}
	ld, ad, err := nn.Evaluate(dev.Net, loss, newBatches(3, batch, per, classes))
	if err != nil {
		t.Fatal(err)
	}
	lc, ac, err := nn.Evaluate(cpu.Net, loss, newBatches(3, batch, per, classes))
	if err != nil {
		t.Fatal(err)
	}
	if ld != lc || ad != ac || math.IsNaN(ld) {
		t.Errorf("Evaluate: loss %g accuracy %g on devicesim, %g %g on the CPU", ld, ad, lc, ac)
	}

	recal := func(net *nn.Network) int {
		b := newBatches(2, batch, per, classes)
		return nn.RecalibrateBN(net, func(x []float32) (int, bool) {
			if b.i == len(b.x) {
				return 0, false
			}
			copy(x, b.x[b.i])
			b.i++
			return len(b.x[b.i-1]) / per, true
		})
	}
	if nd, nc := recal(dev.Net), recal(cpu.Net); nd != 2 || nc != 2 {
		t.Fatalf("RecalibrateBN used %d and %d batches, want 2", nd, nc)
	}
	for i, p := range dev.Net.Params {
		if got, want := p.Host(), cpu.Net.Params[i].Host(); !slices.Equal(got, want) {
			t.Fatalf("%s after training and recalibration: differs from the CPU's", p.Name)
		}
	}

	// The weights file holds the device contents, and loading writes them
	// to the device.
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := models.SaveWeights(path, dev.Net.Params, nil); err != nil {
		t.Fatal(err)
	}
	fresh, err := models.Compile(g, devicesim.New(1), batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.LoadWeights(path, fresh.Params); err != nil {
		t.Fatal(err)
	}
	for i, p := range fresh.Params {
		if !slices.Equal(p.Host(), cpu.Net.Params[i].Host()) {
			t.Fatalf("%s: the weights written and read back differ", p.Name)
		}
	}

	// Export reads the parameters of a compiled network. The forward pass
	// leaves their host copies stale, as any device work would.
	dev.Net.Forward(false)
	md, err := export.Marshal(g, dev.Net.Params, export.Options{})
	if err != nil {
		t.Fatalf("export from devicesim parameters: %v", err)
	}
	mc, err := export.Marshal(g, cpu.Net.Params, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(md, mc) {
		t.Error("the ONNX model exported from devicesim parameters differs from the CPU's")
	}
}
