package reference_test

import (
	"testing"

	"bayesnas/nn"
	"bayesnas/nn/nntest"
	"bayesnas/nn/reference"
)

// TestConformance: the reference backend passes the suite every backend must.
func TestConformance(t *testing.T) {
	nntest.Run(t, func(int) nn.Backend { return reference.New() })
}
