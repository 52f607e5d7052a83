package reference_test

import (
	"os"
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

// TestTrain20Steps trains a PyramidNet for 20 steps (batch 8, SGD with
// Nesterov momentum and weight decay) from the same initialisation on the
// reference and the CPU backends and bounds the largest difference in loss
// and weights. The network is backendtest.SmallPyramidNet, or the demo
// network models.PyramidNetDefault() with REFERENCE_DEFAULT=1 (about 12 s
// per step on the reference backend, 6 minutes in all). Open (issue 16): on
// the demo network the first step agrees (loss 6e-8, logits 5e-7) but its
// gradients differ by up to 1.8e-3 and the runs drift apart (loss 0.065
// after 20 steps), so that variant fails the 1e-3 bound; see
// bench/results/reference-backend.md.
func TestTrain20Steps(t *testing.T) {
	cfg := backendtest.SmallPyramidNet()
	if os.Getenv("REFERENCE_DEFAULT") == "1" {
		cfg = models.PyramidNetDefault()
	} else if testing.Short() {
		t.Skip("short: 20 steps")
	}
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
