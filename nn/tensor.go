// Package nn is the training engine: float32 NCHW values, kernels with forward
// and backward passes, GEMM backends, optimizers and learning-rate schedules.
// It knows nothing of graphs, files or search; package models compiles a graph
// into a Network built from the layers defined here.
package nn

import "fmt"

// Value is one activation of a compiled network: its data and, in training,
// the gradient of the loss with respect to it. Both slices are allocated once,
// at the compiled (maximum) batch size; Shape[0] is the current batch, and
// Data/Grad are re-sliced to it by SetBatch, so kernels always read the
// current batch from Shape[0] and never allocate.
type Value struct {
	Name  string
	Shape []int // N,C,H,W for feature maps; N,F for flat vectors
	Data  []float32
	Grad  []float32 // nil when no gradient is needed (network input)

	dataCap, gradCap []float32
}

// NewValue allocates a value of the given shape (Shape[0] is the maximum batch).
func NewValue(name string, shape []int, withGrad bool) *Value {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := &Value{Name: name, Shape: append([]int(nil), shape...)}
	v.dataCap = make([]float32, n)
	v.Data = v.dataCap
	if withGrad {
		v.gradCap = make([]float32, n)
		v.Grad = v.gradCap
	}
	return v
}

// SetBatch re-slices the value to batch n (n at most the allocated batch).
func (v *Value) SetBatch(n int) {
	per := v.PerSample()
	if n*per > len(v.dataCap) {
		panic(fmt.Sprintf("nn: value %s: batch %d exceeds allocated batch %d", v.Name, n, len(v.dataCap)/per))
	}
	v.Shape[0] = n
	v.Data = v.dataCap[:n*per]
	if v.gradCap != nil {
		v.Grad = v.gradCap[:n*per]
	}
}

// PerSample is the number of elements of one sample.
func (v *Value) PerSample() int {
	n := 1
	for _, d := range v.Shape[1:] {
		n *= d
	}
	return n
}

// N, C, H, W read a 4-D (or 2-D, with H=W=1) shape.
func (v *Value) N() int { return v.Shape[0] }
func (v *Value) C() int { return v.Shape[1] }
func (v *Value) H() int {
	if len(v.Shape) < 4 {
		return 1
	}
	return v.Shape[2]
}
func (v *Value) W() int {
	if len(v.Shape) < 4 {
		return 1
	}
	return v.Shape[3]
}

// ParamKind says how the optimizer treats a parameter.
type ParamKind int

const (
	// Weight is trained and weight-decayed.
	Weight ParamKind = iota
	// NoDecay is trained but not weight-decayed (biases, BN affine).
	NoDecay
	// ArchVar is an architecture variable: trained by the search, never
	// weight-decayed (its penalty is the search's own).
	ArchVar
	// Buffer is state saved with the weights but not trained (BN running statistics).
	Buffer
)

// Param is a named learnable tensor (or buffer) of a network.
type Param struct {
	Name  string
	Shape []int
	Data  []float32
	Grad  []float32 // nil for buffers
	Kind  ParamKind
}

// NewParam allocates a zeroed parameter; buffers get no gradient.
func NewParam(name string, kind ParamKind, shape ...int) *Param {
	n := 1
	for _, d := range shape {
		n *= d
	}
	p := &Param{Name: name, Shape: append([]int(nil), shape...), Data: make([]float32, n), Kind: kind}
	if kind != Buffer {
		p.Grad = make([]float32, n)
	}
	return p
}

// Trainable reports whether an optimizer updates p.
func (p *Param) Trainable() bool { return p.Kind != Buffer }
