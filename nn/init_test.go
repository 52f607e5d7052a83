package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHeNormal(t *testing.T) {
	for _, tc := range []struct {
		mode FanMode
		fan  int
	}{{FanIn, 32 * 9}, {FanOut, 64 * 9}} {
		p := NewParam("conv.w", Weight, 64, 32, 3, 3)
		if err := HeNormal(p, tc.mode, rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatal(err)
		}
		var s, sq float64
		for _, v := range p.Data {
			s += float64(v)
			sq += float64(v) * float64(v)
		}
		n := float64(len(p.Data))
		mean, std := s/n, math.Sqrt(sq/n-(s/n)*(s/n))
		want := math.Sqrt(2 / float64(tc.fan))
		// 18432 samples: the sample sd is within 1% of the true one with
		// overwhelming probability; 3% leaves room, a wrong fan is off by 29%.
		if math.Abs(std/want-1) > 0.03 || math.Abs(mean) > 4*want/math.Sqrt(n) {
			t.Errorf("mode %d: mean %g std %g, want 0 and %g", tc.mode, mean, std, want)
		}
		q := NewParam("conv.w", Weight, 64, 32, 3, 3)
		HeNormal(q, tc.mode, rand.New(rand.NewPCG(1, 2)))
		if !slices.Equal(p.Data, q.Data) {
			t.Errorf("same seed gave different weights")
		}
		HeNormal(q, tc.mode, rand.New(rand.NewPCG(1, 3)))
		if slices.Equal(p.Data, q.Data) {
			t.Errorf("different seeds gave the same weights")
		}
	}
	err := HeNormal(NewParam("bn.gamma", NoDecay, 8), FanIn, rand.New(rand.NewPCG(1, 2)))
	wantErr(t, "1-D", err, "bn.gamma", "[8]")
	err = HeNormal(NewParam("fc.w", Weight, 8, 4), FanIn, nil)
	wantErr(t, "nil rng", err, "rng")
}
