// Package backendtest is the whole-network part of the backend conformance
// suite (nn/nntest holds the per-kernel part; it cannot import models):
// graphs built by models, compiled on a backend under test and on the CPU
// backend from the same initialisation, trained step by step, compared.
package backendtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
)

// SmallPyramidNet is a PyramidNet with every op the default one uses
// (grouped 3x3 convs, pooled and zero-padded shortcuts, ceil-mode pooling
// on an odd map, drop-path) at a size the reference backend trains in
// well under a second per step.
func SmallPyramidNet() models.PyramidNetConfig {
	return models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 12, Groups: 2, StemChannels: 8,
		Input: [3]int{1, 14, 14}, Classes: 10, DropPath: 0.2, StemStride: 2}
}

// SmallProxySupernet is a proxy-cell search supernet (every candidate op
// on every edge, mixed by architecture weights: wsum, separable and
// dilated convs, pools, skip, zero) small enough for the reference backend.
func SmallProxySupernet() models.ProxyConfig {
	return models.ProxyConfig{Input: [3]int{1, 12, 12}, Classes: 10, Channels: 4, Cells: 3, Nodes: 2,
		StemMultiplier: 2, StemStride: 1, Search: true}
}

// Diff is the largest absolute differences between two runs.
type Diff struct {
	Loss, Logits, Grad, Weight float64
	// Scale is the largest absolute weight, for reading Weight relatively.
	Scale float64
	Steps int
}

func (d Diff) String() string {
	return fmt.Sprintf("%d steps: loss %.3g, logits %.3g, gradients %.3g, weights %.3g (largest weight %.3g)",
		d.Steps, d.Loss, d.Logits, d.Grad, d.Weight, d.Scale)
}

// Run is one step of the small PyramidNet and of the small proxy supernet
// on newBackend(2), compared with the CPU backend's: loss, logits and
// every gradient after the backward pass, every weight after an SGD step
// (momentum, Nesterov, weight decay).
func Run(t *testing.T, newBackend func(workers int) nn.Backend) {
	pyr, err := models.PyramidNet(SmallPyramidNet())
	if err != nil {
		t.Fatal(err)
	}
	proxy, _, err := models.ProxyNetwork(SmallProxySupernet())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		g    *models.Graph
	}{{"pyramidnet", pyr}, {"proxy-supernet", proxy}} {
		t.Run(c.name, func(t *testing.T) {
			d, err := Compare(c.g, newBackend(2), nn.NewCPU(nn.DefaultGemm(), 2), 8, 2)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(d)
			Check(t, d, 1e-4)
		})
	}
}

// Check fails unless every difference of d is within tol (the gradients
// and logits within 10*tol: one step's reductions in another order).
func Check(t testing.TB, d Diff, tol float64) {
	t.Helper()
	if !(d.Loss <= tol && d.Weight <= tol*math.Max(1, d.Scale) && d.Grad <= 10*tol && d.Logits <= 10*tol) {
		t.Errorf("backends differ beyond %g: %v", tol, d)
	}
}

// Compare compiles g on a and on b for batch images, initialises both from
// the same seed, and runs steps training steps on the same random batches
// (ZeroGrad, training Forward, softmax cross entropy, Backward, SGD with
// momentum 0.9, Nesterov, weight decay 5e-4, learning rate 0.05),
// returning the largest differences seen over the steps.
func Compare(g *models.Graph, a, b nn.Backend, batch, steps int) (Diff, error) {
	ta, err := NewTrainer(g, a, batch)
	if err != nil {
		return Diff{}, err
	}
	tb, err := NewTrainer(g, b, batch)
	if err != nil {
		return Diff{}, err
	}
	d := Diff{Steps: steps}
	for step := range steps {
		la, err := ta.Step(step)
		if err != nil {
			return d, err
		}
		lb, err := tb.Step(step)
		if err != nil {
			return d, err
		}
		d.Loss = max(d.Loss, math.Abs(la-lb))
		d.Logits = max(d.Logits, maxDiff(ta.Net.Output.Host(), tb.Net.Output.Host()))
		for i, p := range ta.Net.Params {
			q := tb.Net.Params[i]
			if p.Name != q.Name {
				return d, fmt.Errorf("parameter %d: %s on %s, %s on %s", i, p.Name, a.Name(), q.Name, b.Name())
			}
			d.Grad = max(d.Grad, maxDiff(ta.grads[i], tb.grads[i]))
			pd := p.Host()
			d.Weight = max(d.Weight, maxDiff(pd, q.Host()))
			for _, v := range pd {
				d.Scale = max(d.Scale, math.Abs(float64(v)))
			}
		}
	}
	return d, nil
}

func maxDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// Trainer is a compiled, initialised network with an SGD optimizer and a
// deterministic stream of random batches: the training step that
// Compare runs and the benchmarks time.
type Trainer struct {
	Net    *nn.Network
	Opt    nn.Optimizer
	loss   nn.SoftmaxCrossEntropy
	batch  int
	labels []int32
	grads  [][]float32 // the gradients of the last step, before the update
}

// NewTrainer compiles g on be for batch images and initialises it with
// models.InitParams(seed 1).
func NewTrainer(g *models.Graph, be nn.Backend, batch int) (*Trainer, error) {
	net, err := models.Compile(g, be, batch)
	if err != nil {
		return nil, err
	}
	if err := models.InitParams(net, g, 1); err != nil {
		return nil, err
	}
	opt, err := nn.NewSGDOn(net.Backend, net.Params, nn.SGDConfig{Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true})
	if err != nil {
		return nil, err
	}
	tr := &Trainer{Net: net, Opt: opt, batch: batch, labels: make([]int32, batch), grads: make([][]float32, len(net.Params))}
	for i, p := range net.Params {
		tr.grads[i] = make([]float32, len(p.Grad))
	}
	return tr, nil
}

// Step fills the input and labels with batch number step of the stream
// and runs one training step, returning the loss.
func (tr *Trainer) Step(step int) (float64, error) {
	rng := rand.New(rand.NewPCG(uint64(step), 77))
	for i := range tr.Net.Input.Data {
		tr.Net.Input.Data[i] = float32(rng.NormFloat64())
	}
	tr.Net.Input.Commit()
	k := tr.Net.Output.PerSample()
	for i := range tr.labels {
		tr.labels[i] = int32(rng.IntN(k))
	}
	tr.Net.ZeroGrad()
	tr.Net.Forward(true)
	loss, _, err := tr.Net.Loss(tr.loss, tr.labels)
	if err != nil {
		return 0, err
	}
	tr.Net.Backward()
	for i, p := range tr.Net.Params {
		copy(tr.grads[i], p.HostGrad())
	}
	tr.Opt.Step(0.05)
	return loss, nil
}
