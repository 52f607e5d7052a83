package nn

import (
	"fmt"
	"math"
)

// Distillation is the loss of knowledge distillation (Hinton et al. 2015):
// the label loss mixed with the divergence from a teacher network's
// softened outputs,
//
//	(1-Alpha) * CE(softmax(z), q) + Alpha * T^2 * KL(softmax(t/T) || softmax(z/T)),
//
// averaged over the batch, with z the logits, t the teacher's logits, T the
// Temperature and q the (smoothed) labels. The T^2 keeps the soft term's
// gradient on the scale of the label term's whatever the temperature.
// Compression fine-tunes a pruned network against the network it was
// pruned from this way: the teacher's soft outputs say more per image than
// the labels do.
type Distillation struct {
	Alpha, Temperature, Smoothing float32
}

// Forward returns the mean loss and the number of samples whose largest
// logit is the label, and overwrites logits.Grad (when it has one) with
// d(mean loss)/d(logits). teacher holds the teacher's logits, laid out as
// logits.Data ([N,K]).
func (l Distillation) Forward(logits *Value, teacher []float32, labels []int32) (meanLoss float64, correct int, err error) {
	if !(l.Alpha >= 0 && l.Alpha <= 1) {
		return 0, 0, fmt.Errorf("distillation: alpha %g must be in [0,1]", l.Alpha)
	}
	if !(l.Temperature > 0) || math.IsInf(float64(l.Temperature), 0) {
		return 0, 0, fmt.Errorf("distillation: temperature %g must be a finite number > 0", l.Temperature)
	}
	ce, correct, err := SoftmaxCrossEntropy{Smoothing: l.Smoothing}.Forward(logits, labels)
	if err != nil {
		return 0, 0, err
	}
	n, k := logits.N(), logits.PerSample()
	if len(teacher) != n*k {
		return 0, 0, fmt.Errorf("distillation on %s: %d teacher logits for a batch of %d x %d", logits.Name, len(teacher), n, k)
	}
	a, temp := float64(l.Alpha), float64(l.Temperature)
	var kl float64
	for i := range n {
		z, t := logits.Data[i*k:(i+1)*k], teacher[i*k:(i+1)*k]
		lz, lt := logSumExp(z, temp), logSumExp(t, temp)
		var g []float32
		if logits.Grad != nil {
			g = logits.Grad[i*k : (i+1)*k]
		}
		for j := range k {
			logPt := float64(t[j])/temp - lt
			logPs := float64(z[j])/temp - lz
			pt := math.Exp(logPt)
			kl += pt * (logPt - logPs)
			if g != nil {
				// d/dz_j of T^2 KL = T (ps_j - pt_j); the label term's
				// gradient, already in g, is scaled by 1-alpha.
				g[j] = float32((1-a)*float64(g[j]) + a*temp*(math.Exp(logPs)-pt)/float64(n))
			}
		}
	}
	return (1-a)*ce + a*temp*temp*kl/float64(n), correct, nil
}

// logSumExp is log(sum_j exp(z_j / temp)), around the largest term so that
// nothing overflows.
func logSumExp(z []float32, temp float64) float64 {
	m := math.Inf(-1)
	for _, v := range z {
		m = max(m, float64(v)/temp)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(float64(v)/temp - m)
	}
	return m + math.Log(s)
}
