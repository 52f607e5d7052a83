package bayes

import (
	"fmt"
	"math"
	"math/rand/v2"

	"bayesnas/nn"
)

// Estimator selects how the curvature of the data loss with respect to each
// architecture variable is estimated (METHOD.md section 4).
type Estimator string

const (
	// EmpiricalFisher sums squared per-sample gradients at the true labels
	// (one backward pass per batch; biased where the model is wrong).
	EmpiricalFisher Estimator = "empirical"
	// MonteCarloFisher backpropagates a label drawn from the model's own
	// softmax: unbiased for the Gauss-Newton diagonal, one backward pass.
	MonteCarloFisher Estimator = "mc"
	// GGN is the exact generalised Gauss-Newton diagonal: one backward pass
	// per class, seeded with sqrt(p_c)(e_c - p).
	GGN Estimator = "ggn"
)

// ParseEstimator checks an estimator name (config files, flags).
func ParseEstimator(s string) (Estimator, error) {
	switch e := Estimator(s); e {
	case EmpiricalFisher, MonteCarloFisher, GGN:
		return e, nil
	}
	return "", fmt.Errorf("curvature estimator %q: want %q, %q or %q", s, EmpiricalFisher, MonteCarloFisher, GGN)
}

// Curvature accumulates a diagonal curvature estimate over batches. The
// estimate is the per-sample MEAN (the curvature of the mean cross-entropy,
// the data term of the training objective), so lambda keeps its meaning
// whatever the size of the data set or the number of batches used.
//
// BatchNorm runs in evaluation mode (running statistics): in training mode
// it couples the samples of a batch and per-sample gradients would not be
// gradients of per-sample losses.
type Curvature struct {
	net     *nn.Network
	est     Estimator
	src     *rand.PCG // rng's state, which a checkpoint saves
	rng     *rand.Rand
	sources []source
	vars    []Var
	sums    []float64
	seed    []float32 // one batch of logit seeds
	probs   []float64
	scratch []float64 // per-sample batch norm scale gradients
	count   int
}

// source is a layer whose per-sample gradients feed the estimate.
type source struct {
	layer nn.Layer
	bn    bool  // a batch norm's scales (else a weighted sum's weights)
	index []int // position in vars of each variable of the layer
}

// Variables selects the variables a Curvature estimates.
type Variables int

const (
	// WeightedSums: the scalar weights of every weighted-sum layer (the
	// search's architecture variables).
	WeightedSums Variables = 1 << iota
	// BatchNormScales: every channel scale of every batch norm layer
	// (compression's channel gates).
	BatchNormScales
)

// NewCurvature prepares an accumulator over the variables of net that which
// selects. seed drives the Monte-Carlo labels.
func NewCurvature(net *nn.Network, est Estimator, seed uint64, which Variables) (*Curvature, error) {
	if _, err := ParseEstimator(string(est)); err != nil {
		return nil, err
	}
	if len(net.Output.Shape) < 2 {
		return nil, fmt.Errorf("curvature: network output %s is not [N,K] logits", net.Output.Name)
	}
	src := rand.NewPCG(seed, 0x6375727661747572)
	c := &Curvature{net: net, est: est, src: src, rng: rand.New(src)}
	pos := map[Var]int{}
	index := func(v Var) int {
		i, seen := pos[v]
		if !seen {
			i = len(c.vars)
			pos[v] = i
			c.vars = append(c.vars, v)
		}
		return i
	}
	maxScratch := 0
	for _, l := range net.Layers {
		if ws, _, ok := nn.PerSampleWeightGrads(l); ok && which&WeightedSums != 0 {
			s := source{layer: l}
			for _, p := range ws {
				s.index = append(s.index, index(Var{P: p}))
			}
			c.sources = append(c.sources, s)
		}
		if gamma, ok, _ := nn.PerSampleScaleGrads(l, nil); ok && which&BatchNormScales != 0 {
			s := source{layer: l, bn: true}
			for ch := range gamma.Data {
				s.index = append(s.index, index(Var{P: gamma, I: ch}))
			}
			maxScratch = max(maxScratch, len(gamma.Data))
			c.sources = append(c.sources, s)
		}
	}
	if len(c.sources) == 0 {
		return nil, fmt.Errorf("curvature: the network has none of the variables asked for")
	}
	c.sums = make([]float64, len(c.vars))
	c.seed = make([]float32, cap(net.Output.Grad))
	c.probs = make([]float64, cap(net.Output.Grad))
	c.scratch = make([]float64, maxScratch*(cap(net.Output.Grad)/net.Output.PerSample()))
	return c, nil
}

