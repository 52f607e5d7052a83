package nn_test

import (
	"testing"

	"bayesnas/nn"
	"bayesnas/nn/nntest"
)

// TestConformance runs the backend conformance suite on the CPU backend
// with every available GEMM.
func TestConformance(t *testing.T) {
	for _, g := range nn.Gemms() {
		t.Run(g.Name(), func(t *testing.T) {
			nntest.Run(t, func(workers int) nn.Backend { return nn.NewCPU(g, workers) })
		})
	}
}
