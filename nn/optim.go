package nn

import (
	"fmt"
	"math"
)

// Optimizer updates the trainable parameters it was built over from their
// gradients. State exposes its slot tensors, named "<param>.<slot>", for
// checkpoints: saving is reading them, restoring is copying into them and
// then SetSteps (Adam's bias correction and SGD's first momentum step depend
// on the step count; on a backend with its own storage State copies the
// slots out and SetSteps commits them back).
type Optimizer interface {
	Step(lr float32)
	State() map[string][]float32
	Steps() int64
	SetSteps(int64)
}

// OptimizerKernels is a backend that applies the optimizers' updates on its
// own storage; without it SGD and Adam loop over the host slices. The slots
// (momentum buffer, moments) are parameters of kind Buffer the backend
// created (NewParam), so they live where the parameter does. Each call
// updates one parameter; wd is the weight decay that applies to it (0 for
// all but Weight params).
type OptimizerKernels interface {
	// SGDStep is one element-wise SGD update of p (see SGD), first when
	// the momentum buffer is to be set to the gradient rather than mixed.
	SGDStep(p, buf *Param, cfg SGDConfig, lr, wd float32, first bool)
	// AdamStep is one element-wise Adam update of p (see Adam) with the
	// step's bias corrections folded into stepSize = lr/(1-b1^t) and
	// bc2Sqrt = sqrt(1-b2^t).
	AdamStep(p, m, v *Param, cfg AdamConfig, stepSize, bc2Sqrt, wd float32)
}

// newSlot creates an optimizer slot shaped like p, on be when there is one.
func newSlot(be Backend, p *Param, slot string) *Param {
	if be == nil {
		return NewParam(p.Name+"."+slot, Buffer, p.Shape...)
	}
	return be.NewParam(p.Name+"."+slot, Buffer, p.Shape...)
}

// stateOf returns the slots by name, copied out of a backend's storage.
func stateOf(slots []*Param, state map[string][]float32) map[string][]float32 {
	for _, s := range slots {
		s.Host()
	}
	return state
}

// commitAll commits host writes into slots (a checkpoint restored).
func commitAll(slots []*Param) {
	for _, s := range slots {
		s.Commit()
	}
}

// trainables keeps the non-buffer params, rejecting ones that would corrupt
// an update or a checkpoint (nil, gradient missing, duplicates).
func trainables(op string, params []*Param) ([]*Param, error) {
	seen := map[string]bool{}
	var out []*Param
	for i, p := range params {
		if p == nil {
			return nil, fmt.Errorf("%s: param %d is nil", op, i)
		}
		if !p.Trainable() {
			continue
		}
		if len(p.Grad) != len(p.Data) {
			return nil, fmt.Errorf("%s: param %s has %d gradient elements for %d values", op, p.Name, len(p.Grad), len(p.Data))
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("%s: param %s appears twice", op, p.Name)
		}
		seen[p.Name] = true
		out = append(out, p)
	}
	return out, nil
}

// SGDConfig holds torch.optim.SGD's hyperparameters.
type SGDConfig struct {
	Momentum, Dampening, WeightDecay float32
	Nesterov                         bool
}

// SGD is torch.optim.SGD: g = grad + wd*p (Weight params only); with
// momentum, buf = g on the first step and momentum*buf + (1-dampening)*g
// after, and g = buf (or g + momentum*buf with Nesterov); p -= lr*g.
type SGD struct {
	cfg    SGDConfig
	params []*Param
	buf    []*Param
	state  map[string][]float32
	steps  int64
	kern   OptimizerKernels // nil: the host loop
}

// NewSGD builds SGD over the trainable params (buffers are skipped), on the
// host.
func NewSGD(params []*Param, cfg SGDConfig) (*SGD, error) { return NewSGDOn(nil, params, cfg) }

