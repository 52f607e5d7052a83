package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestGemmMatchesNaive runs every registered GEMM against naiveSgemm over all
// transpose combinations, sizes that are not multiples of any block size,
// leading dimensions larger than the matrix and several alpha/beta values.
// C starts as NaN garbage when beta == 0, which must be ignored.
func TestGemmMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := [][3]int{{1, 1, 1}, {3, 5, 7}, {4, 4, 4}, {17, 13, 9}, {5, 1, 300}, {1, 37, 2},
		{75, 70, 259}, {130, 515, 33}, {8, 600, 3}, {3, 4, 0}}
	for _, g := range Gemms() {
		for _, sz := range sizes {
			m, n, k := sz[0], sz[1], sz[2]
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					for _, ab := range [][2]float32{{1, 0}, {1, 1}, {0.5, -2}, {-1.5, 0}, {0, 0.5}} {
						name := fmt.Sprintf("%s/m%d_n%d_k%d_ta%v_tb%v_a%g_b%g", g.Name(), m, n, k, ta, tb, ab[0], ab[1])
						checkGemm(t, rng, g, name, ta, tb, m, n, k, ab[0], ab[1])
					}
				}
			}
		}
	}
}

func checkGemm(t *testing.T, rng *rand.Rand, g Gemm, name string, ta, tb bool, m, n, k int, alpha, beta float32) {
	t.Helper()
	// Stored shapes of A and B, with padding columns so that lda > columns.
	ar, ac := m, k
	if ta {
		ar, ac = k, m
	}
	br, bc := k, n
	if tb {
		br, bc = n, k
	}
	lda, ldb, ldc := ac+3, bc+1, n+2
	a := make([]float32, ar*lda)
	b := make([]float32, br*ldb)
	randFill(rng, a)
	randFill(rng, b)
	c := make([]float32, m*ldc)
	if beta == 0 {
		for i := range c {
			c[i] = float32(math.NaN())
		}
	} else {
		randFill(rng, c)
	}
	want := append([]float32(nil), c...)
	naiveSgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc)
	g.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	tol := 1e-5 * float64(k+1)
	for i := 0; i < m; i++ {
		for j := 0; j < ldc; j++ {
			got, w := c[i*ldc+j], want[i*ldc+j]
			if j >= n {
				// Padding beyond column n must be left untouched.
				if !(got == w || (math.IsNaN(float64(got)) && math.IsNaN(float64(w)))) {
					t.Fatalf("%s: C[%d][%d] (padding) changed to %g", name, i, j, got)
				}
				continue
			}
			if math.IsNaN(float64(got)) || math.Abs(float64(got-w)) > tol*math.Max(1, math.Abs(float64(w))) {
				t.Fatalf("%s: C[%d][%d] = %g, want %g", name, i, j, got, w)
			}
		}
	}
}

// BenchmarkGemm times the GEMM shapes of a 3x3 conv with 64 and with 16
// channels on a 32x32 image (forward, weight gradient, column gradient).
func BenchmarkGemm(b *testing.B) {
	shapes := []struct {
		name    string
		ta, tb  bool
		m, n, k int
	}{
		{"fwd_NN_64x1024x576", false, false, 64, 1024, 576},
		{"dW_NT_64x576x1024", false, true, 64, 576, 1024},
		{"dcol_TN_576x1024x64", true, false, 576, 1024, 64},
		{"fwd_NN_16x1024x144", false, false, 16, 1024, 144},
		{"dW_NT_16x144x1024", false, true, 16, 144, 1024},
		{"dcol_TN_144x1024x16", true, false, 144, 1024, 16},
		{"square_NN_512", false, false, 512, 512, 512},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, g := range Gemms() {
		for _, s := range shapes {
			b.Run(g.Name()+"/"+s.name, func(b *testing.B) {
				lda, ldb := s.k, s.n
				if s.ta {
					lda = s.m
				}
				if s.tb {
					ldb = s.k
				}
				x := make([]float32, s.m*s.k)
				y := make([]float32, s.k*s.n)
				z := make([]float32, s.m*s.n)
				randFill(rng, x)
				randFill(rng, y)
				for b.Loop() {
					g.Sgemm(s.ta, s.tb, s.m, s.n, s.k, 1, x, lda, y, ldb, 0, z, s.n)
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
