package devicesim

import "bayesnas/nn"

// The work outside the layers, through nn's optional backend interfaces:
// each stages what it touches on the host, runs nn's host code there (so
// results are the CPU's float for float), takes the results back and
// poisons the host copies. A tensor of another backend panics: the
// interfaces have no error, and passing one is the caller's bug.

// stage runs f on the host copies of ss and returns the results to the
// device.
func stage(ss []*store, f func()) {
	for _, s := range ss {
		s.restore()
	}
	f()
	for _, s := range ss {
		s.save()
		s.poison()
	}
}

// ZeroGrads clears the gradients on the device (nn.GradZeroer).
func (b *Backend) ZeroGrads(ps []*nn.Param, vs []*nn.Value) {
	for _, p := range ps {
		if s := mustStore(paramStore(p)); s.dGrad != nil {
			clear(s.dGrad)
			s.poison()
		}
	}
	for _, v := range vs {
		if s := mustStore(valueStore(v)); s.dGrad != nil {
			clear(s.dGrad)
			s.poison()
		}
	}
}

// SoftmaxCrossEntropy is the loss on the device (nn.LossKernel).
func (b *Backend) SoftmaxCrossEntropy(l nn.SoftmaxCrossEntropy, logits *nn.Value, labels []int32) (meanLoss float64, correct int) {
	stage([]*store{mustStore(valueStore(logits))}, func() {
		var err error
		meanLoss, correct, err = l.Forward(logits, labels)
		if err != nil {
			panic(err) // ForwardOn checked the same inputs before calling
		}
	})
	return meanLoss, correct
}

// SGDStep is SGD's update on the device (nn.OptimizerKernels).
func (b *Backend) SGDStep(p, buf *nn.Param, cfg nn.SGDConfig, lr, wd float32, first bool) {
	ss := []*store{mustStore(paramStore(p))}
	if buf != nil {
		ss = append(ss, mustStore(paramStore(buf)))
	}
	stage(ss, func() { nn.SGDStepHost(p, buf, cfg, lr, wd, first) })
}

// AdamStep is Adam's update on the device.
func (b *Backend) AdamStep(p, m, v *nn.Param, cfg nn.AdamConfig, stepSize, bc2Sqrt, wd float32) {
	ss := []*store{mustStore(paramStore(p)), mustStore(paramStore(m)), mustStore(paramStore(v))}
	stage(ss, func() { nn.AdamStepHost(p, m, v, cfg, stepSize, bc2Sqrt, wd) })
}

var (
	_ nn.GradZeroer       = (*Backend)(nil)
	_ nn.LossKernel       = (*Backend)(nil)
	_ nn.OptimizerKernels = (*Backend)(nil)
)