// NewSGDOn is NewSGD with the slots created by be and the updates applied
// by it when it implements OptimizerKernels (be nil: the host).
func NewSGDOn(be Backend, params []*Param, cfg SGDConfig) (*SGD, error) {
	if cfg.Momentum < 0 || cfg.WeightDecay < 0 {
		return nil, fmt.Errorf("sgd: momentum %g and weight decay %g must not be negative", cfg.Momentum, cfg.WeightDecay)
	}
	if cfg.Nesterov && (cfg.Momentum == 0 || cfg.Dampening != 0) {
		return nil, fmt.Errorf("sgd: nesterov needs momentum > 0 and zero dampening (have %g, %g)", cfg.Momentum, cfg.Dampening)
	}
	ps, err := trainables("sgd", params)
	if err != nil {
		return nil, err
	}
	o := &SGD{cfg: cfg, params: ps, state: map[string][]float32{}}
	o.kern, _ = be.(OptimizerKernels)
	if cfg.Momentum != 0 {
		for _, p := range ps {
			b := newSlot(be, p, "momentum_buffer")
			o.buf = append(o.buf, b)
			o.state[b.Name] = b.Data
		}
	}
	return o, nil
}

// Step applies one update with learning rate lr.
func (o *SGD) Step(lr float32) {
	first := o.steps == 0
	for i, p := range o.params {
		var wd float32
		if p.Kind == Weight {
			wd = o.cfg.WeightDecay
		}
		var buf *Param
		if o.cfg.Momentum != 0 {
			buf = o.buf[i]
		}
		if o.kern != nil {
			o.kern.SGDStep(p, buf, o.cfg, lr, wd, first)
		} else {
			sgdHost(p, buf, o.cfg, lr, wd, first)
		}
	}
	o.steps++
}

// SGDStepHost is SGD's update of one parameter on its host slices (buf nil
// without momentum): the loop Step runs on a backend without
// OptimizerKernels. A backend that stages its storage through the host
// (package devicesim, which simulates a device to test host access) runs
// it between its copies, so its updates are the CPU's float for float.
func SGDStepHost(p, buf *Param, cfg SGDConfig, lr, wd float32, first bool) {
	sgdHost(p, buf, cfg, lr, wd, first)
}

// sgdHost is SGD's update of one parameter on host memory (buf nil
// without momentum).
func sgdHost(p, buf *Param, cfg SGDConfig, lr, wd float32, first bool) {
	mom, damp, nesterov := cfg.Momentum, cfg.Dampening, cfg.Nesterov
	for j, g := range p.Grad {
		g += wd * p.Data[j]
		if mom != 0 {
			b := buf.Data
			if first {
				b[j] = g
			} else {
				b[j] = mom*b[j] + (1-damp)*g
			}
			if nesterov {
				g += mom * b[j]
			} else {
				g = b[j]
			}
		}
		p.Data[j] -= lr * g
	}
}

// State returns the momentum buffers ("<param>.momentum_buffer"); none without momentum.
func (o *SGD) State() map[string][]float32 { return stateOf(o.buf, o.state) }

// Steps is the number of updates applied.
func (o *SGD) Steps() int64 { return o.steps }

// SetSteps restores the update count from a checkpoint (and commits the
// state restored into State's slices).
func (o *SGD) SetSteps(n int64) {
	o.steps = n
	commitAll(o.buf)
}

// AdamConfig holds torch.optim.Adam's hyperparameters (PyTorch's defaults are
// Beta1 0.9, Beta2 0.999, Eps 1e-8).
type AdamConfig struct {
	Beta1, Beta2, Eps, WeightDecay float32
}

// Adam is torch.optim.Adam (not AdamW): g = grad + wd*p (Weight params only),
// m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2, and at step t
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
type Adam struct {
	cfg    AdamConfig
	params []*Param
	m, v   []*Param
	slots  []*Param // m and v, for State and SetSteps
	state  map[string][]float32
	steps  int64
	index  map[*Param]int   // position in params, for InvDenom
	kern   OptimizerKernels // nil: the host loop
}

// NewAdam builds Adam over the trainable params (buffers are skipped), on
// the host.
func NewAdam(params []*Param, cfg AdamConfig) (*Adam, error) { return NewAdamOn(nil, params, cfg) }

