package bnplane

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

// widths cross the 8- and 16-element blocks and the masked tail.
var widths = []int{1, 3, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 49, 64, 100, 196}

// grids yields random grids: the operands are exactly as long as the grid
// needs, so the Go kernels' bounds checks catch an element too many, and
// the gaps between rows must stay untouched.
func grids(rng *rand.Rand, f func(g Grid)) {
	for _, rows := range []int{1, 2, 5} {
		for _, w := range widths {
			f(Grid{Rows: rows, Width: w, Stride: w + rng.IntN(3)*rng.IntN(9)})
		}
	}
}

func randSlice(rng *rand.Rand, n int, lo, hi float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = lo + (hi-lo)*rng.Float32()
	}
	return s
}

// inGrid reports whether element j lies in a row of g rather than a gap.
func inGrid(g Grid, j int) bool { return j%g.Stride < g.Width }

func near(got, want, scale float64) bool {
	return math.Abs(got-want) <= 2e-6*(scale+math.Abs(want))
}

// maskOf is what the kernels keep of dy: dy where m > 0, else 0.
func maskOf(dy, m float32, useMask bool) float64 {
	if useMask && !(m > 0) {
		return 0
	}
	return float64(dy)
}

func TestSumsAbout(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		grids(rng, func(g Grid) {
			x := randSlice(rng, g.span(), 2, 4)
			shift := float32(2.9)
			var ws, wq, scale float64
			for j, v := range x {
				if inGrid(g, j) {
					d := float64(v - shift)
					ws += d
					wq += d * d
					scale += math.Abs(d)
				}
			}
			s, q := SumsAbout(x, g, shift)
			if !near(s, ws, scale) || !near(q, wq, 0) {
				t.Fatalf("%+v: sums (%g, %g), want (%g, %g)", g, s, q, ws, wq)
			}
		})
	})
}

func TestAffine(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for _, useAdd := range []bool{false, true} {
			for _, relu := range []bool{false, true} {
				grids(rng, func(g Grid) {
					x := randSlice(rng, g.span(), -2, 2)
					var add []float32
					if useAdd {
						add = randSlice(rng, g.span(), -1, 1)
					}
					y := randSlice(rng, g.span(), -1, 1)
					before := append([]float32(nil), y...)
					sc, sh := float32(0.7), float32(-0.2)
					Affine(y, x, add, g, sc, sh, relu)
					for j := range y {
						if !inGrid(g, j) {
							if y[j] != before[j] {
								t.Fatalf("%+v: y[%d] in a gap changed", g, j)
							}
							continue
						}
						want := float64(x[j])*float64(sc) + float64(sh)
						if useAdd {
							want += float64(add[j])
						}
						if relu {
							want = math.Max(want, 0)
						}
						if !near(float64(y[j]), want, 1) {
							t.Fatalf("%+v add=%v relu=%v: y[%d] = %g, want %g", g, useAdd, relu, j, y[j], want)
						}
					}
				})
			}
		}
	})
}

// TestAffineReLUBits pins the ReLU to Go's max(v, 0) bit for bit on the
// special values, in every lane position (block and masked tail), so a fused
// layer equals batch norm followed by the ReLU layer.
func TestAffineReLUBits(t *testing.T) {
	paths(t, func(t *testing.T) {
		negZero := float32(math.Copysign(0, -1))
		special := []float32{negZero, 0, -1, 2, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-30, -1e-30}
		for _, w := range []int{9, 17, 20} {
			g := Grid{Rows: 1, Width: w, Stride: w}
			x := make([]float32, w)
			for i := range x {
				x[i] = special[i%len(special)]
			}
			y := make([]float32, w)
			// scale 1, shift -0: x*1 + -0 is x itself, -0 included.
			Affine(y, x, nil, g, 1, negZero, true)
			for i, v := range x {
				want := max(v*1+negZero, 0)
				if math.Float32bits(y[i]) != math.Float32bits(want) && !(math.IsNaN(float64(y[i])) && math.IsNaN(float64(want))) {
					t.Fatalf("width %d: relu(%g) = %g (%#x), want %g (%#x)", w, v, y[i], math.Float32bits(y[i]), want, math.Float32bits(want))
				}
			}
		}
	})
}

