package bayes

import (
	"math/rand/v2"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
)

// Curvature cost against a training step on the default proxy supernet
// (the search's architecture variables), batch 64: a curvature batch over B
// training batches of an epoch costs
// (curvature_batches * ns/curvature-batch) / (B * ns/train-step) of it.
func benchNet(b *testing.B) (*nn.Network, []float32, []int32) {
	g, _, err := models.ProxyNetwork(models.ProxySupernetDefault())
	if err != nil {
		b.Fatal(err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 0), 64)
	if err != nil {
		b.Fatal(err)
	}
	if err := models.InitParams(net, g, 1); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, len(net.Input.Data))
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := make([]int32, 64)
	for i := range labels {
		labels[i] = int32(rng.IntN(10))
	}
	return net, x, labels
}

func BenchmarkSupernetTrainStep(b *testing.B) {
	net, x, labels := benchNet(b)
	opt, err := nn.NewSGD(net.Params, nn.SGDConfig{Momentum: 0.9})
	if err != nil {
		b.Fatal(err)
	}
	loss := nn.SoftmaxCrossEntropy{}
	for b.Loop() {
		copy(net.Input.Data, x)
		net.ZeroGrad()
		net.Forward(true)
		if _, _, err := loss.Forward(net.Output, labels); err != nil {
			b.Fatal(err)
		}
		net.Backward()
		opt.Step(0.01)
	}
}

func benchCurvature(b *testing.B, est Estimator) {
	net, x, labels := benchNet(b)
	c, err := NewCurvature(net, est, 1, WeightedSums)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := c.AddBatch(x, labels); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCurvatureBatchMC(b *testing.B)  { benchCurvature(b, MonteCarloFisher) }
func BenchmarkCurvatureBatchGGN(b *testing.B) { benchCurvature(b, GGN) }
