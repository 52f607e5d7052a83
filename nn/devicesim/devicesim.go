// Package devicesim is a backend that behaves, towards the code outside its
// kernels, like one whose storage is on a device: it makes every host access
// that skips nn's explicit copies fail a test on a machine without a GPU.
//
// On the CPU and reference backends a Value's or Param's Data and Grad are
// the storage, so code that reads them without Host (or writes them without
// Commit) is correct there and would read stale values, or lose its writes,
// on a CUDA backend. Here the contents live in hidden "device" buffers
// attached as the nn.DeviceStorage of every value and parameter; the host
// slices hold NaN except right after a copy out (ToHost), and everything the
// device changes (a layer's Forward or Backward, the loss, an optimizer
// step, a gradient clear) poisons them again. A read without Host then sees
// NaN, and a write without Commit is lost: either makes a check fail.
//
// The kernels are the CPU backend's: each layer wraps a CPU layer and, around
// its Forward and Backward, copies the device contents of everything the
// kernel touches (inputs, parameters, output, their gradients) into the host
// slices the CPU kernel reads, runs it, copies the results back and poisons
// the host slices. Results are therefore the CPU's float for float. All of
// this cost lives here; the CPU backend is unchanged. It is a test backend,
// slow by design, and not offered by nn/backends.
package devicesim

import (
	"fmt"
	"math"

	"bayesnas/nn"
)

// Backend is the simulated device backend over a CPU backend's kernels.
type Backend struct {
	cpu *nn.CPU
}

// New returns the simulated device backend over the CPU backend with the
// default GEMM and the given worker count.
func New(workers int) *Backend { return &Backend{cpu: nn.NewCPU(nn.DefaultGemm(), workers)} }

// Name says what this is, for logs and test names.
func (b *Backend) Name() string { return "devicesim over " + b.cpu.Name() }

// store is the "device" memory of one value or parameter. It holds the
// addresses of the host slice fields rather than the slices, so that a
// value's SetBatch (which re-slices Data and Grad) is followed; every copy
// covers the whole allocation (the slices' capacity), as nn.DeviceStorage
// requires.
type store struct {
	name       string
	data, grad *[]float32 // the host fields
	dev, dGrad []float32  // the contents
}

// full is a host slice over its whole allocation.
func full(s []float32) []float32 { return s[:cap(s)] }

func newStore(name string, data, grad *[]float32) *store {
	s := &store{name: name, data: data, grad: grad, dev: append([]float32(nil), full(*data)...)}
	if *grad != nil {
		s.dGrad = append([]float32(nil), full(*grad)...)
	}
	s.poison()
	return s
}

// ToHost copies the device contents out: the host slice is current until
// the device next changes them.
func (s *store) ToHost(grad bool) {
	if grad {
		copy(full(*s.grad), s.dGrad)
	} else {
		copy(full(*s.data), s.dev)
	}
}

// FromHost copies the host slice in. The host copy stays current (it is
// what the device now holds), as it would on a real device.
func (s *store) FromHost(grad bool) {
	if grad {
		copy(s.dGrad, full(*s.grad))
	} else {
		copy(s.dev, full(*s.data))
	}
}

// restore stages the device contents in the host slices for a CPU kernel.
func (s *store) restore() {
	s.ToHost(false)
	if s.dGrad != nil {
		s.ToHost(true)
	}
}

// save takes a CPU kernel's results back to the device.
func (s *store) save() {
	s.FromHost(false)
	if s.dGrad != nil {
		s.FromHost(true)
	}
}

// poison fills the host slices with NaN: after the device changed the
// contents, a host copy not refreshed by ToHost is stale.
func (s *store) poison() {
	nan := float32(math.NaN())
	for i, h := 0, full(*s.data); i < len(h); i++ {
		h[i] = nan
	}
	if s.dGrad != nil {
		for i, h := 0, full(*s.grad); i < len(h); i++ {
			h[i] = nan
		}
	}
}

