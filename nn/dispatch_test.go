package nn_test

import (
	"sync/atomic"
	"testing"

	"bayesnas/nn"
	"bayesnas/nn/nntest"
)

// kernelBackend is the CPU backend with every optional interface a device
// backend implements (GradZeroer, LossKernel, OptimizerKernels) done on the
// host and counted: the conformance suite must pass on it, and must reach
// each one, or a device backend's kernels could be silently bypassed.
type kernelBackend struct {
	*nn.CPU
	zero, loss, sgd, adam *atomic.Int64
}

func (b kernelBackend) ZeroGrads(ps []*nn.Param, vs []*nn.Value) {
	b.zero.Add(1)
	for _, p := range ps {
		clear(p.Grad)
	}
	for _, v := range vs {
		clear(v.Grad)
	}
}

func (b kernelBackend) SoftmaxCrossEntropy(l nn.SoftmaxCrossEntropy, logits *nn.Value, labels []int32) (float64, int) {
	b.loss.Add(1)
	loss, correct, err := l.Forward(logits, labels)
	if err != nil {
		panic(err) // ForwardOn checked the inputs before dispatching
	}
	return loss, correct
}

func (b kernelBackend) SGDStep(p, buf *nn.Param, cfg nn.SGDConfig, lr, wd float32, first bool) {
	b.sgd.Add(1)
	nn.SGDHost(p, buf, cfg, lr, wd, first)
}

func (b kernelBackend) AdamStep(p, m, v *nn.Param, cfg nn.AdamConfig, stepSize, bc2Sqrt, wd float32) {
	b.adam.Add(1)
	nn.AdamHost(p, m, v, cfg, stepSize, bc2Sqrt, wd)
}

var (
	_ nn.GradZeroer       = kernelBackend{}
	_ nn.LossKernel       = kernelBackend{}
	_ nn.OptimizerKernels = kernelBackend{}
)

func TestConformanceOptionalKernels(t *testing.T) {
	var zero, loss, sgd, adam atomic.Int64
	nntest.Run(t, func(workers int) nn.Backend {
		return kernelBackend{nn.NewCPU(nn.DefaultGemm(), workers), &zero, &loss, &sgd, &adam}
	})
	for name, n := range map[string]int64{"ZeroGrads": zero.Load(), "SoftmaxCrossEntropy": loss.Load(), "SGDStep": sgd.Load(), "AdamStep": adam.Load()} {
		if n == 0 {
			t.Errorf("the suite never reached the backend's %s", name)
		}
	}
}
