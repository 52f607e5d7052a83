package nn

import (
	"math/rand/v2"
	"testing"
)

// Each per-sample gradient is <dy_b, x_b,j> (naive reference) and they sum
// to the weight's gradient.
func TestPerSampleWeightGrads(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, be := range testBackends() {
		xs := []*Value{NewValue("a", []int{3, 2, 2, 2}, true), NewValue("b", []int{3, 2, 2, 2}, true)}
		w := []*Param{NewParam("w0", ArchVar, 1), NewParam("w1", ArchVar, 1)}
		for _, x := range xs {
			randFill(rng, x.Data)
		}
		w[0].Data[0], w[1].Data[0] = 0.7, -1.3
		l, err := be.WeightedSum(xs, w)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := PerSampleWeightGrads(&addLayer{}); ok {
			t.Fatal("an add layer reports per-sample weight gradients")
		}
		l.Forward(true)
		dy := make([]float32, len(l.Output().Grad))
		randFill(rng, dy)
		copy(l.Output().Grad, dy)
		l.Backward()
		ws, g, ok := PerSampleWeightGrads(l)
		if !ok || len(ws) != 2 || len(g) != 3*2 {
			t.Fatalf("ok %v, %d weights, %d per-sample values", ok, len(ws), len(g))
		}
		total := [2]float64{float64(w[0].Grad[0]), float64(w[1].Grad[0])}
		per := l.Output().PerSample()
		for j := range 2 {
			var s float64
			for b := range 3 {
				var want float64
				for i := b * per; i < (b+1)*per; i++ {
					want += float64(dy[i]) * float64(xs[j].Data[i])
				}
				if d := g[b*2+j] - want; d > 1e-6 || d < -1e-6 {
					t.Errorf("%s: sample %d weight %d: %g, want %g", be.Name(), b, j, g[b*2+j], want)
				}
				s += g[b*2+j]
			}
			if d := s - total[j]; d > 1e-5 || d < -1e-5 {
				t.Errorf("%s: weight %d: per-sample sum %g, gradient %g", be.Name(), j, s, total[j])
			}
		}
	}
}
