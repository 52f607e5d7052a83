package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchLayer times Forward+Backward in training mode and reports throughput
// in elements of the input per second.
func benchLayer(b *testing.B, l Layer, x *Value) {
	randFill(rand.New(rand.NewPCG(1, 1)), l.Output().Grad)
	b.ReportAllocs()
	b.SetBytes(int64(4 * len(x.Data)))
	for b.Loop() {
		l.Forward(true)
		l.Backward()
	}
}

// Batch 64 at the CIFAR stage sizes of the backbones: 16x32x32 and 64x8x8.
var benchShapes = [][]int{{64, 16, 32, 32}, {64, 64, 8, 8}}

func benchName(s []int) string { return fmt.Sprintf("%dx%dx%dx%d", s[0], s[1], s[2], s[3]) }

func BenchmarkBatchNorm(b *testing.B) {
	c := NewCPU(DefaultGemm(), 0)
	for _, s := range benchShapes {
		b.Run(benchName(s), func(b *testing.B) {
			x := newInput(c, rand.New(rand.NewPCG(1, 2)), "x", s...)
			g, be := NewParam("g", NoDecay, s[1]), NewParam("b", NoDecay, s[1])
			rm, rv := NewParam("rm", Buffer, s[1]), NewParam("rv", Buffer, s[1])
			for i := range g.Data {
				g.Data[i], rv.Data[i] = 1, 1
			}
			l, err := c.BatchNorm(x, g, be, rm, rv, BNAttrs{Eps: 1e-5, Momentum: 0.1})
			if err != nil {
				b.Fatal(err)
			}
			benchLayer(b, l, x)
		})
	}
}

func BenchmarkReLU(b *testing.B) {
	c := NewCPU(DefaultGemm(), 0)
	for _, s := range benchShapes {
		b.Run(benchName(s), func(b *testing.B) {
			x := newInput(c, rand.New(rand.NewPCG(1, 2)), "x", s...)
			l, err := c.ReLU(x)
			if err != nil {
				b.Fatal(err)
			}
			benchLayer(b, l, x)
		})
	}
}

func BenchmarkPooling(b *testing.B) {
	c := NewCPU(DefaultGemm(), 0)
	for _, s := range benchShapes {
		for _, kind := range []string{"max3s2", "avg3s2", "avg2s2", "max3s1", "avg3s1", "global"} {
			b.Run(kind+"/"+benchName(s), func(b *testing.B) {
				x := newInput(c, rand.New(rand.NewPCG(1, 2)), "x", s...)
				var l Layer
				var err error
				switch kind {
				case "max3s2":
					l, err = c.MaxPool(x, PoolAttrs{Kernel: 3, Stride: 2, Pad: 1})
				case "avg3s2":
					l, err = c.AvgPool(x, PoolAttrs{Kernel: 3, Stride: 2, Pad: 1})
				case "max3s1":
					l, err = c.MaxPool(x, PoolAttrs{Kernel: 3, Stride: 1, Pad: 1})
				case "avg3s1":
					l, err = c.AvgPool(x, PoolAttrs{Kernel: 3, Stride: 1, Pad: 1})
				case "avg2s2":
					l, err = c.AvgPool(x, PoolAttrs{Kernel: 2, Stride: 2})
				default:
					l, err = c.GlobalAvgPool(x)
				}
				if err != nil {
					b.Fatal(err)
				}
				benchLayer(b, l, x)
			})
		}
	}
}
