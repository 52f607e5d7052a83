package nn

import "fmt"

// Stochastic is implemented by the layers whose training forward draws a
// random mask (Dropout, DropPath). The mask is a pure function of (seed, step,
// element or sample index), so a run repeats exactly for the same seed, and a
// resumed run draws the masks it would have drawn had it not stopped.
type Stochastic interface {
	Layer
	// Step is the counter the next training forward will use.
	Step() uint64
	// SetStep sets the counter, e.g. to the global step when resuming.
	SetStep(step uint64)
	// Freeze(true) stops training forwards from advancing the counter, so
	// each repeats the previous mask (finite-difference gradient checks).
	Freeze(frozen bool)
}

// splitmix64's finaliser: a bijective mix whose outputs for consecutive
// inputs are statistically independent.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

const golden = 0x9E3779B97F4A7C15

// stepKey derives the per-step key from which a mask is drawn.
func stepKey(seed, step uint64) uint64 { return mix64(seed ^ mix64(step*golden+1)) }

// keep reports whether index i survives drop probability p under key: the
// SplitMix64 stream seeded by key, read at position i, as a 24-bit uniform.
func keep(key uint64, i int, p float32) bool {
	u := float32(mix64(key+uint64(i+1)*golden)>>40) * (1.0 / (1 << 24))
	return u >= p
}

// DropKeep reports whether element (Dropout) or sample (DropPath) index i
// survives a training forward at counter step of a layer seeded with seed
// and drop probability p: the mask every backend must draw, so that runs
// agree across backends and a resumed run draws the masks it would have.
func DropKeep(seed, step uint64, i int, p float32) bool {
	return keep(stepKey(seed, step), i, p)
}

// stochastic holds what Dropout and DropPath share: the counter and the mode
// and key of the last forward, which Backward must reproduce.
type stochastic struct {
	pool     *Pool
	x, y     *Value
	per      int
	p, scale float32
	seed     uint64
	step     uint64
	frozen   bool
	train    bool
	key      uint64
	fwd, bwd func(worker, n int)
}

func (s *stochastic) Step() uint64                { return s.step }
func (s *stochastic) SetStep(step uint64)         { s.step = step }
func (s *stochastic) Freeze(frozen bool)          { s.frozen = frozen }
func (s *stochastic) Output() *Value              { return s.y }
func (s *stochastic) inputs() []*Value            { return []*Value{s.x} }
func (s *stochastic) setAssign(*Value, bool) bool { return false }

func (s *stochastic) Forward(train bool) {
	s.train = train
	if !train {
		copy(s.y.Data, s.x.Data)
		return
	}
	s.key = stepKey(s.seed, s.step)
	if !s.frozen {
		s.step++
	}
	s.pool.Run(s.x.N(), s.fwd)
}

func (s *stochastic) Backward() {
	if s.x.Grad == nil {
		return
	}
	if !s.train {
		for i, g := range s.y.Grad {
			s.x.Grad[i] += g
		}
		return
	}
	s.pool.Run(s.x.N(), s.bwd)
}

func (c *CPU) newStochastic(op string, x *Value, p float32, seed uint64) (*stochastic, error) {
	if err := checkShape(op, x, false); err != nil {
		return nil, err
	}
	if !(p >= 0 && p < 1) {
		return nil, fmt.Errorf("%s on %s: drop probability %g must be in [0,1)", op, x.Name, p)
	}
	s := &stochastic{pool: c.Pool, x: x, per: x.PerSample(), p: p, scale: 1 / (1 - p), seed: seed}
	s.y = c.NewValue(op+"("+x.Name+")", x.Shape, true)
	return s, nil
}

// Dropout zeroes each element with probability p in training and scales the
// survivors by 1/(1-p), so evaluation is the identity. The returned layer is
// a Stochastic.
func (c *CPU) Dropout(x *Value, p float32, seed uint64) (Layer, error) {
	s, err := c.newStochastic("dropout", x, p, seed)
	if err != nil {
		return nil, err
	}
	s.fwd = func(_, n int) {
		lo, hi := n*s.per, (n+1)*s.per
		y := s.y.Data[lo:hi]
		for i, v := range s.x.Data[lo:hi] {
			if keep(s.key, lo+i, s.p) {
				y[i] = v * s.scale
			} else {
				y[i] = 0
			}
		}
	}
	s.bwd = func(_, n int) {
		lo, hi := n*s.per, (n+1)*s.per
		dx := s.x.Grad[lo:hi]
		for i, g := range s.y.Grad[lo:hi] {
			if keep(s.key, lo+i, s.p) {
				dx[i] += g * s.scale
			}
		}
	}
	return s, nil
}

// DropPath zeroes a whole sample of a branch with probability p in training
// and scales surviving samples by 1/(1-p) (stochastic depth). The returned
// layer is a Stochastic.
func (c *CPU) DropPath(x *Value, p float32, seed uint64) (Layer, error) {
	s, err := c.newStochastic("droppath", x, p, seed)
	if err != nil {
		return nil, err
	}
	s.fwd = func(_, n int) {
		lo, hi := n*s.per, (n+1)*s.per
		y := s.y.Data[lo:hi]
		if !keep(s.key, n, s.p) {
			clear(y)
			return
		}
		for i, v := range s.x.Data[lo:hi] {
			y[i] = v * s.scale
		}
	}
	s.bwd = func(_, n int) {
		if !keep(s.key, n, s.p) {
			return
		}
		lo, hi := n*s.per, (n+1)*s.per
		dx := s.x.Grad[lo:hi]
		for i, g := range s.y.Grad[lo:hi] {
			dx[i] += g * s.scale
		}
	}
	return s, nil
}
