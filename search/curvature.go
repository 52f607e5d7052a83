package search

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
	net    *nn.Network
	est    Estimator
	src    *rand.PCG // rng's state, which a checkpoint saves
	rng    *rand.Rand
	layers []archLayer
	params []*nn.Param
	sums   []float64
	seed   []float32 // one batch of logit seeds
	probs  []float64
	count  int
}

type archLayer struct {
	layer nn.Layer
	index []int // position in params of each weight of the layer
}

// NewCurvature prepares an accumulator over every weighted-sum layer of
// net. seed drives the Monte-Carlo labels.
func NewCurvature(net *nn.Network, est Estimator, seed uint64) (*Curvature, error) {
	if _, err := ParseEstimator(string(est)); err != nil {
		return nil, err
	}
	if len(net.Output.Shape) < 2 {
		return nil, fmt.Errorf("curvature: network output %s is not [N,K] logits", net.Output.Name)
	}
	src := rand.NewPCG(seed, 0x6375727661747572)
	c := &Curvature{net: net, est: est, src: src, rng: rand.New(src)}
	pos := map[*nn.Param]int{}
	for _, l := range net.Layers {
		ws, _, ok := nn.PerSampleWeightGrads(l)
		if !ok {
			continue
		}
		al := archLayer{layer: l}
		for _, p := range ws {
			i, seen := pos[p]
			if !seen {
				i = len(c.params)
				pos[p] = i
				c.params = append(c.params, p)
			}
			al.index = append(al.index, i)
		}
		c.layers = append(c.layers, al)
	}
	if len(c.layers) == 0 {
		return nil, fmt.Errorf("curvature: the network has no weighted-sum layers (no architecture variables)")
	}
	c.sums = make([]float64, len(c.params))
	c.seed = make([]float32, cap(net.Output.Grad))
	c.probs = make([]float64, cap(net.Output.Grad))
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
	copy(net.Input.Data, x)
	net.Forward(false)
	k := net.Output.PerSample()
	for i, y := range labels {
		if y < 0 || int(y) >= k {
			return fmt.Errorf("curvature: label %d of sample %d is outside [0,%d)", y, i, k)
		}
	}
	softmax(net.Output.Data[:n*k], c.probs[:n*k], k)
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
		c.backward(seed)
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
			c.backward(seed)
		}
	}
	c.count += n
	return nil
}

// backward propagates per-sample logit seeds and adds the squared
// per-sample gradient of every architecture variable.
func (c *Curvature) backward(seed []float32) {
	c.net.ZeroGrad()
	copy(c.net.Output.Grad, seed)
	c.net.Backward()
	for _, al := range c.layers {
		_, g, _ := nn.PerSampleWeightGrads(al.layer)
		k := len(al.index)
		for b := 0; b < len(g)/k; b++ {
			for j, pi := range al.index {
				v := g[b*k+j]
				c.sums[pi] += v * v
			}
		}
	}
}

// Diagonal returns the per-sample mean curvature of every architecture variable.
func (c *Curvature) Diagonal() map[*nn.Param]float64 {
	h := make(map[*nn.Param]float64, len(c.params))
	for i, p := range c.params {
		if c.count > 0 {
			h[p] = c.sums[i] / float64(c.count)
		} else {
			h[p] = 0
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
