// Command bayesnas turns a dataset and a target device into a small, fast,
// deployable network: Bayesian one-shot architecture search, compression and
// ONNX export. Run `bayesnas --help` for the stages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"bayesnas/nn"
)

func main() {
	// OpenBLAS reads its core type when the library loads, before any Go code
	// runs: this may re-execute the binary once with the right setting.
	blasNote := nn.EnsureBLASCoreType()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot(blasNote).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bayesnas:", err)
		os.Exit(1)
	}
}
