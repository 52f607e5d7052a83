package nn

import (
	"fmt"
	"math"
)

// Optimizer updates the trainable parameters it was built over from their
// gradients. State exposes its slot tensors, named "<param>.<slot>", for
// checkpoints: saving is reading them, restoring is copying into them (and
// SetSteps, since Adam's bias correction and SGD's first momentum step depend
// on the step count).
type Optimizer interface {
	Step(lr float32)
	State() map[string][]float32
	Steps() int64
	SetSteps(int64)
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
	buf    [][]float32
	state  map[string][]float32
	steps  int64
}

// NewSGD builds SGD over the trainable params (buffers are skipped).
func NewSGD(params []*Param, cfg SGDConfig) (*SGD, error) {
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
	if cfg.Momentum != 0 {
		for _, p := range ps {
			b := make([]float32, len(p.Data))
			o.buf = append(o.buf, b)
			o.state[p.Name+".momentum_buffer"] = b
		}
	}
	return o, nil
}

// Step applies one update with learning rate lr.
func (o *SGD) Step(lr float32) {
	mom, damp, nesterov := o.cfg.Momentum, o.cfg.Dampening, o.cfg.Nesterov
	first := o.steps == 0
	for i, p := range o.params {
		var wd float32
		if p.Kind == Weight {
			wd = o.cfg.WeightDecay
		}
		for j, g := range p.Grad {
			g += wd * p.Data[j]
			if mom != 0 {
				b := o.buf[i]
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
	o.steps++
}

// State returns the momentum buffers ("<param>.momentum_buffer"); none without momentum.
func (o *SGD) State() map[string][]float32 { return o.state }

// Steps is the number of updates applied.
func (o *SGD) Steps() int64 { return o.steps }

// SetSteps restores the update count from a checkpoint.
func (o *SGD) SetSteps(n int64) { o.steps = n }

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
	m, v   [][]float32
	state  map[string][]float32
	steps  int64
	index  map[*Param]int // position in params, for InvDenom
}

// NewAdam builds Adam over the trainable params (buffers are skipped).
func NewAdam(params []*Param, cfg AdamConfig) (*Adam, error) {
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
	for i, p := range ps {
		o.index[p] = i
		m, v := make([]float32, len(p.Data)), make([]float32, len(p.Data))
		o.m, o.v = append(o.m, m), append(o.v, v)
		o.state[p.Name+".exp_avg"] = m
		o.state[p.Name+".exp_avg_sq"] = v
	}
	return o, nil
}

// Step applies one update with learning rate lr.
func (o *Adam) Step(lr float32) {
	o.steps++
	b1, b2, eps := o.cfg.Beta1, o.cfg.Beta2, o.cfg.Eps
	t := float64(o.steps)
	stepSize := float32(float64(lr) / (1 - math.Pow(float64(b1), t)))
	bc2Sqrt := float32(math.Sqrt(1 - math.Pow(float64(b2), t)))
	for i, p := range o.params {
		var wd float32
		if p.Kind == Weight {
			wd = o.cfg.WeightDecay
		}
		m, v := o.m[i], o.v[i]
		for j, g := range p.Grad {
			g += wd * p.Data[j]
			m[j] = b1*m[j] + (1-b1)*g
			v[j] = b2*v[j] + (1-b2)*g*g
			denom := float32(math.Sqrt(float64(v[j])))/bc2Sqrt + eps
			p.Data[j] -= stepSize * m[j] / denom
		}
	}
}

// State returns the moments ("<param>.exp_avg", "<param>.exp_avg_sq").
func (o *Adam) State() map[string][]float32 { return o.state }

// InvDenom is 1/(sqrt(v_hat)+eps) of element j of p after the last step:
// the factor Adam's step applies to a unit gradient, which a proximal step
// (search's penalty) needs to act in the same metric. 0 for an unknown
// param or before the first step.
func (o *Adam) InvDenom(p *Param, j int) float64 {
	i, ok := o.index[p] // not the state's name key: no string built per call on the training step
	if !ok || o.steps == 0 || j < 0 || j >= len(o.v[i]) {
		return 0
	}
	v := o.v[i]
	bc2 := 1 - math.Pow(float64(o.cfg.Beta2), float64(o.steps))
	return 1 / (math.Sqrt(float64(v[j]))/math.Sqrt(bc2) + float64(o.cfg.Eps))
}

// Steps is the number of updates applied.
func (o *Adam) Steps() int64 { return o.steps }

// SetSteps restores the update count from a checkpoint.
func (o *Adam) SetSteps(n int64) { o.steps = n }
