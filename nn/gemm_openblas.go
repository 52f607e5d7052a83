//go:build cgo && !purego

package nn

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// openBLASLinked tells EnsureBLASCoreType that OpenBLAS kernels are in use.
const openBLASLinked = true

// openBLAS calls cblas_sgemm. It is the default GEMM: OpenBLAS's kernels
// are several times faster than anything we can write in Go without SIMD.
type openBLAS struct{}

func init() {
	// Our parallelism is one goroutine per core over the images of a batch;
	// OpenBLAS threads on top of that would oversubscribe the cores.
	C.openblas_set_num_threads(1)
	registerPreferredGemm(openBLAS{})
}

func (openBLAS) Name() string { return "openblas" }

func (openBLAS) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		// OpenBLAS rejects lda < 1 and would need non-empty a and b.
		scaleRows(m, n, beta, c, ldc)
		return
	}
	ta, tb := uint32(C.CblasNoTrans), uint32(C.CblasNoTrans)
	if transA {
		ta = C.CblasTrans
	}
	if transB {
		tb = C.CblasTrans
	}
	C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m), C.blasint(n), C.blasint(k),
		C.float(alpha), (*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
}

// BLASInfo says which OpenBLAS build and kernels are in use, for logs.
func BLASInfo() string {
	return fmt.Sprintf("openblas %s, core %s",
		C.GoString(C.openblas_get_config()), C.GoString(C.openblas_get_corename()))
}
