package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestDropoutMask(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(40, 41))
		x := newInput(c, rng, "x", 10, 10, 10, 10)
		for i := range x.Data {
			x.Data[i] += 2 // keep every input non-zero so zeros in y are drops
		}
		const p = 0.3
		l, err := c.Dropout(x, p, 99)
		if err != nil {
			t.Fatal(err)
		}
		d := l.(Stochastic)
		l.Forward(true)
		y := l.Output()
		first := append([]float32(nil), y.Data...)
		dropped := 0
		for i, v := range y.Data {
			switch v {
			case 0:
				dropped++
			case x.Data[i] / (1 - p):
			default:
				if math.Abs(float64(v-x.Data[i]/(1-p))) > 1e-6 {
					t.Fatalf("y[%d] = %g, want 0 or %g", i, v, x.Data[i]/(1-p))
				}
			}
		}
		// 10000 Bernoulli(0.3) draws: mean 3000, sd 46; allow 5 sd.
		if dropped < 2770 || dropped > 3230 {
			t.Errorf("%d of 10000 dropped, want about 3000", dropped)
		}
		l.Forward(true)
		if d.Step() != 2 || slices.Equal(first, y.Data) {
			t.Errorf("the second step (counter %d) repeated the first mask", d.Step())
		}
		d.SetStep(0)
		l.Forward(true)
		if !slices.Equal(first, y.Data) {
			t.Errorf("SetStep(0) did not reproduce the first mask")
		}
		other, _ := c.Dropout(x, p, 100)
		other.Forward(true)
		if slices.Equal(first, other.Output().Data) {
			t.Errorf("seeds 99 and 100 gave the same mask")
		}
		l.Forward(false)
		if !slices.Equal(x.Data, y.Data) {
			t.Errorf("eval forward is not the identity")
		}
		clear(x.Grad)
		for i := range y.Grad {
			y.Grad[i] = 1
		}
		l.Backward()
		if !slices.Equal(x.Grad, y.Grad) {
			t.Errorf("eval backward is not the identity")
		}
	}
}

func TestDropPathMask(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(42, 43))
		x := newInput(c, rng, "x", 400, 2, 2, 2)
		for i := range x.Data {
			x.Data[i] += 2
		}
		const p = 0.25
		l, err := c.DropPath(x, p, 7)
		if err != nil {
			t.Fatal(err)
		}
		l.Forward(true)
		y, per := l.Output(), x.PerSample()
		dropped := 0
		for n := 0; n < 400; n++ {
			zeros := 0
			for i := n * per; i < (n+1)*per; i++ {
				if y.Data[i] == 0 {
					zeros++
				} else if math.Abs(float64(y.Data[i]-x.Data[i]/(1-p))) > 1e-6 {
					t.Fatalf("sample %d: y = %g, want %g", n, y.Data[i], x.Data[i]/(1-p))
				}
			}
			if zeros != 0 && zeros != per {
				t.Fatalf("sample %d: %d of %d elements dropped, want all or none", n, zeros, per)
			}
			if zeros == per {
				dropped++
			}
		}
		// 400 Bernoulli(0.25): mean 100, sd 8.7; allow 5 sd.
		if dropped < 57 || dropped > 143 {
			t.Errorf("%d of 400 samples dropped, want about 100", dropped)
		}
	}
}

func TestDropoutGradients(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(44, 45))
		for _, drop := range []string{"dropout", "droppath"} {
			x := newInput(c, rng, "x", 6, 2, 2, 3)
			var l Layer
			var err error
			if drop == "dropout" {
				l, err = c.Dropout(x, 0.4, 1)
			} else {
				l, err = c.DropPath(x, 0.4, 1)
			}
			if err != nil {
				t.Fatal(err)
			}
			l.(Stochastic).Freeze(true)
			gradCheck(t, l, []*Value{x}, nil, true, 30)
			checkAccumulates(t, l, []*Value{x}, nil, true)
			gradCheck(t, l, []*Value{x}, nil, false, 10)
			checkAccumulates(t, l, []*Value{x}, nil, false)
			l.(Stochastic).Freeze(false)
			checkNoAllocs(t, drop, l, true)
		}
	}
}
