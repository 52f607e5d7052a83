package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestLinear(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(20, 21))
		for _, shape := range [][]int{{3, 5}, {2, 2, 3, 2}} {
			x := newInput(c, rng, "x", shape...)
			in := x.PerSample()
			w, b := NewParam("fc.w", Weight, 4, in), NewParam("fc.b", NoDecay, 4)
			randFill(rng, w.Data)
			randFill(rng, b.Data)
			l, err := c.Linear(x, w, b)
			if err != nil {
				t.Fatal(err)
			}
			l.Forward(true)
			y := l.Output()
			if len(y.Shape) != 2 || y.Shape[0] != shape[0] || y.Shape[1] != 4 {
				t.Fatalf("output shape %v, want [%d 4]", y.Shape, shape[0])
			}
			for n := 0; n < shape[0]; n++ {
				for o := 0; o < 4; o++ {
					want := float64(b.Data[o])
					for i := 0; i < in; i++ {
						want += float64(x.Data[n*in+i]) * float64(w.Data[o*in+i])
					}
					if got := y.Data[n*4+o]; math.Abs(float64(got)-want) > 1e-5 {
						t.Fatalf("%v: y[%d,%d] = %g, want %g", shape, n, o, got, want)
					}
				}
			}
			gradCheck(t, l, []*Value{x}, []*Param{w, b}, true, 30)
			checkAccumulates(t, l, []*Value{x}, []*Param{w, b}, true)
			checkNoAllocs(t, "linear", l, true)
		}
	}
}
