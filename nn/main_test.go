package nn

import (
	"os"
	"testing"
)

// blasNote is EnsureBLASCoreType's note for this test process.
var blasNote string

// TestMain selects fast OpenBLAS kernels before any test or benchmark runs
// (re-executing the test binary once if needed), as main does in the tool.
func TestMain(m *testing.M) {
	blasNote = EnsureBLASCoreType()
	os.Exit(m.Run())
}
