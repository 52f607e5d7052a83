package devicesim_test

import (
	"testing"

	"bayesnas/models/backendtest"
	"bayesnas/nn"
	"bayesnas/nn/devicesim"
	"bayesnas/nn/nntest"
)

// TestConformance: the suite passes on a backend whose host slices are
// only copies, so the suite itself reaches tensors through Host and
// Commit everywhere (a missed one reads NaN or loses its write here).
func TestConformance(t *testing.T) {
	nntest.Run(t, func(workers int) nn.Backend { return devicesim.New(workers) })
}

// TestModels: the whole networks of models train on it as on the CPU.
func TestModels(t *testing.T) {
	backendtest.Run(t, func(workers int) nn.Backend { return devicesim.New(workers) })
}
