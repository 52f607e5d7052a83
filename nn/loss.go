package nn

import (
	"fmt"
	"math"
)

// SoftmaxCrossEntropy is the mean over the batch of the cross entropy between
// softmax(logits) and the label distribution; Smoothing is PyTorch's
// label_smoothing: the target is (1-Smoothing)*onehot + Smoothing/K.
type SoftmaxCrossEntropy struct {
	Smoothing float32
}

// LossKernel is a backend that computes the loss on its own storage; without
// it the loss reads logits.Data and writes logits.Grad on the host.
type LossKernel interface {
	// SoftmaxCrossEntropy is SoftmaxCrossEntropy.Forward on inputs it has
	// already checked (shapes, labels, smoothing).
	SoftmaxCrossEntropy(l SoftmaxCrossEntropy, logits *Value, labels []int32) (meanLoss float64, correct int)
}

// Forward returns the mean loss and the number of samples whose largest logit
// is the label, and writes (overwrites) logits.Grad with d(mean loss)/d(logits)
// when logits has a gradient. logits is [N,K] (or [N,K,1,1]); labels has one
// entry per sample of the current batch, each in [0,K). It runs on the host;
// ForwardOn (or Network.Loss) runs on a backend's kernel where it has one.
func (l SoftmaxCrossEntropy) Forward(logits *Value, labels []int32) (meanLoss float64, correct int, err error) {
	if err := l.check(logits, labels); err != nil {
		return 0, 0, err
	}
	meanLoss, correct = l.host(logits, labels)
	return meanLoss, correct, nil
}

// ForwardOn is Forward computed by be when it implements LossKernel.
func (l SoftmaxCrossEntropy) ForwardOn(be Backend, logits *Value, labels []int32) (meanLoss float64, correct int, err error) {
	if err := l.check(logits, labels); err != nil {
		return 0, 0, err
	}
	if k, ok := be.(LossKernel); ok {
		meanLoss, correct = k.SoftmaxCrossEntropy(l, logits, labels)
	} else {
		meanLoss, correct = l.host(logits, labels)
	}
	return meanLoss, correct, nil
}

// check rejects inputs the loss cannot index, naming what is wrong.
func (l SoftmaxCrossEntropy) check(logits *Value, labels []int32) error {
	if logits == nil || len(logits.Shape) < 2 {
		return fmt.Errorf("softmax cross entropy: logits must be [N,K]")
	}
	n, k := logits.N(), logits.PerSample()
	if len(labels) != n {
		return fmt.Errorf("softmax cross entropy on %s: %d labels for a batch of %d", logits.Name, len(labels), n)
	}
	if !(l.Smoothing >= 0 && l.Smoothing <= 1) {
		return fmt.Errorf("softmax cross entropy on %s: label smoothing %g must be in [0,1]", logits.Name, l.Smoothing)
	}
	for i, y := range labels {
		if y < 0 || int(y) >= k {
			return fmt.Errorf("softmax cross entropy on %s: label %d of sample %d is outside [0,%d)", logits.Name, y, i, k)
		}
	}
	return nil
}

// host is the loss on host memory, inputs checked.
func (l SoftmaxCrossEntropy) host(logits *Value, labels []int32) (meanLoss float64, correct int) {
	n, k := logits.N(), logits.PerSample()
	s := float64(l.Smoothing)
	uniform := s / float64(k)
	var total float64
	for i, y := range labels {
		z := logits.Data[i*k : (i+1)*k]
		best := 0
		for j, v := range z {
			if v > z[best] {
				best = j
			}
		}
		if best == int(y) {
			correct++
		}
		// log-sum-exp around the maximum: no exp overflows, and the largest
		// term is exactly 1 so the sum cannot underflow to zero.
		zmax := float64(z[best])
		var sumExp, sumZ float64
		for _, v := range z {
			sumExp += math.Exp(float64(v) - zmax)
			sumZ += float64(v)
		}
		logZ := zmax + math.Log(sumExp)
		// -sum_j q_j log p_j = logZ - sum_j q_j z_j for a target q summing to 1.
		total += logZ - (1-s)*float64(z[y]) - uniform*sumZ
		if logits.Grad == nil {
			continue
		}
		g := logits.Grad[i*k : (i+1)*k]
		for j, v := range z {
			q := uniform
			if j == int(y) {
				q += 1 - s
			}
			g[j] = float32((math.Exp(float64(v)-logZ) - q) / float64(n))
		}
	}
	return total / float64(n), correct
}
