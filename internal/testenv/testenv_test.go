package testenv

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB whose Skipf and Fatalf record their message and
// end the calling goroutine, as testing's do, without ending the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// missing runs Missing on r in a goroutine of its own and reports whether
// Missing returned instead of ending it.
func missing(r *recorder, what, install string, err error) (returned bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		Missing(r, what, install, err)
		returned = true
	}()
	<-done
	return returned
}

func TestMissing(t *testing.T) {
	err := errors.New("libonnxruntime.so: no such file")
	for _, c := range []struct {
		ci       string
		wantFail bool
	}{{"true", true}, {"", false}, {"false", false}, {"1", false}} {
		t.Run("CI="+c.ci, func(t *testing.T) {
			t.Setenv("CI", c.ci)
			if CI() != c.wantFail {
				t.Errorf("CI() = %v", CI())
			}
			r := &recorder{TB: t}
			if missing(r, "ONNX Runtime", "bash scripts/ort.sh", err) {
				t.Fatal("Missing returned: the test would go on without its dependency")
			}
			msg := r.skipped
			if c.wantFail {
				msg = r.failed
				if r.skipped != "" {
					t.Errorf("skipped in CI: %q", r.skipped)
				}
			} else if r.failed != "" {
				t.Errorf("failed outside CI: %q", r.failed)
			}
			for _, want := range []string{"ONNX Runtime", "bash scripts/ort.sh", err.Error()} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not name %q", msg, want)
				}
			}
		})
	}
}
