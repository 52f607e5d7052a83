package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// dwBenchShapes are the depthwise convolutions of the NAS supernets (DARTS
// sep/dil convs, ProxylessNAS 3x3/5x5/7x7 mobile blocks) at batch 64, pad
// (k-1)*dil/2. bench/dwconv_torch.py parses the same names, so a shape is
// added here only.
var dwBenchShapes = []struct{ k, s, d, c, hw int }{
	{3, 1, 1, 16, 32},
	{5, 1, 1, 16, 32},
	{7, 1, 1, 16, 32},
	{3, 2, 1, 16, 32},
	{3, 1, 2, 16, 32},
	{3, 1, 1, 32, 16},
	{5, 1, 2, 32, 16},
	{5, 2, 1, 32, 16},
	{7, 2, 1, 32, 16},
	{3, 1, 1, 64, 8},
	{7, 1, 1, 64, 8},
	{5, 1, 2, 64, 8},
	{3, 2, 2, 64, 8},
	{3, 1, 1, 64, 7},
	{5, 1, 1, 8, 32},
}

func dwBenchName(k, s, d, c, hw int) string {
	return fmt.Sprintf("k%ds%dd%d_c%d_%dx%d", k, s, d, c, hw, hw)
}

// BenchmarkDepthwiseConv times forward+backward (dX, dW, dB) of batch-64
// depthwise convolutions with one worker per core. GFLOP/s counts 3 passes
// x 2 x the multiply-adds of the output's valid taps and padding alike, as
// bench/dwconv_torch.py does.
func BenchmarkDepthwiseConv(b *testing.B) {
	const batch = 64
	be := NewCPU(DefaultGemm(), 0)
	for _, s := range dwBenchShapes {
		b.Run(dwBenchName(s.k, s.s, s.d, s.c, s.hw), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			x := NewValue("x", []int{batch, s.c, s.hw, s.hw}, true)
			w := NewParam("w", Weight, s.c, 1, s.k, s.k)
			bias := NewParam("b", NoDecay, s.c)
			randFill(rng, x.Data)
			randFill(rng, w.Data)
			l, err := be.Conv2D(x, w, bias, ConvAttrs{OutC: s.c, Kernel: s.k, Stride: s.s,
				Pad: (s.k - 1) * s.d / 2, Dilation: s.d, Groups: s.c})
			if err != nil {
				b.Fatal(err)
			}
			randFill(rng, l.Output().Grad)
			l.Forward(true)
			l.Backward()
			b.ReportAllocs()
			for b.Loop() {
				l.Forward(true)
				l.Backward()
			}
			sh := l.Output().Shape
			macs := float64(batch) * float64(s.c*sh[2]*sh[3]) * float64(s.k*s.k)
			b.ReportMetric(3*2*macs*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
