package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestMain clears the BAYESNAS_* variables of the shell running the tests
// (BAYESNAS_THREADS=1 on a shared machine, say): they override the config
// files and defaults the tests set up and would change the errors and
// settings the tests expect. Tests that check the variables set them. The
// tools' own variables (where ONNX Runtime is cached, ...) stay.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix) && !slices.Contains(toolVariables, k) {
			os.Unsetenv(k)
		}
	}
	os.Exit(m.Run())
}
