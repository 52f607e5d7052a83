package backendtest_test

import (
	"testing"

	"bayesnas/models/backendtest"
	"bayesnas/nn"
)

// TestCPU: the CPU backend against itself with another worker count
// (bit-identical by design) keeps the comparison honest.
func TestCPU(t *testing.T) {
	backendtest.Run(t, func(int) nn.Backend { return nn.NewCPU(nn.DefaultGemm(), 1) })
}
