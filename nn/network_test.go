package nn

import (
	"math/rand/v2"
	"testing"
)

// Dynamic pruning replaces Network.Layers between steps: the deferred
// gradient clearing must follow, or a value whose last consumer was removed
// keeps last step's gradient.
func TestZeroGradFollowsReplacedLayers(t *testing.T) {
	be := NewCPU(DefaultGemm(), 2)
	x := NewValue("x", []int{2, 3, 4, 4}, true)
	rng := rand.New(rand.NewPCG(1, 2))
	randFill(rng, x.Data)
	r1, _ := be.ReLU(x)
	r2, _ := be.ReLU(x)
	sum, _ := be.Add([]*Value{r1.Output(), r2.Output()})
	net := &Network{Backend: be, Input: x, Output: sum.Output(),
		Layers: []Layer{r1, r2, sum}, Values: []*Value{x, r1.Output(), r2.Output(), sum.Output()}}
	step := func() {
		net.ZeroGrad()
		net.Forward(true)
		for i := range net.Output.Grad {
			net.Output.Grad[i] = 1
		}
		net.Backward()
	}
	step()
	for i, v := range x.Data {
		if want := float32(0); v > 0 && x.Grad[i] != 2 || v <= 0 && x.Grad[i] != want {
			t.Fatalf("full network: x.Grad[%d] = %g for x = %g", i, x.Grad[i], v)
		}
	}
	// Replace r2 by a layer reading another value (the same number of
	// layers): x's last consumer is now r1.
	z := NewValue("z", []int{2, 3, 4, 4}, true)
	r3, _ := be.ReLU(z)
	net.Layers = []Layer{r1, r3, sum}
	for range 2 {
		step()
		for i, v := range x.Data {
			want := float32(0)
			if v > 0 {
				want = 1
			}
			if x.Grad[i] != want {
				t.Fatalf("pruned network: x.Grad[%d] = %g, want %g (stale gradient?)", i, x.Grad[i], want)
			}
		}
	}
}
