package nn_test

import (
	"testing"

	"bayesnas/internal/bnplane"
	"bayesnas/internal/tapsum"
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

// TestConformanceGoKernels runs the suite again with the Go kernels of
// tapsum (the depthwise convolutions' taps) and bnplane (batch norm), which
// the AVX2 assembly otherwise replaces on this machine and which non-amd64
// builds use.
func TestConformanceGoKernels(t *testing.T) {
	defer func(on bool) { tapsum.UseAVX2 = on }(tapsum.UseAVX2)
	defer func(on bool) { bnplane.UseAVX2 = on }(bnplane.UseAVX2)
	tapsum.UseAVX2 = false
	bnplane.UseAVX2 = false
	nntest.Run(t, func(workers int) nn.Backend { return nn.NewCPU(nn.DefaultGemm(), workers) })
}
