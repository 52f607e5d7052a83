package nntest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"bayesnas/nn"
)

// ConvCase is one convolution shape: an N x C x H x W input, the attributes,
// with or without bias.
type ConvCase struct {
	N, C, H, W int
	A          nn.ConvAttrs
	Bias       bool
}

// String names the case for subtests.
func (cc ConvCase) String() string {
	return fmt.Sprintf("n%d_c%d_%dx%d_oc%d_k%d_s%d_p%d_d%d_g%d_bias%v", cc.N, cc.C, cc.H, cc.W,
		cc.A.OutC, cc.A.Kernel, cc.A.Stride, cc.A.Pad, cc.A.Dilation, cc.A.Groups, cc.Bias)
}

// Attrs is a shorthand for ConvAttrs{OutC, Kernel, Stride, Pad, Dilation, Groups}.
func Attrs(outC, k, s, p, d, g int) nn.ConvAttrs {
	return nn.ConvAttrs{OutC: outC, Kernel: k, Stride: s, Pad: p, Dilation: d, Groups: g}
}

// ConvCases cover kernels 1/3/5/7, strides 1/2, pads 0-3, dilations 1/2,
// dense, grouped, depthwise and depthwise-multiplier-2 convolutions on odd
// sizes, with batches 1 and 3, with and without bias.
var ConvCases = []ConvCase{
	{3, 4, 9, 7, Attrs(6, 3, 1, 1, 1, 1), true},
	{1, 3, 11, 10, Attrs(5, 5, 2, 2, 1, 1), false},
	{3, 4, 7, 9, Attrs(4, 1, 1, 0, 1, 1), true},  // pointwise GEMM
	{3, 8, 5, 5, Attrs(8, 1, 1, 0, 2, 2), false}, // grouped pointwise
	{1, 2, 13, 11, Attrs(3, 7, 1, 3, 1, 1), true},
	{3, 4, 9, 9, Attrs(8, 3, 2, 1, 2, 2), true},
	{3, 8, 7, 8, Attrs(8, 3, 1, 2, 2, 4), false},
	{3, 3, 5, 6, Attrs(4, 1, 2, 1, 1, 1), true}, // 1x1 with stride and pad: im2col path
	{1, 4, 7, 7, Attrs(4, 7, 2, 3, 1, 2), true},
	{3, 1, 6, 5, Attrs(2, 3, 1, 0, 1, 1), false},
	{3, 6, 9, 7, Attrs(6, 3, 1, 1, 1, 6), true}, // depthwise
	{1, 6, 9, 7, Attrs(6, 5, 2, 2, 1, 6), false},
	{3, 5, 7, 7, Attrs(5, 3, 2, 0, 1, 5), true},
	{3, 4, 9, 9, Attrs(4, 3, 1, 2, 2, 4), false},
	{1, 2, 3, 2, Attrs(2, 3, 1, 1, 1, 2), true},    // narrower than the kernel
	{3, 4, 8, 9, Attrs(8, 3, 1, 1, 1, 4), true},    // depthwise, multiplier 2
	{3, 4, 11, 9, Attrs(8, 5, 1, 3, 2, 4), false},  // depthwise, multiplier 2, dilated
	{3, 3, 10, 11, Attrs(6, 7, 2, 3, 1, 3), true},  // depthwise, multiplier 2, strided 7x7
	{3, 3, 5, 6, Attrs(4, 1, 1, 1, 1, 1), false},   // pad > dil*(k-1): input gradient by col2im
	{1, 3, 6, 7, Attrs(4, 3, 1, 3, 1, 1), true},    // pad > dil*(k-1): input gradient by col2im
	{3, 4, 12, 13, Attrs(4, 7, 1, 3, 1, 4), true},  // depthwise 7x7
	{3, 4, 9, 10, Attrs(4, 3, 2, 2, 2, 4), false},  // depthwise, strided and dilated: one phase plane
	{2, 3, 11, 9, Attrs(3, 5, 2, 4, 2, 3), true},   // depthwise 5x5, strided and dilated
	{2, 3, 10, 11, Attrs(3, 3, 3, 1, 1, 3), true},  // depthwise, stride 3: nine phase planes
	{2, 3, 33, 35, Attrs(3, 5, 1, 2, 1, 3), false}, // depthwise, planes of several 64-output blocks
	{2, 3, 6, 5, Attrs(3, 3, 1, 3, 1, 3), true},    // depthwise, pad > dil*(k-1)
	{3, 2, 8, 8, Attrs(4, 7, 1, 6, 2, 2), false},   // depthwise 7x7, dilated, multiplier 2
}

// ConvTensors holds the input, parameters and upstream gradient of a case.
type ConvTensors struct {
	X    *nn.Value
	W, B *nn.Param
	Dy   []float32
}

