// Command bayesnas turns a dataset and a target device into a small, fast,
// deployable network: Bayesian one-shot architecture search, compression and
// ONNX export. Run `bayesnas --help` for the stages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"bayesnas/nn"
	"bayesnas/pipeline"
)

func main() {
	// OpenBLAS reads its core type when the library loads, before any Go code
	// runs: this may re-execute the binary once with the right setting.
	blasNote := nn.EnsureBLASCoreType()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot(blasNote).ExecuteContext(ctx); err != nil {
		// One line, whatever the error holds: CI logs show the reason beside
		// the exit code (pipeline/exitcode.go).
		fmt.Fprintln(os.Stderr, "bayesnas:", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(pipeline.ExitCode(err))
	}
}
