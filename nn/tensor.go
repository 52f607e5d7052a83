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
//
// Data and Grad are host memory. On the CPU and reference backends they are
// the storage itself; a backend whose storage is elsewhere attaches a
// DeviceStorage and keeps Data/Grad as host copies. Code outside the
// kernels therefore reads through Host and writes through SetHost, Zero or
// Commit, which are plain views (a nil check) on host backends.
type Value struct {
	Name  string
	Shape []int // N,C,H,W for feature maps; N,F for flat vectors
	Data  []float32
	Grad  []float32 // nil when no gradient is needed (network input)
	// Device is the backend's own storage; nil when Data and Grad are it.
	Device DeviceStorage

	dataCap, gradCap []float32
}

// DeviceStorage is what a backend whose storage is not host memory attaches
// to the values and parameters it creates, so that code outside its kernels
// can reach their elements by an explicit copy out or in. The host slices
// (Data, Grad) are the far side of every copy; they cover the value's whole
// allocated batch.
type DeviceStorage interface {
	// ToHost copies the backend's elements into the host slice: the
	// gradient's when grad is true, else the data's.
	ToHost(grad bool)
	// FromHost copies the host slice into the backend's storage.
	FromHost(grad bool)
}

// Host returns the value's data (current batch) in host memory, copied out
// of the backend's storage first when it has its own.
func (v *Value) Host() []float32 {
	if v.Device != nil {
		v.Device.ToHost(false)
	}
	return v.Data
}

// Commit makes writes into v.Data (whole allocated batch) the value's
// contents on the backend; a no-op on host backends.
func (v *Value) Commit() {
	if v.Device != nil {
		v.Device.FromHost(false)
	}
}

// HostGrad is Host for the gradient (nil without one).
func (v *Value) HostGrad() []float32 {
	if v.Device != nil && v.Grad != nil {
		v.Device.ToHost(true)
	}
	return v.Grad
}

// CommitGrad is Commit for the gradient.
func (v *Value) CommitGrad() {
	if v.Device != nil && v.Grad != nil {
		v.Device.FromHost(true)
	}
}

// SetHost copies src into the value's data from its first element (at most
// the allocated batch) and commits it.
func (v *Value) SetHost(src []float32) {
	copy(v.dataCap, src)
	v.Commit()
}

// Zero clears the value's data over its whole allocated batch, so a layer
// that stops writing it (a pruned supernet edge) leaves zeros behind.
func (v *Value) Zero() {
	clear(v.dataCap)
	v.Commit()
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

// Param is a named learnable tensor (or buffer) of a network. As for Value,
// Data and Grad are host memory: the storage on host backends, copies
// reached through Host/HostGrad and SetHost/Set/Commit where a backend
// attaches its own storage.
type Param struct {
	Name  string
	Shape []int
	Data  []float32
	Grad  []float32 // nil for buffers
	Kind  ParamKind
	// Device is the backend's own storage; nil when Data and Grad are it.
	Device DeviceStorage
}

// Host returns the parameter's values in host memory, copied out of the
// backend's storage first when it has its own. Writes into the slice take
// effect on the backend at Commit.
func (p *Param) Host() []float32 {
	if p.Device != nil {
		p.Device.ToHost(false)
	}
	return p.Data
}

// HostGrad is Host for the gradient (nil for buffers).
func (p *Param) HostGrad() []float32 {
	if p.Device != nil && p.Grad != nil {
		p.Device.ToHost(true)
	}
	return p.Grad
}

// Commit makes writes into p.Data the parameter's values on the backend; a
// no-op on host backends.
func (p *Param) Commit() {
	if p.Device != nil {
		p.Device.FromHost(false)
	}
}

// CommitGrad is Commit for the gradient.
func (p *Param) CommitGrad() {
	if p.Device != nil && p.Grad != nil {
		p.Device.FromHost(true)
	}
}

// SetHost copies src into the parameter's values (from the first element)
// and commits them.
func (p *Param) SetHost(src []float32) {
	copy(p.Data, src)
	p.Commit()
}

// Set writes element i and commits it: for the few scalars code outside the
// kernels sets (a switch, an annealing factor). Loops over many elements
// write Host's slice and Commit once instead.
func (p *Param) Set(i int, x float32) {
	// Commit copies the whole host slice in: the other elements must be
	// current there first, or a device backend would get stale ones.
	p.Host()[i] = x
	p.Commit()
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
