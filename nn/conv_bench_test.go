package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// convBenchShapes are the shapes bench/conv_torch.py times too (same names):
// the 3x3 dense convolutions of a CIFAR-sized network and the depthwise
// convolutions of its separable convs, batch 64, pad keeping the size.
var convBenchShapes = []struct {
	name          string
	c, hw, k, grp int
}{
	{"dense3x3_c16_32x32", 16, 32, 3, 1},
	{"dense3x3_c32_32x32", 32, 32, 3, 1},
	{"dense3x3_c64_32x32", 64, 32, 3, 1},
	{"dense3x3_c16_16x16", 16, 16, 3, 1},
	{"dense3x3_c32_16x16", 32, 16, 3, 1},
	{"dense3x3_c64_16x16", 64, 16, 3, 1},
	{"dw3x3_c32_32x32", 32, 32, 3, 32},
	{"dw5x5_c32_32x32", 32, 32, 5, 32},
	{"dw3x3_c64_16x16", 64, 16, 3, 64},
	{"dw5x5_c64_16x16", 64, 16, 5, 64},
}

// BenchmarkConv times forward+backward (dX, dW, dB) of batch-64 convolutions
// with one worker per core; GFLOP/s counts 3 passes x 2 x multiply-adds.
func BenchmarkConv(b *testing.B) {
	const batch = 64
	for _, g := range Gemms() {
		be := NewCPU(g, 0)
		for _, s := range convBenchShapes {
			b.Run(fmt.Sprintf("%s/%s", g.Name(), s.name), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 1))
				x := NewValue("x", []int{batch, s.c, s.hw, s.hw}, true)
				w := NewParam("w", Weight, s.c, s.c/s.grp, s.k, s.k)
				bias := NewParam("b", NoDecay, s.c)
				randFill(rng, x.Data)
				randFill(rng, w.Data)
				l, err := be.Conv2D(x, w, bias, ConvAttrs{OutC: s.c, Kernel: s.k, Stride: 1, Pad: s.k / 2, Dilation: 1, Groups: s.grp})
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
				macs := float64(batch) * float64(s.c*s.hw*s.hw) * float64(s.c/s.grp*s.k*s.k)
				b.ReportMetric(3*2*macs*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
