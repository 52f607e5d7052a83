package nn

import "sync"

// goGemm is the pure-Go SGEMM, compiled into every build so that the engine
// runs (more slowly) without cgo or OpenBLAS. It follows the BLIS layout:
// blocks of B (kc x nc) and A (mc x kc) are packed into contiguous panels so
// that the register-blocked micro-kernel reads both operands sequentially,
// whatever the transposes and leading dimensions of the caller.
type goGemm struct{}

func init() { registerGemm(goGemm{}) }

// Block sizes: an A block (gemmMC x gemmKC, 72 KiB) stays in L2 while the
// micro-kernel streams over a B panel (gemmKC x gemmNR) that fits in L1.
// The 2x3 tile is small because Go keeps only 15 XMM registers and its
// scheduler issues all products before the adds: larger tiles spill the
// accumulators and ran 2x slower on this machine.
const (
	gemmMR = 2
	gemmNR = 3
	gemmKC = 256
	gemmMC = 72
	gemmNC = 513
)

type gemmScratch struct {
	a [gemmMC * gemmKC]float32
	b [gemmKC * gemmNC]float32
}

// gemmScratchPool hands each concurrent Sgemm call its own packing buffers;
// in steady state Get returns a cached buffer, so calls do not allocate.
var gemmScratchPool = sync.Pool{New: func() any { return new(gemmScratch) }}

func (goGemm) Name() string { return "go" }

func (goGemm) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleRows(m, n, beta, c, ldc)
		return
	}
	s := gemmScratchPool.Get().(*gemmScratch)
	defer gemmScratchPool.Put(s)
	for jc := 0; jc < n; jc += gemmNC {
		nc := min(gemmNC, n-jc)
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			packB(transB, b, ldb, pc, jc, kc, nc, s.b[:])
			// Only the first k block may see beta: later ones accumulate.
			bet := beta
			if pc > 0 {
				bet = 1
			}
			for ic := 0; ic < m; ic += gemmMC {
				mc := min(gemmMC, m-ic)
				packA(transA, a, lda, ic, pc, mc, kc, s.a[:])
				macroKernel(mc, nc, kc, alpha, s.a[:], s.b[:], bet, c[ic*ldc+jc:], ldc)
			}
		}
	}
}

// scaleRows sets C = beta*C; beta == 0 overwrites, so NaN garbage in C is ignored.
func scaleRows(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		if beta != 1 {
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// packA copies op(A)[i0:i0+mc, p0:p0+kc] into panels of gemmMR rows, each
// stored k-major (gemmMR values per k), zero-padding the last panel.
func packA(trans bool, a []float32, lda, i0, p0, mc, kc int, dst []float32) {
	for ip := 0; ip < mc; ip += gemmMR {
		panel := dst[ip*kc : ip*kc+gemmMR*kc]
		rows := min(gemmMR, mc-ip)
		for r := 0; r < gemmMR; r++ {
			if r >= rows {
				for p := 0; p < kc; p++ {
					panel[p*gemmMR+r] = 0
				}
				continue
			}
			i := i0 + ip + r
			if trans {
				// op(A)[i][p] = A[p][i]
				for p := 0; p < kc; p++ {
					panel[p*gemmMR+r] = a[(p0+p)*lda+i]
				}
			} else {
				src := a[i*lda+p0 : i*lda+p0+kc]
				for p, v := range src {
					panel[p*gemmMR+r] = v
				}
			}
		}
	}
}

// packB copies op(B)[p0:p0+kc, j0:j0+nc] into panels of gemmNR columns, each
// stored k-major, zero-padding the last panel.
func packB(trans bool, b []float32, ldb, p0, j0, kc, nc int, dst []float32) {
	for jp := 0; jp < nc; jp += gemmNR {
		panel := dst[jp*kc : jp*kc+gemmNR*kc]
		cols := min(gemmNR, nc-jp)
		if !trans && cols == gemmNR {
			for p := 0; p < kc; p++ {
				src := b[(p0+p)*ldb+j0+jp : (p0+p)*ldb+j0+jp+gemmNR]
				copy(panel[p*gemmNR:p*gemmNR+gemmNR], src)
			}
			continue
		}
		for q := 0; q < gemmNR; q++ {
			if q >= cols {
				for p := 0; p < kc; p++ {
					panel[p*gemmNR+q] = 0
				}
				continue
			}
			j := j0 + jp + q
			if trans {
				// op(B)[p][j] = B[j][p]
				src := b[j*ldb+p0 : j*ldb+p0+kc]
				for p, v := range src {
					panel[p*gemmNR+q] = v
				}
			} else {
				for p := 0; p < kc; p++ {
					panel[p*gemmNR+q] = b[(p0+p)*ldb+j]
				}
			}
		}
	}
}

// macroKernel multiplies a packed mc x kc block of A with a packed kc x nc
// block of B into C (C = alpha*AB + beta*C).
func macroKernel(mc, nc, kc int, alpha float32, ap, bp []float32, beta float32, c []float32, ldc int) {
	var tile [gemmMR * gemmNR]float32
	for jp := 0; jp < nc; jp += gemmNR {
		cols := min(gemmNR, nc-jp)
		bpanel := bp[jp*kc : jp*kc+gemmNR*kc]
		for ip := 0; ip < mc; ip += gemmMR {
			rows := min(gemmMR, mc-ip)
			microKernel(kc, ap[ip*kc:ip*kc+gemmMR*kc], bpanel, &tile)
			for r := 0; r < rows; r++ {
				crow := c[(ip+r)*ldc+jp : (ip+r)*ldc+jp+cols]
				trow := tile[r*gemmNR : r*gemmNR+cols]
				if beta == 0 {
					for q, v := range trow {
						crow[q] = alpha * v
					}
				} else {
					for q, v := range trow {
						crow[q] = alpha*v + beta*crow[q]
					}
				}
			}
		}
	}
}

// microKernel computes the 2x3 tile sum_p a[p][r]*b[p][q] in six scalar
// accumulators that stay in registers.
func microKernel(kc int, a, b []float32, out *[gemmMR * gemmNR]float32) {
	var c00, c01, c02, c10, c11, c12 float32
	a = a[:kc*gemmMR]
	b = b[:kc*gemmNR]
	for p, q := 0, 0; p < len(a); p, q = p+gemmMR, q+gemmNR {
		av := a[p : p+2 : p+2]
		bv := b[q : q+3 : q+3]
		c00 += av[0] * bv[0]
		c01 += av[0] * bv[1]
		c02 += av[0] * bv[2]
		c10 += av[1] * bv[0]
		c11 += av[1] * bv[1]
		c12 += av[1] * bv[2]
	}
	*out = [6]float32{c00, c01, c02, c10, c11, c12}
}
