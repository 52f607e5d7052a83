package models

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDeferredGradClear checks Network.ZeroGrad+Backward, which clears value
// gradients lazily or lets their first writer overwrite them, against clearing
// everything up front and running each layer's (adding) Backward, on the
// every-op graph with stale gradients everywhere; and that a second Backward
// without ZeroGrad adds again, as the layers do.
func TestDeferredGradClear(t *testing.T) {
	be := cpuBackend(t)
	g := tinyGraph()
	net, err := Compile(g, be, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	randomize(rng, net.Input.Data)
	r := make([]float32, len(net.Output.Data))
	randomize(rng, r)
	stale := func() {
		for _, v := range net.Values {
			randomize(rng, v.Grad)
		}
		for _, p := range net.Params {
			randomize(rng, p.Grad)
		}
	}
	snapshot := func() [][]float32 {
		var s [][]float32
		for _, v := range net.Values {
			s = append(s, slices.Clone(v.Grad))
		}
		for _, p := range net.Params {
			s = append(s, slices.Clone(p.Grad))
		}
		return s
	}
	layerByLayer := func() {
		for i := len(net.Layers) - 1; i >= 0; i-- {
			net.Layers[i].Backward()
		}
	}
	compare := func(what string, got, want [][]float32) {
		t.Helper()
		for i := range want {
			for j := range want[i] {
				if got[i][j] != want[i][j] {
					t.Fatalf("%s: tensor %d element %d = %g, want %g", what, i, j, got[i][j], want[i][j])
				}
			}
		}
	}
	net.Forward(true)
	for range 2 { // the second round runs on a plan built by the first
		stale()
		net.ZeroGrad()
		copy(net.Output.Grad, r)
		net.Backward()
		got := snapshot()

		for _, v := range net.Values {
			clear(v.Grad)
		}
		for _, p := range net.Params {
			clear(p.Grad)
		}
		copy(net.Output.Grad, r)
		layerByLayer()
		compare("ZeroGrad+Backward", got, snapshot())
	}

	stale()
	before := snapshot()
	net.Backward()
	got := snapshot()
	restore := func(s [][]float32) {
		for i, v := range net.Values {
			copy(v.Grad, s[i])
		}
		for i, p := range net.Params {
			copy(p.Grad, s[len(net.Values)+i])
		}
	}
	restore(before)
	layerByLayer()
	compare("Backward without ZeroGrad", got, snapshot())
}
