package models

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"bayesnas/internal/allocs"
	"bayesnas/nn"
)

// fuzzParams is the network the weights fuzz targets load into: a weight,
// a buffer and a scalar.
func fuzzParams() []*nn.Param {
	ps := []*nn.Param{
		nn.NewParam("conv.weight", nn.Weight, 2, 3),
		nn.NewParam("bn.running_mean", nn.Buffer, 4),
		nn.NewParam("alpha", nn.ArchVar),
	}
	for i, p := range ps {
		for j := range p.Data {
			p.Data[j] = float32(10*i + j + 1)
		}
	}
	return ps
}

// fuzzWeightsFile writes params with SaveWeights and returns the bytes.
func fuzzWeightsFile(tb testing.TB, params []*nn.Param, meta map[string]string) []byte {
	p := filepath.Join(tb.TempDir(), "w.safetensors")
	if err := SaveWeights(p, params, meta); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func paramData(ps []*nn.Param) [][]uint32 {
	out := make([][]uint32, len(ps))
	for i, p := range ps {
		for _, v := range p.Data {
			out[i] = append(out[i], math.Float32bits(v))
		}
	}
	return out
}

// FuzzLoadWeights loads a safetensors file into fuzzParams (LoadWeights)
// and reads its metadata (ReadWeightsMetadata).
//
// It asserts: no panic; bad input is an error, and a failed load leaves
// the parameters as they were; a file LoadWeights accepts has readable
// metadata and round-trips: SaveWeights of what was loaded, loaded again,
// gives the same bits and metadata; allocation stays below 32 x the file's
// bytes + 1 MiB (the header is bounded by the file's length, the data by
// what the network's tensors occupy).
func FuzzLoadWeights(f *testing.F) {
	good := fuzzWeightsFile(f, fuzzParams(), map[string]string{"format": "weights", "k": "v"})
	f.Add(good)
	f.Add(fuzzWeightsFile(f, fuzzParams(), nil))
	f.Add(good[:len(good)-4])                                                // truncated data
	f.Add(append(slices.Clone(good), 0, 0, 0, 0))                            // data beyond the tensors
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\x7f{}"))                      // absurd header length
	f.Add(fuzzWeightsFile(f, fuzzParams()[:2], map[string]string{"a": "b"})) // a tensor missing

	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "w.safetensors")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		params := fuzzParams()
		before := paramData(params)
		var err, merr error
		var meta map[string]string
		alloc := allocs.During(func() {
			err = LoadWeights(path, params)
			meta, merr = ReadWeightsMetadata(path)
		})
		if bound := 32*uint64(len(b)) + 1<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for a file of %d bytes: bound %d", alloc, len(b), bound)
		}
		if err != nil {
			if !reflect.DeepEqual(paramData(params), before) {
				t.Fatalf("a failed load (%v) changed the parameters", err)
			}
			return
		}
		if merr != nil {
			t.Fatalf("weights load but their metadata does not: %v", merr)
		}
		again := filepath.Join(dir, "again.safetensors")
		if err := SaveWeights(again, params, meta); err != nil {
			t.Fatalf("writing loaded weights: %v", err)
		}
		params2 := fuzzParams()
		for _, p := range params2 {
			clear(p.Data)
		}
		if err := LoadWeights(again, params2); err != nil {
			t.Fatalf("the written weights do not load: %v", err)
		}
		meta2, err := ReadWeightsMetadata(again)
		if err != nil {
			t.Fatalf("the written weights' metadata: %v", err)
		}
		if !reflect.DeepEqual(paramData(params), paramData(params2)) || !reflect.DeepEqual(meta, meta2) {
			t.Fatalf("load(save(load(x))) != load(x): metadata %v, then %v", meta, meta2)
		}
	})
}

// fuzzCheckpointState is a network and its SGD optimizer, as a checkpoint
// holds them.
func fuzzCheckpointState(tb testing.TB) ([]*nn.Param, []CheckpointOptimizer, *nn.SGD) {
	params := fuzzParams()
	for _, p := range params {
		if p.Kind != nn.Buffer {
			p.Grad = make([]float32, len(p.Data))
		}
	}
	opt, err := nn.NewSGD(params, nn.SGDConfig{Momentum: 0.9})
	if err != nil {
		tb.Fatal(err)
	}
	return params, []CheckpointOptimizer{{Name: "opt", Opt: opt}}, opt
}

// FuzzLoadCheckpoint loads a checkpoint (LoadCheckpoint, format "fuzz")
// into fuzzParams and an SGD optimizer with momentum.
//
// It asserts: no panic; bad input (another format, a bad step count, the
// errors of FuzzLoadWeights) is an error, and a failed load leaves the
// parameters, the optimizer's slots and its step count as they were; an
// accepted checkpoint round-trips: SaveCheckpoint of what was loaded,
// loaded again, gives the same bits, step count and metadata; allocation
// stays below 32 x the file's bytes + 1 MiB.
func FuzzLoadCheckpoint(f *testing.F) {
	params, opts, opt := fuzzCheckpointState(f)
	opt.SetSteps(12)
	p := filepath.Join(f.TempDir(), "ck.safetensors")
	if err := SaveCheckpoint(p, params, opts, map[string]string{"format": "fuzz", "epoch": "3"}); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(fuzzWeightsFile(f, fuzzParams(), map[string]string{"format": "fuzz", "opt_steps": "x"}))
	f.Add(fuzzWeightsFile(f, fuzzParams(), map[string]string{"format": "other"}))
	f.Add(good[:40])

	state := func(params []*nn.Param, opt *nn.SGD) []any {
		return []any{paramData(params), opt.State(), opt.Steps()}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "ck.safetensors")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		params, opts, opt := fuzzCheckpointState(t)
		before := state(params, opt)
		var meta map[string]string
		var err error
		alloc := allocs.During(func() { meta, err = LoadCheckpoint(path, "fuzz", params, opts) })
		if bound := 32*uint64(len(b)) + 1<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for a file of %d bytes: bound %d", alloc, len(b), bound)
		}
		if err != nil {
			if after := state(params, opt); !reflect.DeepEqual(after, before) {
				t.Fatalf("a failed load (%v) changed the state", err)
			}
			return
		}
		again := filepath.Join(dir, "again.safetensors")
		if err := SaveCheckpoint(again, params, opts, meta); err != nil {
			t.Fatalf("writing a loaded checkpoint: %v", err)
		}
		params2, opts2, opt2 := fuzzCheckpointState(t)
		meta2, err := LoadCheckpoint(again, "fuzz", params2, opts2)
		if err != nil {
			t.Fatalf("the written checkpoint does not load: %v", err)
		}
		if !reflect.DeepEqual(state(params, opt), state(params2, opt2)) || !reflect.DeepEqual(meta, meta2) {
			t.Fatalf("load(save(load(x))) != load(x): metadata %v, then %v", meta, meta2)
		}
	})
}
