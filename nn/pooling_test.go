package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// refPool is the straightforward reference: for every output, visit every
// kernel offset, keep the ones that land inside the input.
func refPool(x []float32, n, c, h, w int, a PoolAttrs, isMax bool) (out []float32, oh, ow int) {
	oh = (h+2*a.Pad-a.Kernel)/a.Stride + 1
	ow = (w+2*a.Pad-a.Kernel)/a.Stride + 1
	out = make([]float32, n*c*oh*ow)
	for p := 0; p < n*c; p++ {
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				best := math.Inf(-1)
				sum, count := 0.0, 0
				for ky := 0; ky < a.Kernel; ky++ {
					for kx := 0; kx < a.Kernel; kx++ {
						iy, ix := oy*a.Stride-a.Pad+ky, ox*a.Stride-a.Pad+kx
						if iy < 0 || iy >= h || ix < 0 || ix >= w {
							continue
						}
						v := float64(x[p*h*w+iy*w+ix])
						best = math.Max(best, v)
						sum += v
						count++
					}
				}
				var r float64
				switch {
				case isMax:
					r = best
				case a.CountIncludePad:
					r = sum / float64(a.Kernel*a.Kernel)
				default:
					r = sum / float64(count)
				}
				out[(p*oh+oy)*ow+ox] = float32(r)
			}
		}
	}
	return out, oh, ow
}

func TestPoolingMatchesReference(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(3, 4))
		// Odd, even and degenerate sizes, for the general path and the fast
		// ones (2x2 stride 2, 3x3 stride 1 pad 1) alike.
		for _, hw := range [][2]int{{7, 5}, {6, 6}, {1, 3}, {2, 9}, {5, 2}} {
			x := newInput(c, rng, "x", 2, 3, hw[0], hw[1])
			for k := 1; k <= 3; k++ {
				for s := 1; s <= 3; s++ {
					for pad := 0; 2*pad <= k; pad++ {
						if OutSize(hw[0], k, s, pad, 1) < 1 || OutSize(hw[1], k, s, pad, 1) < 1 {
							continue
						}
						for _, kind := range []string{"max", "avg-include", "avg-exclude"} {
							a := PoolAttrs{Kernel: k, Stride: s, Pad: pad, CountIncludePad: kind == "avg-include"}
							var l Layer
							var err error
							if kind == "max" {
								l, err = c.MaxPool(x, a)
							} else {
								l, err = c.AvgPool(x, a)
							}
							if err != nil {
								t.Fatal(err)
							}
							l.Forward(true)
							want, oh, ow := refPool(x.Data, 2, 3, hw[0], hw[1], a, kind == "max")
							got := l.Output()
							if got.H() != oh || got.W() != ow {
								t.Fatalf("%s %v on %v: output %v, want %dx%d", kind, a, hw, got.Shape, oh, ow)
							}
							for i := range want {
								if math.Abs(float64(got.Data[i]-want[i])) > 1e-6 {
									t.Fatalf("%s %v on %v: out[%d] = %g, want %g", kind, a, hw, i, got.Data[i], want[i])
								}
							}
						}
					}
				}
			}
		}
	}
}

func TestPoolingGradients(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, a := range []PoolAttrs{
			{Kernel: 3, Stride: 2, Pad: 1},
			{Kernel: 3, Stride: 2, Pad: 1, CountIncludePad: true},
			{Kernel: 2, Stride: 2},
			{Kernel: 3, Stride: 1, Pad: 1},
			{Kernel: 3, Stride: 1, Pad: 1, CountIncludePad: true},
			{Kernel: 2, Stride: 2, CountIncludePad: true},
		} {
			for _, isMax := range []bool{true, false} {
				if isMax && a.CountIncludePad {
					continue
				}
				x := c.NewValue("x", []int{2, 2, 5, 7}, true)
				fillSpaced(rng, x.Data)
				var l Layer
				var err error
				if isMax {
					l, err = c.MaxPool(x, a)
				} else {
					l, err = c.AvgPool(x, a)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Run(fmt.Sprintf("max=%v/%+v", isMax, a), func(t *testing.T) {
					gradCheck(t, l, []*Value{x}, nil, true, 25)
					checkAccumulates(t, l, []*Value{x}, nil, true)
					checkNoAllocs(t, "pool", l, true)
				})
			}
		}
		x := newInput(c, rng, "x", 3, 4, 5, 3)
		l, err := c.GlobalAvgPool(x)
		if err != nil {
			t.Fatal(err)
		}
		if s := l.Output().Shape; len(s) != 4 || s[0] != 3 || s[1] != 4 || s[2] != 1 || s[3] != 1 {
			t.Fatalf("global pool output shape %v, want [3 4 1 1]", s)
		}
		l.Forward(true)
		for p := 0; p < 12; p++ {
			var s float64
			for _, v := range x.Data[p*15 : (p+1)*15] {
				s += float64(v)
			}
			if got := l.Output().Data[p]; math.Abs(float64(got)-s/15) > 1e-6 {
				t.Fatalf("global pool plane %d = %g, want %g", p, got, s/15)
			}
		}
		gradCheck(t, l, []*Value{x}, nil, true, 20)
		checkAccumulates(t, l, []*Value{x}, nil, true)
		checkNoAllocs(t, "globalavgpool", l, true)
	}
}
