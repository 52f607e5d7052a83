package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// refPool is the straightforward reference: for every output, visit every
// kernel offset, keep the ones that land inside the input.
func refPool(x []float32, n, c, h, w int, a PoolAttrs, isMax bool) (out []float32, oh, ow int) {
	oh = (h+2*a.Pad-a.Kernel)/a.Stride + 1
	ow = (w+2*a.Pad-a.Kernel)/a.Stride + 1
	if a.CeilMode {
		// Round up; drop a last window starting beyond input + left pad.
		ceil := func(in int) int {
			o := int(math.Ceil(float64(in+2*a.Pad-a.Kernel)/float64(a.Stride))) + 1
			if (o-1)*a.Stride >= in+a.Pad {
				o--
			}
			return o
		}
		oh, ow = ceil(h), ceil(w)
	}
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
						for _, kind := range []string{"max", "avg-include", "avg-exclude", "max-ceil", "avg-exclude-ceil"} {
							a := PoolAttrs{Kernel: k, Stride: s, Pad: pad, CountIncludePad: kind == "avg-include",
								CeilMode: strings.HasSuffix(kind, "-ceil")}
							var l Layer
							var err error
							isMax := strings.HasPrefix(kind, "max")
							if isMax {
								l, err = c.MaxPool(x, a)
							} else {
								l, err = c.AvgPool(x, a)
							}
							if err != nil {
								t.Fatal(err)
							}
							l.Forward(true)
							want, oh, ow := refPool(x.Data, 2, 3, hw[0], hw[1], a, isMax)
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
			{Kernel: 2, Stride: 2, CeilMode: true}, // 5x7: overhanging last windows
			{Kernel: 3, Stride: 2, Pad: 1, CeilMode: true},
			{Kernel: 3, Stride: 3, CeilMode: true},
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

// Ceil mode changes the output size only where a window overhangs, and is
// refused with count_include_pad (no shared convention for the divisor).
func TestPoolCeilMode(t *testing.T) {
	for _, c := range []struct{ in, k, s, p, floor, ceil int }{
		{7, 2, 2, 0, 3, 4}, {8, 2, 2, 0, 4, 4}, {5, 3, 2, 1, 3, 3}, {6, 3, 2, 1, 3, 4}, {7, 3, 3, 0, 2, 3}, {4, 3, 3, 1, 2, 2},
	} {
		if got := PoolOutSize(c.in, c.k, c.s, c.p, false); got != c.floor {
			t.Errorf("%+v: floor size %d, want %d", c, got, c.floor)
		}
		if got := PoolOutSize(c.in, c.k, c.s, c.p, true); got != c.ceil {
			t.Errorf("%+v: ceil size %d, want %d", c, got, c.ceil)
		}
	}
	be := NewCPU(DefaultGemm(), 1)
	x := be.NewValue("x", []int{1, 1, 5, 5}, true)
	if _, err := be.AvgPool(x, PoolAttrs{Kernel: 2, Stride: 2, CeilMode: true, CountIncludePad: true}); err == nil || !strings.Contains(err.Error(), "ceil mode") {
		t.Errorf("ceil mode with count_include_pad: err = %v", err)
	}
}