func TestDySums(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, useMask := range []bool{false, true} {
			grids(rng, func(g Grid) {
				dy := randSlice(rng, g.span(), -1, 1)
				x := randSlice(rng, g.span(), 0, 2)
				var mask []float32
				if useMask {
					mask = randSlice(rng, g.span(), -1, 1)
					mask[0] = float32(math.NaN()) // NaN > 0 is false: masked
				}
				mean := float32(0.8)
				var ws, wsx, scale float64
				for j := range x {
					if !inGrid(g, j) {
						continue
					}
					m := float32(1)
					if useMask {
						m = mask[j]
					}
					gr := maskOf(dy[j], m, useMask)
					ws += gr
					wsx += gr * float64(x[j]-mean)
					scale += math.Abs(gr)
				}
				s, sx := DySums(dy, mask, x, g, mean)
				if !near(s, ws, scale) || !near(sx, wsx, scale) {
					t.Fatalf("%+v mask=%v: sums (%g, %g), want (%g, %g)", g, useMask, s, sx, ws, wsx)
				}
			})
		}
	})
}

func TestInputGrad(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, useMask := range []bool{false, true} {
			for _, assign := range []bool{false, true} {
				grids(rng, func(g Grid) {
					dy := randSlice(rng, g.span(), -1, 1)
					x := randSlice(rng, g.span(), 0, 2)
					var mask []float32
					if useMask {
						mask = randSlice(rng, g.span(), -1, 1)
					}
					dx := randSlice(rng, g.span(), -1, 1)
					before := append([]float32(nil), dx...)
					k, a, b, mean := float32(1.3), float32(0.1), float32(-0.4), float32(0.9)
					InputGrad(dx, dy, mask, x, g, k, a, b, mean, assign)
					for j := range dx {
						if !inGrid(g, j) {
							if dx[j] != before[j] {
								t.Fatalf("%+v: dx[%d] in a gap changed", g, j)
							}
							continue
						}
						m := float32(1)
						if useMask {
							m = mask[j]
						}
						want := float64(k)*maskOf(dy[j], m, useMask) - float64(a) - float64(b)*float64(x[j]-mean)
						if !assign {
							want += float64(before[j])
						}
						if !near(float64(dx[j]), want, 2) {
							t.Fatalf("%+v mask=%v assign=%v: dx[%d] = %g, want %g", g, useMask, assign, j, dx[j], want)
						}
					}
				})
			}
		}
	})
}

func TestAddTo(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, assign := range []bool{false, true} {
			grids(rng, func(g Grid) {
				src := randSlice(rng, g.span(), -1, 1)
				dst := randSlice(rng, g.span(), -1, 1)
				before := append([]float32(nil), dst...)
				AddTo(dst, src, g, assign)
				for j := range dst {
					want := before[j]
					if inGrid(g, j) {
						want = src[j]
						if !assign {
							want = before[j] + src[j] // one rounding: exact on both paths
						}
					}
					if dst[j] != want {
						t.Fatalf("%+v assign=%v: dst[%d] = %g, want %g", g, assign, j, dst[j], want)
					}
				}
			})
		}
	})
}

// TestGridChecked: an operand shorter than the grid panics with a message
// naming it, before the assembly (which does not check) runs.
func TestGridChecked(t *testing.T) {
	paths(t, func(t *testing.T) {
		g := Grid{Rows: 2, Width: 8, Stride: 10}
		for _, c := range []struct {
			f    func()
			want string
		}{
			{func() { SumsAbout(make([]float32, 17), g, 0) }, "operand 0 has 17 elements"},
			{func() { Affine(make([]float32, 18), make([]float32, 18), make([]float32, 5), g, 1, 0, false) }, "operand 2 has 5"},
			{func() { DySums(make([]float32, 18), nil, make([]float32, 17), g, 0) }, "operand 2 has 17"},
			{func() {
				InputGrad(make([]float32, 18), make([]float32, 18), nil, make([]float32, 18), Grid{Rows: 1, Width: 8, Stride: 7}, 1, 0, 0, 0, true)
			}, "bad grid"},
			{func() { AddTo(make([]float32, 1), make([]float32, 18), g, true) }, "operand 0 has 1"},
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