// NewValue creates a zeroed value in "device" memory (host slices poisoned).
func (b *Backend) NewValue(name string, shape []int, withGrad bool) *nn.Value {
	v := nn.NewValue(name, shape, withGrad)
	attachValue(v)
	return v
}

// NewParam creates a zeroed parameter in "device" memory.
func (b *Backend) NewParam(name string, kind nn.ParamKind, shape ...int) *nn.Param {
	p := nn.NewParam(name, kind, shape...)
	p.Device = newStore(p.Name, &p.Data, &p.Grad)
	return p
}

// attachValue gives v device storage holding its current contents: for
// the values this backend creates and the outputs its CPU layers allocate.
func attachValue(v *nn.Value) {
	v.Device = newStore(v.Name, &v.Data, &v.Grad)
}

// valueStore returns v's device storage, or an error for a value this
// backend did not create (a device backend cannot read foreign memory).
func valueStore(v *nn.Value) (*store, error) {
	s, ok := v.Device.(*store)
	if !ok {
		return nil, fmt.Errorf("devicesim: value %s is not in this backend's storage (device %T)", v.Name, v.Device)
	}
	return s, nil
}

func paramStore(p *nn.Param) (*store, error) {
	s, ok := p.Device.(*store)
	if !ok {
		return nil, fmt.Errorf("devicesim: param %s is not in this backend's storage (device %T)", p.Name, p.Device)
	}
	return s, nil
}

// mustStore is valueStore or paramStore where the nn interface has no
// error to return (the loss, optimizer and clearing kernels): a foreign
// tensor there is a bug of the caller.
func mustStore(s *store, err error) *store {
	if err != nil {
		panic(err)
	}
	return s
}

// layer is a CPU layer run on device contents. It is an nn.GradLayer that
// never overwrites (SetGradAssign false), so the network clears the
// gradients it defers through ZeroGrads just before the layer adds.
type layer struct {
	inner  nn.Layer
	ins    []*nn.Value
	stores []*store // everything the kernel reads or writes, once each
}

// wrap builds the device layer over a CPU layer from its inputs and
// parameters (nil ones skipped), attaching device storage to the output
// the CPU constructor allocated on the host.
func wrap(inner nn.Layer, err error, ins []*nn.Value, ps ...*nn.Param) (*layer, error) {
	if err != nil {
		return nil, err
	}
	y := inner.Output()
	if y.Device == nil {
		attachValue(y)
	}
	l := &layer{inner: inner, ins: ins}
	seen := map[*store]bool{}
	add := func(s *store) {
		if !seen[s] {
			seen[s] = true
			l.stores = append(l.stores, s)
		}
	}
	for _, x := range ins {
		add(mustStore(valueStore(x)))
	}
	for _, p := range ps {
		if p != nil {
			add(mustStore(paramStore(p)))
		}
	}
	add(mustStore(valueStore(y)))
	return l, nil
}

// run stages the layer's tensors on the host, runs f (a CPU kernel), takes
// the results back and poisons the host copies.
func (l *layer) run(f func()) { stage(l.stores, f) }

func (l *layer) Forward(train bool) { l.run(func() { l.inner.Forward(train) }) }
func (l *layer) Backward()          { l.run(l.inner.Backward) }
func (l *layer) Output() *nn.Value  { return l.inner.Output() }

func (l *layer) GradInputs() []*nn.Value            { return l.ins }
func (l *layer) SetGradAssign(*nn.Value, bool) bool { return false }

// checkOwned rejects tensors of another backend before the CPU constructor
// runs (nil ones are left to its own checks and errors).
func checkOwned(vs []*nn.Value, ps ...*nn.Param) error {
	for _, v := range vs {
		if v != nil {
			if _, err := valueStore(v); err != nil {
				return err
			}
		}
	}
	for _, p := range ps {
		if p != nil {
			if _, err := paramStore(p); err != nil {
				return err
			}
		}
	}
	return nil
}