// NewConvTensors allocates a case's input on be and fills the input, the
// parameters and an upstream gradient with uniform values drawn from seed.
func NewConvTensors(be nn.Backend, cc ConvCase, seed uint64) ConvTensors {
	rng := rand.New(rand.NewPCG(seed, 99))
	x := be.NewValue("x", []int{cc.N, cc.C, cc.H, cc.W}, true)
	w := be.NewParam("w", nn.Weight, cc.A.OutC, cc.C/cc.A.Groups, cc.A.Kernel, cc.A.Kernel)
	RandFill(rng, x.Data)
	RandFill(rng, w.Data)
	x.Commit()
	w.Commit()
	var b *nn.Param
	if cc.Bias {
		b = be.NewParam("b", nn.NoDecay, cc.A.OutC)
		RandFill(rng, b.Data)
		b.Commit()
	}
	oh := nn.OutSize(cc.H, cc.A.Kernel, cc.A.Stride, cc.A.Pad, cc.A.Dilation)
	ow := nn.OutSize(cc.W, cc.A.Kernel, cc.A.Stride, cc.A.Pad, cc.A.Dilation)
	dy := make([]float32, cc.N*cc.A.OutC*oh*ow)
	RandFill(rng, dy)
	return ConvTensors{x, w, b, dy}
}

// NaiveConvForward is the direct 7-loop definition of a convolution.
func NaiveConvForward(cc ConvCase, x, w, b []float32) []float64 {
	a := cc.A
	oh := nn.OutSize(cc.H, a.Kernel, a.Stride, a.Pad, a.Dilation)
	ow := nn.OutSize(cc.W, a.Kernel, a.Stride, a.Pad, a.Dilation)
	cg, ocg := cc.C/a.Groups, a.OutC/a.Groups
	y := make([]float64, cc.N*a.OutC*oh*ow)
	for n := 0; n < cc.N; n++ {
		for oc := 0; oc < a.OutC; oc++ {
			g := oc / ocg
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					s := 0.0
					if b != nil {
						s = float64(b[oc])
					}
					for ci := 0; ci < cg; ci++ {
						ic := g*cg + ci
						for kh := 0; kh < a.Kernel; kh++ {
							for kw := 0; kw < a.Kernel; kw++ {
								iy := oy*a.Stride - a.Pad + kh*a.Dilation
								ix := ox*a.Stride - a.Pad + kw*a.Dilation
								if iy < 0 || iy >= cc.H || ix < 0 || ix >= cc.W {
									continue
								}
								s += float64(x[((n*cc.C+ic)*cc.H+iy)*cc.W+ix]) *
									float64(w[((oc*cg+ci)*a.Kernel+kh)*a.Kernel+kw])
							}
						}
					}
					y[((n*a.OutC+oc)*oh+oy)*ow+ox] = s
				}
			}
		}
	}
	return y
}

// NaiveConvBackward scatters every output gradient back to the input pixels
// and weights that produced it (written from the definition, not derived
// from the forward code).
func NaiveConvBackward(cc ConvCase, x, w, dy []float32) (dx, dw, db []float64) {
	a := cc.A
	oh := nn.OutSize(cc.H, a.Kernel, a.Stride, a.Pad, a.Dilation)
	ow := nn.OutSize(cc.W, a.Kernel, a.Stride, a.Pad, a.Dilation)
	cg, ocg := cc.C/a.Groups, a.OutC/a.Groups
	dx = make([]float64, len(x))
	dw = make([]float64, len(w))
	db = make([]float64, a.OutC)
	for n := 0; n < cc.N; n++ {
		for oc := 0; oc < a.OutC; oc++ {
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					g := float64(dy[((n*a.OutC+oc)*oh+oy)*ow+ox])
					db[oc] += g
					for ci := 0; ci < cg; ci++ {
						ic := oc/ocg*cg + ci
						for kh := 0; kh < a.Kernel; kh++ {
							iy := oy*a.Stride - a.Pad + kh*a.Dilation
							if iy < 0 || iy >= cc.H {
								continue
							}
							for kw := 0; kw < a.Kernel; kw++ {
								ix := ox*a.Stride - a.Pad + kw*a.Dilation
								if ix < 0 || ix >= cc.W {
									continue
								}
								xi := ((n*cc.C+ic)*cc.H+iy)*cc.W + ix
								wi := ((oc*cg+ci)*a.Kernel+kh)*a.Kernel + kw
								dx[xi] += float64(w[wi]) * g
								dw[wi] += float64(x[xi]) * g
							}
						}
					}
				}
			}
		}
	}
	return dx, dw, db
}