// NewAdamOn is NewAdam with the slots created by be and the updates applied
// by it when it implements OptimizerKernels (be nil: the host).
func NewAdamOn(be Backend, params []*Param, cfg AdamConfig) (*Adam, error) {
	if !(cfg.Beta1 >= 0 && cfg.Beta1 < 1 && cfg.Beta2 >= 0 && cfg.Beta2 < 1) {
		return nil, fmt.Errorf("adam: betas (%g, %g) must be in [0,1)", cfg.Beta1, cfg.Beta2)
	}
	if cfg.Eps < 0 || cfg.WeightDecay < 0 {
		return nil, fmt.Errorf("adam: eps %g and weight decay %g must not be negative", cfg.Eps, cfg.WeightDecay)
	}
	ps, err := trainables("adam", params)
	if err != nil {
		return nil, err
	}
	o := &Adam{cfg: cfg, params: ps, state: map[string][]float32{}, index: map[*Param]int{}}
	o.kern, _ = be.(OptimizerKernels)
	for i, p := range ps {
		o.index[p] = i
		m, v := newSlot(be, p, "exp_avg"), newSlot(be, p, "exp_avg_sq")
		o.m, o.v = append(o.m, m), append(o.v, v)
		o.slots = append(o.slots, m, v)
		o.state[m.Name] = m.Data
		o.state[v.Name] = v.Data
	}
	return o, nil
}

// Step applies one update with learning rate lr.
func (o *Adam) Step(lr float32) {
	o.steps++
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	t := float64(o.steps)
	stepSize := float32(float64(lr) / (1 - math.Pow(float64(b1), t)))
	bc2Sqrt := float32(math.Sqrt(1 - math.Pow(float64(b2), t)))
	for i, p := range o.params {
		var wd float32
		if p.Kind == Weight {
			wd = o.cfg.WeightDecay
		}
		if o.kern != nil {
			o.kern.AdamStep(p, o.m[i], o.v[i], o.cfg, stepSize, bc2Sqrt, wd)
		} else {
			adamHost(p, o.m[i], o.v[i], o.cfg, stepSize, bc2Sqrt, wd)
		}
	}
}

// AdamStepHost is Adam's update of one parameter on its host slices, as
// SGDStepHost is SGD's.
func AdamStepHost(p, m, v *Param, cfg AdamConfig, stepSize, bc2Sqrt, wd float32) {
	adamHost(p, m, v, cfg, stepSize, bc2Sqrt, wd)
}

// adamHost is Adam's update of one parameter on host memory.
func adamHost(p, mp, vp *Param, cfg AdamConfig, stepSize, bc2Sqrt, wd float32) {
	b1, b2, eps := cfg.Beta1, cfg.Beta2, cfg.Eps
	m, v := mp.Data, vp.Data
	for j, g := range p.Grad {
		g += wd * p.Data[j]
		m[j] = b1*m[j] + (1-b1)*g
		v[j] = b2*v[j] + (1-b2)*g*g
		denom := float32(math.Sqrt(float64(v[j])))/bc2Sqrt + eps
		p.Data[j] -= stepSize * m[j] / denom
	}
}

// State returns the moments ("<param>.exp_avg", "<param>.exp_avg_sq").
func (o *Adam) State() map[string][]float32 { return stateOf(o.slots, o.state) }

// InvDenom is 1/(sqrt(v_hat)+eps) of element j of p after the last step:
// the factor Adam's step applies to a unit gradient, which a proximal step
// (search's penalty) needs to act in the same metric. 0 for an unknown
// param or before the first step. It reads the host copy of the second
// moment: on a backend with its own storage, current after State.
func (o *Adam) InvDenom(p *Param, j int) float64 {
	i, ok := o.index[p] // not the state's name key: no string built per call on the training step
	if !ok || o.steps == 0 || j < 0 || j >= len(o.v[i].Data) {
		return 0
	}
	v := o.v[i].Data
	bc2 := 1 - math.Pow(float64(o.cfg.Beta2), float64(o.steps))
	return 1 / (math.Sqrt(float64(v[j]))/math.Sqrt(bc2) + float64(o.cfg.Eps))
}

// Steps is the number of updates applied.
func (o *Adam) Steps() int64 { return o.steps }

// SetSteps restores the update count from a checkpoint (and commits the
// state restored into State's slices).
func (o *Adam) SetSteps(n int64) {
	o.steps = n
	commitAll(o.slots)
}
