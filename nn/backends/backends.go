// Package backends chooses an nn.Backend by name for the stages that build
// networks (training, search, compression): the setting `backend` of a
// configuration. It sits outside package nn because the reference backend
// is a package of its own that imports nn.
package backends

import (
	"fmt"
	"strings"

	"bayesnas/nn"
	"bayesnas/nn/reference"
)

// Names are the backends a configuration may name: "" and "auto" pick the
// fastest built into this binary (today the CPU backend), "cpu" the CPU
// backend (OpenBLAS or the Go GEMM), "reference" the plain-loop reference
// backend (slow; for checking the others), "cuda" a GPU backend, which this
// binary does not have.
var Names = []string{"auto", "cpu", "reference", "cuda"}

// Check says whether name is a backend this binary can build, naming the
// setting key in its error.
func Check(key, name string) error {
	switch name {
	case "", "auto", "cpu", "reference":
		return nil
	case "cuda":
		return fmt.Errorf("%s = cuda: this bayesnas has no CUDA backend built in (none exists yet: issue 16); use cpu", key)
	}
	return fmt.Errorf("%s = %q: want one of %s", key, name, strings.Join(Names, ", "))
}

// New builds the backend name with workers goroutines (0: one per core;
// the reference backend runs on one whatever the count).
func New(name string, workers int) (nn.Backend, error) {
	if err := Check("backend", name); err != nil {
		return nil, err
	}
	if name == "reference" {
		return reference.New(), nil
	}
	return nn.NewCPU(nn.DefaultGemm(), workers), nil
}
