package models

import (
	"math"
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
	t.Run("every-op", func(t *testing.T) { checkDeferredGradClear(t, tinyGraph()) })
	t.Run("conv-kinds", func(t *testing.T) { checkDeferredGradClear(t, convKindsGraph()) })
}

// convKindsGraph feeds each convolution kind's input gradient from a value
// it alone consumes, so each is the first writer: pointwise (GEMM), strided
// 3x3 (col2im), depthwise, stride-1 3x3 (gathered), and a shared value whose
// last consumer is a max pool.
func convKindsGraph() *Graph {
	b := NewGraphBuilder("convkinds", "x", [3]int{3, 9, 9})
	b.Conv("c0", "x", 8, 3, 1, 1)
	b.Conv("pw", "c0", 8, 1, 1, 1)
	b.Conv("s2", "pw", 8, 3, 2, 2)
	b.Conv("dw", "s2", 8, 3, 1, 8)
	b.Conv("g1", "dw", 8, 3, 1, 1)
	b.Node("mp", OpMaxPool, Attrs{Kernel: 3, Stride: 1, Pad: 1}, "g1")
	b.Node("ad", OpAdd, Attrs{}, "g1", "mp")
	b.Node("gp", OpGAP, Attrs{}, "ad")
	b.Node("fc", OpLinear, Attrs{OutChannels: 3}, "gp")
	g, err := b.Finish("fc", nil)
	if err != nil {
		panic(err)
	}
	return g
}

func checkDeferredGradClear(t *testing.T, g *Graph) {
	be := cpuBackend(t)
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
	// stale leaves garbage in every gradient; with NaNs, any stale element
	// that a fresh backward pass reads shows up in the comparison.
	stale := func(nans bool) {
		for _, v := range net.Values {
			randomize(rng, v.Grad)
			for i := 0; nans && i < len(v.Grad); i += 7 {
				v.Grad[i] = float32(math.NaN())
			}
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
		stale(true)
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

	stale(false)
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
