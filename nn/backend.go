package nn

import "fmt"

// Backend builds the kernels of a compiled network and owns the storage of
// their values and parameters. The CPU and reference backends keep them in
// host memory; a CUDA backend would implement the same methods with storage
// on the device (attaching a DeviceStorage to each Value and Param it
// creates), so package models compiles graphs against this interface and
// never against a concrete kernel type or a host allocation.
//
// Work outside the layers has optional interfaces a backend may implement
// (GradZeroer, LossKernel, OptimizerKernels); without them the network, the
// loss and the optimizers run their host loops on Data and Grad.
//
// Every constructor checks its input shapes and returns an error naming what
// is wrong rather than panicking; the returned layer's output value is
// allocated at the input's (maximum) batch size.
type Backend interface {
	Name() string
	NewValue(name string, shape []int, withGrad bool) *Value
	// NewParam creates a zeroed parameter (gradient included unless kind is
	// Buffer) in the backend's storage.
	NewParam(name string, kind ParamKind, shape ...int) *Param

	Conv2D(x *Value, w, b *Param, a ConvAttrs) (Layer, error)
	BatchNorm(x *Value, gamma, beta, runMean, runVar *Param, a BNAttrs) (Layer, error)
	ReLU(x *Value) (Layer, error)
	MaxPool(x *Value, a PoolAttrs) (Layer, error)
	AvgPool(x *Value, a PoolAttrs) (Layer, error)
	GlobalAvgPool(x *Value) (Layer, error)
	Linear(x *Value, w, b *Param) (Layer, error)
	Add(xs []*Value) (Layer, error)
	WeightedSum(xs []*Value, w []*Param) (Layer, error)
	Concat(xs []*Value) (Layer, error)
	SliceChannels(x *Value, start, end int) (Layer, error)
	PadChannels(x *Value, outC int) (Layer, error)
	ChannelShuffle(x *Value, groups int) (Layer, error)
	Dropout(x *Value, p float32, seed uint64) (Layer, error)
	DropPath(x *Value, p float32, seed uint64) (Layer, error)
}

// ConvAttrs describes a square 2-D convolution. Weight shape is
// [OutC, InC/Groups, Kernel, Kernel]; bias (optional) is [OutC].
type ConvAttrs struct {
	OutC, Kernel, Stride, Pad, Dilation, Groups int
}

// PoolAttrs describes square max or average pooling.
type PoolAttrs struct {
	Kernel, Stride, Pad int
	// CountIncludePad: average pooling divides by Kernel*Kernel even where the
	// window overlaps the padding (ONNX count_include_pad=1, PyTorch's default).
	CountIncludePad bool
	// CeilMode rounds the output size up, so a last window that starts
	// inside the input (or the left padding) but overhangs its end still
	// gives an output (ONNX ceil_mode=1, PyTorch's ceil_mode=True, which
	// PyramidNet's shortcut pooling uses for odd maps). Not combined with
	// CountIncludePad: the divisor of an overhanging window is then a
	// convention the frameworks do not share.
	CeilMode bool
}

// BNAttrs are batch normalization's constants. Running statistics follow
// PyTorch: run = (1-Momentum)*run + Momentum*batch, with the unbiased batch
// variance going into runVar and the biased one normalising in training.
type BNAttrs struct {
	Eps, Momentum float32
}

// OutSize is the spatial output size of a convolution or pooling window.
func OutSize(in, kernel, stride, pad, dilation int) int {
	return (in+2*pad-dilation*(kernel-1)-1)/stride + 1
}

// PoolOutSize is a pooling window's output size: OutSize, or with ceil the
// size rounded up, less a last window that would start beyond the input
// and its left padding (PyTorch's and ONNX's rule).
func PoolOutSize(in, kernel, stride, pad int, ceil bool) int {
	if !ceil || in+2*pad < kernel {
		return OutSize(in, kernel, stride, pad, 1)
	}
	out := (in+2*pad-kernel+stride-1)/stride + 1
	if (out-1)*stride >= in+pad {
		out--
	}
	return out
}

// CPU is the CPU backend: per-image im2col + GEMM for convolutions, direct
// loops for depthwise ones, one goroutine per core over the images of a batch.
type CPU struct {
	Gemm Gemm
	Pool *Pool
}

// NewCPU returns a CPU backend with the given GEMM and worker count
// (workers <= 0 means one per core).
func NewCPU(g Gemm, workers int) *CPU {
	return &CPU{Gemm: g, Pool: NewPool(workers)}
}

// Name says which kernels are in use, for logs.
func (c *CPU) Name() string {
	return fmt.Sprintf("cpu (gemm %s, %d workers)", c.Gemm.Name(), c.Pool.Workers())
}

// NewValue allocates host memory.
func (c *CPU) NewValue(name string, shape []int, withGrad bool) *Value {
	return NewValue(name, shape, withGrad)
}

// NewParam allocates host memory.
func (c *CPU) NewParam(name string, kind ParamKind, shape ...int) *Param {
	return NewParam(name, kind, shape...)
}

// Gemm is single-precision matrix multiplication on row-major matrices:
// C = alpha*op(A)*op(B) + beta*C, op(X) = X or its transpose, op(A) m x k,
// op(B) k x n, C m x n. Implementations are called concurrently from several
// goroutines and must be single-threaded themselves.
type Gemm interface {
	Name() string
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
		b []float32, ldb int, beta float32, c []float32, ldc int)
}

var gemms []Gemm

// registerGemm adds an implementation; files guarded by build tags call it
// from init so that tests and benchmarks can run every available backend.
func registerGemm(g Gemm) { gemms = append(gemms, g) }

// registerPreferredGemm adds an implementation ahead of the others: init
// order follows file names, so priority cannot rely on registration order.
func registerPreferredGemm(g Gemm) { gemms = append([]Gemm{g}, gemms...) }

// Gemms lists the available GEMM implementations, the preferred one first.
func Gemms() []Gemm { return append([]Gemm(nil), gemms...) }

// DefaultGemm is the preferred available implementation.
func DefaultGemm() Gemm { return gemms[0] }

// The CPU backend implements every kernel.
var _ Backend = (*CPU)(nil)
