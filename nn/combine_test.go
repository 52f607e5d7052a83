package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAddAndWeightedSum(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(30, 31))
		xs := []*Value{newInput(c, rng, "a", 2, 3, 2, 2), newInput(c, rng, "b", 2, 3, 2, 2), newInput(c, rng, "c", 2, 3, 2, 2)}
		add, err := c.Add(xs)
		if err != nil {
			t.Fatal(err)
		}
		add.Forward(true)
		for i := range xs[0].Data {
			want := xs[0].Data[i] + xs[1].Data[i] + xs[2].Data[i]
			if got := add.Output().Data[i]; math.Abs(float64(got-want)) > 1e-6 {
				t.Fatalf("add[%d] = %g, want %g", i, got, want)
			}
		}
		gradCheck(t, add, xs, nil, true, 10)
		checkAccumulates(t, add, xs, nil, true)
		checkNoAllocs(t, "add", add, true)

		ws := []*Param{NewParam("w0", ArchVar, 1), NewParam("w1", ArchVar, 1), NewParam("w2", ArchVar, 1)}
		for i, p := range ws {
			p.Data[0] = 0.5 - 0.4*float32(i)
		}
		wsum, err := c.WeightedSum(xs, ws)
		if err != nil {
			t.Fatal(err)
		}
		wsum.Forward(true)
		for i := range xs[0].Data {
			want := 0.5*xs[0].Data[i] + 0.1*xs[1].Data[i] - 0.3*xs[2].Data[i]
			if got := wsum.Output().Data[i]; math.Abs(float64(got-want)) > 1e-6 {
				t.Fatalf("weightedsum[%d] = %g, want %g", i, got, want)
			}
		}
		gradCheck(t, wsum, xs, ws, true, 10)
		checkAccumulates(t, wsum, xs, ws, true)
		checkNoAllocs(t, "weightedsum", wsum, true)
	}
}

// TestChannelMoves checks the copy kernels element by element against their
// index definitions, then their gradients.
func TestChannelMoves(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(32, 33))
		const n, h, w = 2, 3, 2
		a, b := newInput(c, rng, "a", n, 2, h, w), newInput(c, rng, "b", n, 3, h, w)
		at := func(v *Value, s, ch, i int) float32 { return v.Data[(s*v.C()+ch)*h*w+i] }
		check := func(name string, l Layer, outC int, want func(s, ch, i int) float32) {
			t.Helper()
			l.Forward(true)
			y := l.Output()
			if y.C() != outC || y.N() != n || y.H() != h || y.W() != w {
				t.Fatalf("%s: output shape %v, want [%d %d %d %d]", name, y.Shape, n, outC, h, w)
			}
			for s := 0; s < n; s++ {
				for ch := 0; ch < outC; ch++ {
					for i := 0; i < h*w; i++ {
						if got, exp := at(y, s, ch, i), want(s, ch, i); got != exp {
							t.Fatalf("%s: y[%d,%d,%d] = %g, want %g", name, s, ch, i, got, exp)
						}
					}
				}
			}
		}
		cat, err := c.Concat([]*Value{a, b, a})
		if err != nil {
			t.Fatal(err)
		}
		check("concat", cat, 7, func(s, ch, i int) float32 {
			switch {
			case ch < 2:
				return at(a, s, ch, i)
			case ch < 5:
				return at(b, s, ch-2, i)
			}
			return at(a, s, ch-5, i)
		})
		gradCheck(t, cat, []*Value{a, b}, nil, true, 12)
		checkAccumulates(t, cat, []*Value{a, b}, nil, true)
		checkNoAllocs(t, "concat", cat, true)

		slice, err := c.SliceChannels(b, 1, 3)
		if err != nil {
			t.Fatal(err)
		}
		check("slice", slice, 2, func(s, ch, i int) float32 { return at(b, s, ch+1, i) })
		gradCheck(t, slice, []*Value{b}, nil, true, 12)
		checkAccumulates(t, slice, []*Value{b}, nil, true)
		checkNoAllocs(t, "slice", slice, true)

		pad, err := c.PadChannels(a, 5)
		if err != nil {
			t.Fatal(err)
		}
		// Dirty the output first: the padding must be written, not assumed.
		for i := range pad.Output().Data {
			pad.Output().Data[i] = 9
		}
		check("pad", pad, 5, func(s, ch, i int) float32 {
			if ch < 2 {
				return at(a, s, ch, i)
			}
			return 0
		})
		gradCheck(t, pad, []*Value{a}, nil, true, 12)
		checkAccumulates(t, pad, []*Value{a}, nil, true)
		checkNoAllocs(t, "pad", pad, true)

		x6 := newInput(c, rng, "x6", n, 6, h, w)
		shuf, err := c.ChannelShuffle(x6, 2)
		if err != nil {
			t.Fatal(err)
		}
		// groups 2 of 3 channels: [0 1 2 | 3 4 5] -> 0 3 1 4 2 5.
		perm := []int{0, 3, 1, 4, 2, 5}
		check("shuffle", shuf, 6, func(s, ch, i int) float32 { return at(x6, s, perm[ch], i) })
		gradCheck(t, shuf, []*Value{x6}, nil, true, 12)
		checkAccumulates(t, shuf, []*Value{x6}, nil, true)
		checkNoAllocs(t, "shuffle", shuf, true)

		flat := newInput(c, rng, "flat", 3, 4)
		fs, err := c.SliceChannels(flat, 2, 4)
		if err != nil {
			t.Fatal(err)
		}
		fs.Forward(true)
		if s := fs.Output().Shape; len(s) != 2 || s[1] != 2 || fs.Output().Data[1] != flat.Data[3] {
			t.Fatalf("slice of [N,F]: shape %v, data %v", s, fs.Output().Data)
		}
	}
}
