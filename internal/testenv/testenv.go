// Package testenv decides what a test does when something it needs from
// outside the repository is missing: ONNX Runtime, a Debian package's files
// (libonnx-testdata, python3-onnx, dataset-fashion-mnist).
//
// On a developer's machine such a test is skipped, saying how to install
// what it needs. In CI (the environment variable CI is "true", as .ci/run,
// GitHub Actions and GitLab CI set it) it fails instead: CI installs every
// dependency first (go tool task test runs task setup), so a missing one
// there is a broken setup, and a skip would report as a pass what was never
// checked.
package testenv

import (
	"os"
	"testing"
)

// CI reports whether the tests run in CI: $CI is "true".
func CI() bool { return os.Getenv("CI") == "true" }

// Missing ends the test t, which cannot run because what is missing (err
// says why): it skips t, or fails it in CI. install says how to get it (a
// command or a package to install); both go into the message.
func Missing(t testing.TB, what, install string, err error) {
	t.Helper()
	if CI() {
		t.Fatalf("%s missing (%v); install it: %s (CI=true: a missing dependency fails the test)", what, err, install)
	}
	t.Skipf("SKIP: %s missing (%v); install it: %s", what, err, install)
}
