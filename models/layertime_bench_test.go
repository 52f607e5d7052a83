package models

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"bayesnas/nn"
)

// layerKind groups a node with the others that cost the same per element,
// so a profile of one step reads as a short table.
func layerKind(n *Node) string {
	switch n.Op {
	case OpConv:
		a := n.Attrs
		if a.Kernel == 1 {
			return "conv1x1"
		}
		return fmt.Sprintf("conv%dx%d_g%d_s%d", a.Kernel, a.Kernel, a.Groups, a.Stride)
	case OpAvgPool, OpMaxPool:
		return fmt.Sprintf("%s%d_s%d_p%d", n.Op, n.Attrs.Kernel, n.Attrs.Stride, n.Attrs.Pad)
	}
	return n.Op
}

// BenchmarkLayerTimesPyramidNetDefault times each layer of the default
// PyramidNet's training step separately (batch 64) and reports, per kind of
// layer, milliseconds per step of forward and backward summed over the
// network's layers of that kind, plus ZeroGrad. Timing every layer adds a
// clock read per layer, negligible at these sizes.
func BenchmarkLayerTimesPyramidNetDefault(b *testing.B) {
	g, err := PyramidNet(PyramidNetDefault())
	if err != nil {
		b.Fatal(err)
	}
	net, labels, opt := trainStep(b, g, 64)
	var lossFn nn.SoftmaxCrossEntropy
	fwd := make([]time.Duration, len(net.Layers))
	bwd := make([]time.Duration, len(net.Layers))
	var zero, rest time.Duration
	step := func() {
		t0 := time.Now()
		net.ZeroGrad()
		zero += time.Since(t0)
		for i, l := range net.Layers {
			t := time.Now()
			l.Forward(true)
			fwd[i] += time.Since(t)
		}
		t := time.Now()
		if _, _, err := lossFn.Forward(net.Output, labels); err != nil {
			b.Fatal(err)
		}
		rest += time.Since(t)
		for i := len(net.Layers) - 1; i >= 0; i-- {
			t := time.Now()
			net.Layers[i].Backward()
			bwd[i] += time.Since(t)
		}
		t = time.Now()
		opt.Step(0.05)
		rest += time.Since(t)
	}
	step()
	clear(fwd)
	clear(bwd)
	zero, rest = 0, 0
	b.ResetTimer()
	for range b.N {
		step()
	}
	perStep := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	kf, kb := map[string]time.Duration{}, map[string]time.Duration{}
	for i, n := range g.Nodes {
		k := layerKind(n)
		kf[k] += fwd[i]
		kb[k] += bwd[i]
	}
	kinds := make([]string, 0, len(kf))
	for k := range kf {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		b.ReportMetric(perStep(kf[k]), k+"_fwd_ms")
		b.ReportMetric(perStep(kb[k]), k+"_bwd_ms")
	}
	b.ReportMetric(perStep(zero), "zerograd_ms")
	b.ReportMetric(perStep(rest), "loss+sgd_ms")
}
