package nn

// naiveGemm lets the kernel tests run before the GEMM branch (which registers
// the real implementations) lands. TEMPORARY: delete once gemm_*.go exist.
type naiveGemm struct{}

func (naiveGemm) Name() string { return "naive" }

func (naiveGemm) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	naiveSgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func init() {
	if len(gemms) == 0 {
		registerGemm(naiveGemm{})
	}
}
