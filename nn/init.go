package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// FanMode selects which fan Kaiming initialisation preserves the variance of.
type FanMode int

const (
	// FanIn keeps activations' variance through the forward pass.
	FanIn FanMode = iota
	// FanOut keeps gradients' variance through the backward pass.
	FanOut
)

// HeNormal fills p (a weight of shape [Out, In, k...]) with normal values of
// standard deviation sqrt(2/fan), He et al.'s gain for ReLU, as PyTorch's
// kaiming_normal_(nonlinearity="relu"). fan is In*prod(k) (FanIn) or
// Out*prod(k) (FanOut); for a grouped convolution In is the per-group count,
// as in the weight's shape. The caller's rng makes it deterministic.
func HeNormal(p *Param, mode FanMode, rng *rand.Rand) error {
	if p == nil || rng == nil {
		return fmt.Errorf("he init: param and rng must not be nil")
	}
	if len(p.Shape) < 2 {
		return fmt.Errorf("he init of %s: shape %v has no fan-in/fan-out (need at least 2 dims)", p.Name, p.Shape)
	}
	receptive := 1
	for _, d := range p.Shape[2:] {
		receptive *= d
	}
	var fan int
	switch mode {
	case FanIn:
		fan = p.Shape[1] * receptive
	case FanOut:
		fan = p.Shape[0] * receptive
	default:
		return fmt.Errorf("he init of %s: unknown fan mode %d", p.Name, mode)
	}
	if fan <= 0 {
		return fmt.Errorf("he init of %s: shape %v gives fan %d", p.Name, p.Shape, fan)
	}
	std := math.Sqrt(2 / float64(fan))
	for i := range p.Data {
		p.Data[i] = float32(rng.NormFloat64() * std)
	}
	return nil
}