// NaivePool is the straightforward reference of max and average pooling: for every output, visit every
// kernel offset, keep the ones that land inside the input.
func NaivePool(x []float32, n, c, h, w int, a nn.PoolAttrs, isMax bool) (out []float32, oh, ow int) {
	oh = (h+2*a.Pad-a.Kernel)/a.Stride + 1
	ow = (w+2*a.Pad-a.Kernel)/a.Stride + 1
	if a.CeilMode {
		// Round up; drop a last window starting beyond input + left pad.
		ceil := func(in int) int {
			o := int(math.Ceil(float64(in+2*a.Pad-a.Kernel)/float64(a.Stride))) + 1
			if (o-1)*a.Stride >= in+a.Pad {
				o--
			}
			return o
		}
		oh, ow = ceil(h), ceil(w)
	}
	out = make([]float32, n*c*oh*ow)
	for p := 0; p < n*c; p++ {
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				best := math.Inf(-1)
				sum, count := 0.0, 0
				for ky := 0; ky < a.Kernel; ky++ {
					for kx := 0; kx < a.Kernel; kx++ {
						iy, ix := oy*a.Stride-a.Pad+ky, ox*a.Stride-a.Pad+kx
						if iy < 0 || iy >= h || ix < 0 || ix >= w {
							continue
						}
						v := float64(x[p*h*w+iy*w+ix])
						best = math.Max(best, v)
						sum += v
						count++
					}
				}
				var r float64
				switch {
				case isMax:
					r = best
				case a.CountIncludePad:
					r = sum / float64(a.Kernel*a.Kernel)
				default:
					r = sum / float64(count)
				}
				out[(p*oh+oy)*ow+ox] = float32(r)
			}
		}
	}
	return out, oh, ow
}

// NaiveBatchNorm is the reference batch norm, in float64 with plain loops; it returns
// the output and the running statistics after the call.
func NaiveBatchNorm(x []float32, n, c, hw int, gamma, beta, rm, rv []float32, eps, mom float64, train bool) (y []float64, newRM, newRV []float64) {
	y = make([]float64, len(x))
	newRM, newRV = make([]float64, c), make([]float64, c)
	m := float64(n * hw)
	for ch := 0; ch < c; ch++ {
		mean, variance := float64(rm[ch]), float64(rv[ch])
		newRM[ch], newRV[ch] = mean, variance
		if train {
			sum := 0.0
			for b := 0; b < n; b++ {
				for i := 0; i < hw; i++ {
					sum += float64(x[(b*c+ch)*hw+i])
				}
			}
			mean = sum / m
			sq := 0.0
			for b := 0; b < n; b++ {
				for i := 0; i < hw; i++ {
					d := float64(x[(b*c+ch)*hw+i]) - mean
					sq += d * d
				}
			}
			variance = sq / m
			newRM[ch] = (1-mom)*float64(rm[ch]) + mom*mean
			newRV[ch] = (1-mom)*float64(rv[ch]) + mom*sq/(m-1)
		}
		for b := 0; b < n; b++ {
			for i := 0; i < hw; i++ {
				j := (b*c+ch)*hw + i
				y[j] = float64(gamma[ch])*(float64(x[j])-mean)/math.Sqrt(variance+eps) + float64(beta[ch])
			}
		}
	}
	return y, newRM, newRV
}

// NaiveLinear is y[n,o] = b[o] + sum_i x[n,i] w[o,i] (b may be nil).
func NaiveLinear(x, w, b []float32, n, in, out int) []float64 {
	y := make([]float64, n*out)
	for r := 0; r < n; r++ {
		for o := 0; o < out; o++ {
			s := 0.0
			if b != nil {
				s = float64(b[o])
			}
			for i := 0; i < in; i++ {
				s += float64(x[r*in+i]) * float64(w[o*in+i])
			}
			y[r*out+o] = s
		}
	}
	return y
}

// NaiveSoftmaxCrossEntropy is the mean over n samples of
// -sum_j q_j log softmax(z)_j with q = (1-s)*onehot(y) + s/k, the number of
// samples whose first largest logit is the label, and the gradient
// (softmax(z) - q)/n, in float64 from the definition.
func NaiveSoftmaxCrossEntropy(logits []float32, labels []int32, k int, s float64) (loss float64, correct int, grad []float64) {
	n := len(labels)
	grad = make([]float64, n*k)
	for i, y := range labels {
		z := logits[i*k : (i+1)*k]
		best := 0
		var zmax float64 = math.Inf(-1)
		for j, v := range z {
			if float64(v) > zmax {
				zmax, best = float64(v), j
			}
		}
		if best == int(y) {
			correct++
		}
		var sum float64
		for _, v := range z {
			sum += math.Exp(float64(v) - zmax)
		}
		for j, v := range z {
			p := math.Exp(float64(v)-zmax) / sum
			q := s / float64(k)
			if j == int(y) {
				q += 1 - s
			}
			loss -= q * math.Log(p)
			grad[i*k+j] = (p - q) / float64(n)
		}
	}
	return loss / float64(n), correct, grad
}