// Reset clears the accumulated sums.
func (c *Curvature) Reset() {
	clear(c.sums)
	c.count = 0
}

// RNGState is the state of the Monte-Carlo label sampler: a resumed search
// restores it with SetRNGState and draws the labels an uninterrupted one draws.
func (c *Curvature) RNGState() ([]byte, error) { return c.src.MarshalBinary() }

// SetRNGState restores a state returned by RNGState.
func (c *Curvature) SetRNGState(b []byte) error {
	if err := c.src.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("curvature: restoring the sampler: %w", err)
	}
	return nil
}

// Samples is the number of samples accumulated.
func (c *Curvature) Samples() int { return c.count }

// AddBatch accumulates the estimate over one batch (x holds len(labels)
// samples). It overwrites the network's gradients.
func (c *Curvature) AddBatch(x []float32, labels []int32) error {
	net := c.net
	n := len(labels)
	if maxN := cap(net.Output.Grad) / net.Output.PerSample(); n == 0 || n > maxN {
		return fmt.Errorf("curvature: batch of %d samples, network compiled for at most %d", n, maxN)
	}
	net.SetBatch(n)
	if len(x) != len(net.Input.Data) {
		return fmt.Errorf("curvature: %d input values for %d samples of %d", len(x), n, net.Input.PerSample())
	}
	net.Input.SetHost(x)
	net.Forward(false)
	k := net.Output.PerSample()
	for i, y := range labels {
		if y < 0 || int(y) >= k {
			return fmt.Errorf("curvature: label %d of sample %d is outside [0,%d)", y, i, k)
		}
	}
	softmax(net.Output.Host()[:n*k], c.probs[:n*k], k)
	p := c.probs[:n*k]
	seed := c.seed[:n*k]
	switch c.est {
	case EmpiricalFisher, MonteCarloFisher:
		for i := 0; i < n; i++ {
			y := int(labels[i])
			if c.est == MonteCarloFisher {
				y = sample(c.rng, p[i*k:(i+1)*k])
			}
			for j := 0; j < k; j++ {
				seed[i*k+j] = float32(p[i*k+j])
			}
			seed[i*k+y] -= 1
		}
		if err := c.backward(seed); err != nil {
			return err
		}
	case GGN:
		for cl := 0; cl < k; cl++ {
			for i := 0; i < n; i++ {
				pi := p[i*k : (i+1)*k]
				s := math.Sqrt(pi[cl])
				for j := 0; j < k; j++ {
					seed[i*k+j] = float32(-s * pi[j])
				}
				seed[i*k+cl] += float32(s)
			}
			if err := c.backward(seed); err != nil {
				return err
			}
		}
	}
	c.count += n
	return nil
}

// backward propagates per-sample logit seeds and adds the squared
// per-sample gradient of every variable.
func (c *Curvature) backward(seed []float32) error {
	c.net.ZeroGrad()
	copy(c.net.Output.Grad, seed)
	c.net.Output.CommitGrad()
	c.net.Backward()
	for _, s := range c.sources {
		var g []float64
		if s.bn {
			if _, _, err := nn.PerSampleScaleGrads(s.layer, c.scratch); err != nil {
				return fmt.Errorf("curvature: %w", err)
			}
			g = c.scratch[:c.net.Output.N()*len(s.index)]
		} else {
			_, g, _ = nn.PerSampleWeightGrads(s.layer)
		}
		k := len(s.index)
		for b := 0; b < len(g)/k; b++ {
			for j, vi := range s.index {
				v := g[b*k+j]
				c.sums[vi] += v * v
			}
		}
	}
	return nil
}

// Diagonal returns the per-sample mean curvature of every variable.
func (c *Curvature) Diagonal() map[Var]float64 {
	h := make(map[Var]float64, len(c.vars))
	for i, v := range c.vars {
		if c.count > 0 {
			h[v] = c.sums[i] / float64(c.count)
		} else {
			h[v] = 0
		}
	}
	return h
}

// softmax writes the row-wise softmax of logits (rows of k) into p.
func softmax(logits []float32, p []float64, k int) {
	for r := 0; r < len(logits)/k; r++ {
		z := logits[r*k : (r+1)*k]
		m := float64(z[0])
		for _, v := range z {
			m = math.Max(m, float64(v))
		}
		var s float64
		for j, v := range z {
			e := math.Exp(float64(v) - m)
			p[r*k+j] = e
			s += e
		}
		for j := range z {
			p[r*k+j] /= s
		}
	}
}

// sample draws an index from the distribution p.
func sample(rng *rand.Rand, p []float64) int {
	u := rng.Float64()
	for j, v := range p {
		u -= v
		if u < 0 {
			return j
		}
	}
	return len(p) - 1
}
