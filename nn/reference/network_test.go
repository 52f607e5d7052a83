package reference_test

import (
	"testing"

	"bayesnas/models"
	"bayesnas/models/backendtest"
	"bayesnas/nn"
	"bayesnas/nn/reference"
)

// TestWholeNetworks: a training step of a small PyramidNet and of a small
// proxy supernet compiled by models on the reference backend matches the
// CPU backend's.
func TestWholeNetworks(t *testing.T) {
	backendtest.Run(t, func(int) nn.Backend { return reference.New() })
}

// TestTrain20Steps trains a small PyramidNet for 20 steps (batch 8, SGD
// with Nesterov momentum and weight decay) from the same initialisation on
// the reference and the CPU backends and bounds the largest difference in
// loss and weights. (On the demo network, models.PyramidNetDefault(), this
// regime drifts for rounding alone: the CPU backend with its Go GEMM against
// itself with OpenBLAS differs as much as the reference does, 1.8e-3 in the
// first gradients and 0.07 in the loss after 20 steps;
// bench/results/reference-backend.md.)
func TestTrain20Steps(t *testing.T) {
	if testing.Short() {
		t.Skip("short: 20 steps")
	}
	cfg := backendtest.SmallPyramidNet()
	g, err := models.PyramidNet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := backendtest.Compare(g, reference.New(), nn.NewCPU(nn.DefaultGemm(), 2), 8, 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %v", g.Name, d)
	backendtest.Check(t, d, 1e-3)
}
