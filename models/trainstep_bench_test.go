package models

import (
	"math/rand/v2"
	"testing"

	"bayesnas/nn"
)

// BenchmarkTrainStepPyramidNetDefault times one SGD training step of the
// default PyramidNet at batch 64: forward, softmax cross-entropy, backward,
// Nesterov SGD with weight decay. bench/torch_twin.py times the same step in
// PyTorch from the same graph file.
func BenchmarkTrainStepPyramidNetDefault(b *testing.B) {
	g, err := PyramidNet(PyramidNetDefault())
	if err != nil {
		b.Fatal(err)
	}
	benchTrainStep(b, g, 64)
}

// benchTrainStep times the training step of g at batch images (see
// trainStep) and reports images/s and allocations.
func benchTrainStep(b *testing.B, g *Graph, batch int) {
	net, labels, opt := trainStep(b, g, batch)
	var lossFn nn.SoftmaxCrossEntropy
	step := func() {
		net.ZeroGrad()
		net.Forward(true)
		if _, _, err := lossFn.Forward(net.Output, labels); err != nil {
			b.Fatal(err)
		}
		net.Backward()
		opt.Step(0.05)
	}
	step() // warm-up: first-touch of every buffer
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "images/s")
}

// trainStep compiles g for batch images with random inputs and labels and
// an SGD optimizer (Nesterov, weight decay) over every parameter: the
// training step the benchmarks time.
func trainStep(b *testing.B, g *Graph, batch int) (*nn.Network, []int32, nn.Optimizer) {
	net, err := Compile(g, cpuBackend(b), batch)
	if err != nil {
		b.Fatal(err)
	}
	if err := InitParams(net, g, 1); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	randomize(rng, net.Input.Data)
	labels := make([]int32, batch)
	for i := range labels {
		labels[i] = int32(rng.IntN(net.Output.PerSample()))
	}
	opt, err := nn.NewSGD(net.Params, nn.SGDConfig{Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true})
	if err != nil {
		b.Fatal(err)
	}
	return net, labels, opt
}
