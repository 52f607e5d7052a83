package nn

import (
	"fmt"
	"math"
	"slices"
)

// Schedule gives the learning rate of each optimizer step (counted from 0).
type Schedule interface {
	LR(step int) float64
}

// warmup ramps linearly from start at step 0 to target at step steps.
func warmup(step, steps int, start, target float64) float64 {
	return start + (target-start)*float64(step)/float64(steps)
}

// Cosine warms up linearly from WarmupStart to Base over Warmup steps, then
// anneals from Base to Min along half a cosine, reaching Min at step Total
// and staying there.
type Cosine struct {
	Base, Min, WarmupStart float64
	Warmup, Total          int
}

// NewCosine checks the schedule's fields.
func NewCosine(base, min, warmupStart float64, warmupSteps, total int) (*Cosine, error) {
	if base <= 0 || min < 0 || min > base || warmupStart < 0 {
		return nil, fmt.Errorf("cosine schedule: need 0 <= min (%g) <= base (%g), base > 0, warm-up start %g >= 0", min, base, warmupStart)
	}
	if warmupSteps < 0 || total <= warmupSteps {
		return nil, fmt.Errorf("cosine schedule: need 0 <= warm-up steps (%d) < total steps (%d)", warmupSteps, total)
	}
	return &Cosine{Base: base, Min: min, WarmupStart: warmupStart, Warmup: warmupSteps, Total: total}, nil
}

// LR implements Schedule.
func (s *Cosine) LR(step int) float64 {
	if step < s.Warmup {
		return warmup(step, s.Warmup, s.WarmupStart, s.Base)
	}
	progress := math.Min(1, float64(step-s.Warmup)/float64(s.Total-s.Warmup))
	return s.Min + (s.Base-s.Min)*(1+math.Cos(math.Pi*progress))/2
}

// StepDecay multiplies Base by Gamma at each milestone step reached, after a
// linear warm-up from WarmupStart over Warmup steps.
type StepDecay struct {
	Base, Gamma, WarmupStart float64
	Milestones               []int // ascending
	Warmup                   int
}

// NewStepDecay checks the schedule's fields.
func NewStepDecay(base, gamma, warmupStart float64, milestones []int, warmupSteps int) (*StepDecay, error) {
	if base <= 0 || gamma <= 0 || warmupStart < 0 || warmupSteps < 0 {
		return nil, fmt.Errorf("step decay schedule: need base (%g) > 0, gamma (%g) > 0, warm-up start %g >= 0, warm-up steps %d >= 0", base, gamma, warmupStart, warmupSteps)
	}
	if !slices.IsSorted(milestones) {
		return nil, fmt.Errorf("step decay schedule: milestones %v are not ascending", milestones)
	}
	return &StepDecay{Base: base, Gamma: gamma, WarmupStart: warmupStart,
		Milestones: slices.Clone(milestones), Warmup: warmupSteps}, nil
}

// LR implements Schedule.
func (s *StepDecay) LR(step int) float64 {
	lr := s.Base
	for _, m := range s.Milestones {
		if step >= m {
			lr *= s.Gamma
		}
	}
	if step < s.Warmup {
		return warmup(step, s.Warmup, s.WarmupStart, lr)
	}
	return lr
}
