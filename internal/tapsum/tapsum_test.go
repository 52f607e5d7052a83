package tapsum

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// paths runs f once with the AVX2 kernels (where the CPU has them) and once
// with the Go kernels only.
func paths(t *testing.T, f func(t *testing.T)) {
	defer func(on bool) { UseAVX2 = on }(UseAVX2)
	if UseAVX2 {
		t.Run("avx2", f)
	} else {
		t.Log("no AVX2+FMA (or a purego/non-amd64 build): Go kernels only")
	}
	UseAVX2 = false
	t.Run("go", f)
}

type tapCase struct {
	g        Grid
	out, src []float32
	offs     []int
	w        []float32
}

// randCase draws a grid of rows x width with ntaps random offsets, width
// crossing the 8- and 32-element blocks and the masked tail of the assembly.
// The output and source are exactly as long as the grid needs, so the Go
// kernels' bounds checks catch an element too many.
func randCase(rng *rand.Rand, rows, width, ntaps int) tapCase {
	g := Grid{Rows: rows, Width: width, OutStride: width + rng.IntN(3), SrcStride: width + rng.IntN(9)}
	maxOff := 20
	c := tapCase{g: g, offs: make([]int, ntaps), w: make([]float32, ntaps)}
	c.out = make([]float32, (rows-1)*g.OutStride+width)
	c.src = make([]float32, maxOff+(rows-1)*g.SrcStride+width)
	for i := range c.src {
		c.src[i] = rng.Float32()*2 - 1
	}
	for i := range c.out {
		c.out[i] = rng.Float32()*2 - 1
	}
	for t := range c.offs {
		c.offs[t] = rng.IntN(maxOff + 1)
		c.w[t] = rng.Float32()*2 - 1
	}
	return c
}

func near(got float32, want float64) bool {
	return math.Abs(float64(got)-want) <= 1e-5*(1+math.Abs(want))
}

var widths = []int{1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 100}

func TestMACMatchesNaive(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, rows := range []int{1, 2, 5} {
			for _, width := range widths {
				for _, ntaps := range []int{0, 1, 2, 3, 4, 5, 9, 25, 49} {
					for _, acc := range []bool{false, true} {
						c := randCase(rng, rows, width, ntaps)
						init := float32(0.25)
						before := append([]float32(nil), c.out...)
						MAC(c.out, c.src, c.g, c.offs, c.w, init, acc)
						for r := 0; r < rows; r++ {
							for i := 0; i < c.g.OutStride && r*c.g.OutStride+i < len(c.out); i++ {
								j := r*c.g.OutStride + i
								if i >= width { // between rows: untouched
									if c.out[j] != before[j] {
										t.Fatalf("%+v: out[%d] outside the grid changed", c.g, j)
									}
									continue
								}
								want := float64(init)
								if acc {
									want = float64(before[j])
								}
								for k, o := range c.offs {
									want += float64(c.w[k]) * float64(c.src[o+r*c.g.SrcStride+i])
								}
								if !near(c.out[j], want) {
									t.Fatalf("%+v taps=%d acc=%v: out[%d] = %g, want %g", c.g, ntaps, acc, j, c.out[j], want)
								}
							}
						}
					}
				}
			}
		}
	})
}

func TestDotsMatchesNaive(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for _, rows := range []int{1, 2, 5} {
			for _, width := range widths {
				for _, ntaps := range []int{0, 1, 3, 4, 5, 9, 25, 49} {
					c := randCase(rng, rows, width, ntaps)
					sums := make([]float32, ntaps)
					want := make([]float64, ntaps)
					for k, o := range c.offs {
						sums[k] = c.w[k] // Dots adds: start from something non-zero
						want[k] = float64(c.w[k])
						for r := 0; r < rows; r++ {
							for i := 0; i < width; i++ {
								want[k] += float64(c.out[r*c.g.OutStride+i]) * float64(c.src[o+r*c.g.SrcStride+i])
							}
						}
					}
					Dots(c.out, c.src, c.g, c.offs, sums)
					for k, w := range want {
						if !near(sums[k], w) {
							t.Fatalf("%+v taps=%d: sums[%d] = %g, want %g", c.g, ntaps, k, sums[k], w)
						}
					}
				}
			}
		}
	})
}

// TestGridChecked: a grid or offset reaching past the slices panics with a
// message naming it, before the assembly (which does not check) runs.
func TestGridChecked(t *testing.T) {
	paths(t, func(t *testing.T) {
		g := Grid{Rows: 2, Width: 8, OutStride: 8, SrcStride: 10}
		for _, c := range []struct {
			f    func()
			want string
		}{
			{func() { MAC(make([]float32, 16), make([]float32, 22), g, []int{0, 5}, []float32{1, 1}, 0, false) }, "offset 5"},
			{func() { Dots(make([]float32, 16), make([]float32, 30), g, []int{-1}, make([]float32, 1)) }, "offset -1"},
			{func() { MAC(make([]float32, 15), make([]float32, 30), g, []int{0}, []float32{1}, 0, false) }, "needs 16 outputs"},
			{func() { MAC(make([]float32, 16), make([]float32, 30), g, []int{0}, []float32{1, 1}, 0, false) }, "1 offsets, 2 weights"},
			{func() {
				Dots(make([]float32, 16), make([]float32, 30), Grid{Rows: 2, Width: 8, OutStride: 7}, []int{0}, make([]float32, 1))
			}, "bad grid"},
		} {
			func() {
				defer func() {
					r := recover()
					if s, ok := r.(string); !ok || !strings.Contains(s, c.want) {
						t.Errorf("recovered %v, want a panic containing %q", r, c.want)
					}
				}()
				c.f()
			}()
		}
	})
}
