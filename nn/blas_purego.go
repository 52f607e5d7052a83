//go:build !cgo || purego

package nn

// openBLASLinked tells EnsureBLASCoreType that there is no OpenBLAS to tune.
const openBLASLinked = false

// BLASInfo says which GEMM kernels are in use, for logs.
func BLASInfo() string { return "pure Go GEMM (built without cgo or with -tags purego)" }
