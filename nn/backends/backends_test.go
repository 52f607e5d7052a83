package backends

import (
	"strings"
	"testing"
)

// Every name a configuration may give builds the backend it says or a clear
// error naming the key; an unknown name lists the known ones.
func TestNew(t *testing.T) {
	for name, want := range map[string]string{"": "cpu", "auto": "cpu", "cpu": "cpu", "reference": "reference"} {
		be, err := New(name, 2)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if !strings.HasPrefix(be.Name(), want) {
			t.Errorf("%q built %s, want %s", name, be.Name(), want)
		}
	}
	if err := Check("train.backend", "cuda"); err == nil || !strings.Contains(err.Error(), "train.backend = cuda") || !strings.Contains(err.Error(), "no CUDA backend") {
		t.Errorf("cuda: %v", err)
	}
	if _, err := New("tpu", 1); err == nil || !strings.Contains(err.Error(), `"tpu"`) || !strings.Contains(err.Error(), "reference") {
		t.Errorf("tpu: %v", err)
	}
}
