package models

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Weights or a checkpoint holding NaN or Inf fail at load, naming the file
// and the tensor, and change nothing (issue 17, weak: such a checkpoint was
// reported later as a NaN loss, "learning rate too high?").
func TestLoadRefusesNonFiniteValues(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		v    float32
		want string
	}{
		{float32(math.NaN()), "NaN"},
		{float32(math.Inf(1)), "+Inf"},
		{float32(math.Inf(-1)), "-Inf"},
	} {
		bad := testParams()
		bad[1].Data[2] = c.v // bn.running_var
		p := filepath.Join(dir, "w.safetensors")
		if err := SaveWeights(p, bad, nil); err != nil {
			t.Fatal(err)
		}
		ps := testParams()
		err := LoadWeights(p, ps)
		want := `loading weights ` + p + `: tensor "bn.running_var" holds ` + c.want + ` at index 2 of 3`
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("weights with %v: err = %v, want prefix %q", c.v, err, want)
		}
		for i, q := range testParams() {
			if !slices.Equal(q.Data, ps[i].Data) {
				t.Errorf("weights with %v: a failed load changed %s", c.v, q.Name)
			}
		}
	}
	// A checkpoint: the optimizer's slots are tensors too.
	params, opts, _ := fuzzCheckpointState(t)
	p := filepath.Join(dir, "ckpt.safetensors")
	params[0].Data[0] = float32(math.NaN())
	if err := SaveCheckpoint(p, params, opts, map[string]string{"format": "fuzz"}); err != nil {
		t.Fatal(err)
	}
	params, opts, _ = fuzzCheckpointState(t)
	_, err := LoadCheckpoint(p, "fuzz", params, opts)
	want := `loading weights ` + p + `: tensor "` + params[0].Name + `" holds NaN at index 0`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("checkpoint with NaN: err = %v, want prefix %q", err, want)
	}
}
