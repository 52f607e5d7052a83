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
	out, src []float32
	offs     []int
	w        []float32
}

// randCase draws n outputs over a source with ntaps random offsets, n
// crossing the 8- and 64-element block sizes of the assembly.
func randCase(rng *rand.Rand, n, ntaps int) tapCase {
	c := tapCase{out: make([]float32, n), src: make([]float32, n+40), offs: make([]int, ntaps), w: make([]float32, ntaps)}
	for i := range c.src {
		c.src[i] = rng.Float32()*2 - 1
	}
	for i := range c.out {
		c.out[i] = rng.Float32()*2 - 1
	}
	for t := range c.offs {
		c.offs[t] = rng.IntN(41)
		c.w[t] = rng.Float32()*2 - 1
	}
	return c
}

func near(got float32, want float64) bool {
	return math.Abs(float64(got)-want) <= 1e-5*(1+math.Abs(want))
}

func TestMACMatchesNaive(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 71, 72, 127, 128, 200} {
			for _, ntaps := range []int{0, 1, 2, 3, 4, 5, 9, 25, 49} {
				for _, acc := range []bool{false, true} {
					c := randCase(rng, n, ntaps)
					want := make([]float64, n)
					for i := range want {
						if acc {
							want[i] = float64(c.out[i])
						}
						for k, o := range c.offs {
							want[i] += float64(c.w[k]) * float64(c.src[o+i])
						}
					}
					MAC(c.out, c.src, c.offs, c.w, acc)
					for i, w := range want {
						if !near(c.out[i], w) {
							t.Fatalf("n=%d taps=%d acc=%v: out[%d] = %g, want %g", n, ntaps, acc, i, c.out[i], w)
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
		for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 40, 100, 257} {
			for _, ntaps := range []int{0, 1, 3, 4, 5, 9, 25, 49} {
				c := randCase(rng, n, ntaps)
				dy := c.out
				sums := make([]float32, ntaps)
				want := make([]float64, ntaps)
				for k, o := range c.offs {
					sums[k] = c.w[k] // Dots adds: start from something non-zero
					want[k] = float64(c.w[k])
					for i, g := range dy {
						want[k] += float64(g) * float64(c.src[o+i])
					}
				}
				Dots(dy, c.src, c.offs, sums)
				for k, w := range want {
					if !near(sums[k], w) {
						t.Fatalf("n=%d taps=%d: out[%d] = %g, want %g", n, ntaps, k, sums[k], w)
					}
				}
			}
		}
	})
}

// TestOffsetsChecked: an offset running past the source is a panic naming
// the offset before any memory is touched (the assembly does not check).
func TestOffsetsChecked(t *testing.T) {
	paths(t, func(t *testing.T) {
		for _, f := range []func(){
			func() { MAC(make([]float32, 16), make([]float32, 20), []int{0, 5}, []float32{1, 1}, false) },
			func() { Dots(make([]float32, 16), make([]float32, 20), []int{-1}, make([]float32, 1)) },
			func() { MAC(make([]float32, 16), make([]float32, 20), []int{0}, []float32{1, 1}, false) },
		} {
			func() {
				defer func() {
					r := recover()
					if s, ok := r.(string); !ok || !strings.Contains(s, "offset") {
						t.Errorf("recovered %v, want a panic about the offsets", r)
					}
				}()
				f()
			}()
		}
	})
}
