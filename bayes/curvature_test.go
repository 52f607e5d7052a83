package bayes

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/nn"
)

// gateNet is a tiny conv network whose channel gates are its batch norm
// scales, conv-BN-ReLU twice, and a channel scale (a 1x1 depthwise conv,
// compression's gate for a conv no batch norm follows) on a third conv;
// then global pooling and a linear classifier.
func gateNet(t *testing.T, batch int) *nn.Network {
	t.Helper()
	b := models.NewGraphBuilder("gates", "x", [3]int{2, 5, 5})
	x := b.ReLU("r1", b.BN("bn1", b.Conv("c1", "x", 4, 3, 1, 1)))
	x = b.ReLU("r2", b.BN("bn2", b.Conv("c2", x, 3, 3, 1, 1)))
	x = b.ReLU("r3", b.Conv("s3", b.Conv("c3", x, 3, 3, 1, 1), 3, 1, 1, 3))
	x = b.Node("gap", models.OpGAP, models.Attrs{}, x)
	x = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 3, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), batch)
	if err != nil {
		t.Fatal(err)
	}
	export.RandomizeParams(net.Params, 5) // BN running statistics included
	return net
}

// The empirical Fisher of every BN scale and channel scale equals the mean over samples of
// the squared per-sample loss gradient, each taken by central differences
// of that sample's loss alone (float64 accumulation of float32 losses, step
// 1e-3: the loss is smooth away from ReLU kinks, which random inputs avoid
// at this scale). This checks nn.PerSampleScaleGrads too: its naive
// reference is the finite difference.
func TestBNScaleCurvatureAgainstFiniteDifferences(t *testing.T) {
	const n = 3
	net := gateNet(t, n)
	rng := rand.New(rand.NewPCG(3, 3))
	x := make([]float32, len(net.Input.Data))
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := []int32{0, 2, 1}
	c, err := NewCurvature(net, EmpiricalFisher, 1, BatchNormScales)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddBatch(x, labels); err != nil {
		t.Fatal(err)
	}
	h := c.Diagonal()
	if len(h) != 4+3+3 {
		t.Fatalf("%d variables, want the 7 BN scales and 3 channel scales", len(h))
	}
	// Loss of sample i alone, in evaluation mode.
	per := net.Input.PerSample()
	loss := func(i int) float64 {
		net.SetBatch(1)
		copy(net.Input.Data, x[i*per:(i+1)*per])
		net.Forward(false)
		z := make([]float64, 3)
		for j := range z {
			z[j] = float64(net.Output.Data[j])
		}
		m := slices.Max(z)
		var s float64
		for _, v := range z {
			s += math.Exp(v - m)
		}
		return m + math.Log(s) - z[labels[i]]
	}
	const eps = 1e-3
	checked := 0
	for v, got := range h {
		var want float64
		for i := range n {
			up, down := plusMinus(v, eps, func() float64 { return loss(i) })
			g := (up - down) / (2 * eps)
			want += g * g / n
		}
		if math.Abs(got-want) > 2e-3*math.Max(want, 1e-3) {
			t.Errorf("%s[%d]: curvature %.6g, finite differences %.6g", v.P.Name, v.I, got, want)
		}
		checked++
	}
	if checked != 10 {
		t.Fatalf("checked %d", checked)
	}
	// Training mode couples a batch norm's samples: its per-sample scale
	// gradients refuse (a channel scale's do not need to).
	net.SetBatch(n)
	net.Forward(true)
	buf := make([]float64, 64)
	for _, l := range net.Layers {
		if _, ok, err := nn.PerSampleScaleGrads(l, buf); ok && err == nil && !nn.IsChannelScale(l) {
			t.Errorf("per-sample scale gradients after a training-mode forward: no error")
		}
	}
}
