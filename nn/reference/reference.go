// Package reference is a second nn.Backend: every kernel written as the
// plain loops of its definition, one goroutine, no BLAS, no assembly, sums
// accumulated in float64. It is slow on purpose; it exists to prove that
// the nn.Backend seam holds (it passes nn/nntest's conformance suite and
// trains a network to the CPU backend's losses) and to document each
// kernel's math next to the loops that compute it.
//
// Conventions shared by every layer:
//   - values are NCHW float32 (or N,F for flat ones); Shape[0] is the
//     current batch, which may be smaller than the allocated one (SetBatch);
//   - Forward overwrites the output; Backward reads the output's gradient
//     dy and ADDS into the inputs' and parameters' gradients (a value may
//     feed several layers), skipping inputs without a gradient;
//   - storage is nn.Value and nn.Param, host memory, as on the CPU backend.
package reference

import (
	"fmt"
	"math"
	"slices"

	"bayesnas/nn"
)

// Backend is the reference backend. It has no state: the worker count it
// is built with is ignored (everything runs on the calling goroutine, so
// results cannot depend on it).
type Backend struct{}

// New returns the reference backend.
func New() *Backend { return &Backend{} }

var _ nn.Backend = (*Backend)(nil)

// Name is "reference".
func (*Backend) Name() string { return "reference" }

// NewValue allocates host memory (zeroed).
func (*Backend) NewValue(name string, shape []int, withGrad bool) *nn.Value {
	return nn.NewValue(name, shape, withGrad)
}

// NewParam allocates host memory (zeroed).
func (*Backend) NewParam(name string, kind nn.ParamKind, shape ...int) *nn.Param {
	return nn.NewParam(name, kind, shape...)
}

// checkInput rejects values a kernel cannot index: nil, a rank other than
// 4 (or 2 unless want4D), an empty dimension.
func checkInput(op string, x *nn.Value, want4D bool) error {
	if x == nil {
		return fmt.Errorf("%s: input value is nil", op)
	}
	if len(x.Shape) != 4 && (want4D || len(x.Shape) != 2) {
		return fmt.Errorf("%s: input %s has shape %v, want [N,C,H,W]%s", op, x.Name, x.Shape, map[bool]string{false: " or [N,F]"}[want4D])
	}
	for _, d := range x.Shape {
		if d <= 0 {
			return fmt.Errorf("%s: input %s has an empty dimension in shape %v", op, x.Name, x.Shape)
		}
	}
	return nil
}

// at4 is the offset of element (n, c, y, x) of an [N,C,H,W] tensor.
func at4(n, c, y, x, C, H, W int) int { return ((n*C+c)*H+y)*W + x }

// ---------------------------------------------------------------------------
// Convolution

// Conv2D: with G groups, Cg = C/G input channels and Og = OutC/G output
// channels per group, output channel o in group g = o/Og,
//
//	y[n,o,i,j] = b[o] + sum_{c<Cg, p<K, q<K} w[o,c,p,q] * x[n, g*Cg+c, i*S-P+p*D, j*S-P+q*D]
//
// with x zero outside the input (padding P, stride S, dilation D). The
// output is OH x OW with OH = (H + 2P - D(K-1) - 1)/S + 1 (nn.OutSize).
// Backward, for every output element and tap that reads a real input:
//
//	dx[n, g*Cg+c, iy, ix] += w[o,c,p,q] * dy[n,o,i,j]
//	dw[o,c,p,q]           += x[n, g*Cg+c, iy, ix] * dy[n,o,i,j]
//	db[o]                 += dy[n,o,i,j]
func (*Backend) Conv2D(x *nn.Value, w, b *nn.Param, a nn.ConvAttrs) (nn.Layer, error) {
	if w == nil {
		return nil, fmt.Errorf("conv: weight is nil")
	}
	name := w.Name
	if err := checkInput("conv "+name, x, true); err != nil {
		return nil, err
	}
	if a.Kernel < 1 || a.Stride < 1 || a.Pad < 0 || a.Dilation < 1 || a.Groups < 1 || a.OutC < 1 {
		return nil, fmt.Errorf("conv %s: attributes %+v: kernel, stride, dilation, groups, output channels must be >= 1, pad >= 0", name, a)
	}
	c := x.C()
	if c%a.Groups != 0 || a.OutC%a.Groups != 0 {
		return nil, fmt.Errorf("conv %s: input channels %d and output channels %d must both be divisible by groups %d", name, c, a.OutC, a.Groups)
	}
	if want := []int{a.OutC, c / a.Groups, a.Kernel, a.Kernel}; !slices.Equal(w.Shape, want) || len(w.Data) != a.OutC*c/a.Groups*a.Kernel*a.Kernel {
		return nil, fmt.Errorf("conv %s: weight shape %v, want %v (OutC, InC/Groups, K, K)", name, w.Shape, want)
	}
	if b != nil && len(b.Data) != a.OutC {
		return nil, fmt.Errorf("conv %s: bias %s shape %v, want [%d]", name, b.Name, b.Shape, a.OutC)
	}
	oh := nn.OutSize(x.H(), a.Kernel, a.Stride, a.Pad, a.Dilation)
	ow := nn.OutSize(x.W(), a.Kernel, a.Stride, a.Pad, a.Dilation)
	if oh < 1 || ow < 1 {
		return nil, fmt.Errorf("conv %s: input %dx%d too small for kernel %d, dilation %d, pad %d", name, x.H(), x.W(), a.Kernel, a.Dilation, a.Pad)
	}
	l := &conv{x: x, w: w, b: b, a: a}
	l.y = nn.NewValue(name+":out", []int{x.N(), a.OutC, oh, ow}, true)
	return l, nil
}

type conv struct {
	x, y *nn.Value
	w, b *nn.Param
	a    nn.ConvAttrs
}

func (l *conv) Output() *nn.Value { return l.y }

// input returns the input element that tap (p, q) of output (i, j) reads
// for input channel ic of sample n, and whether it is inside the input.
func (l *conv) input(n, ic, i, j, p, q int) (int, bool) {
	a := l.a
	iy := i*a.Stride - a.Pad + p*a.Dilation
	ix := j*a.Stride - a.Pad + q*a.Dilation
	if iy < 0 || iy >= l.x.H() || ix < 0 || ix >= l.x.W() {
		return 0, false
	}
	return at4(n, ic, iy, ix, l.x.C(), l.x.H(), l.x.W()), true
}

func (l *conv) Forward(bool) {
	a := l.a
	N, O, OH, OW := l.y.N(), a.OutC, l.y.H(), l.y.W()
	cg, og, k := l.x.C()/a.Groups, a.OutC/a.Groups, a.Kernel
	for n := 0; n < N; n++ {
		for o := 0; o < O; o++ {
			g := o / og
			for i := 0; i < OH; i++ {
				for j := 0; j < OW; j++ {
					var s float64
					if l.b != nil {
						s = float64(l.b.Data[o])
					}
					for c := 0; c < cg; c++ {
						for p := 0; p < k; p++ {
							for q := 0; q < k; q++ {
								if xi, ok := l.input(n, g*cg+c, i, j, p, q); ok {
									s += float64(l.w.Data[((o*cg+c)*k+p)*k+q]) * float64(l.x.Data[xi])
								}
							}
						}
					}
					l.y.Data[at4(n, o, i, j, O, OH, OW)] = float32(s)
				}
			}
		}
	}
}

func (l *conv) Backward() {
	a := l.a
	N, O, OH, OW := l.y.N(), a.OutC, l.y.H(), l.y.W()
	cg, og, k := l.x.C()/a.Groups, a.OutC/a.Groups, a.Kernel
	dy := l.y.Grad
	// Parameter gradients: one float64 sum per element over every output.
	for o := 0; o < O; o++ {
		g := o / og
		if l.b != nil && l.b.Grad != nil {
			var s float64
			for n := 0; n < N; n++ {
				for i := 0; i < OH*OW; i++ {
					s += float64(dy[(n*O+o)*OH*OW+i])
				}
			}
			l.b.Grad[o] += float32(s)
		}
		if l.w.Grad == nil {
			continue
		}
		for c := 0; c < cg; c++ {
			for p := 0; p < k; p++ {
				for q := 0; q < k; q++ {
					var s float64
					for n := 0; n < N; n++ {
						for i := 0; i < OH; i++ {
							for j := 0; j < OW; j++ {
								if xi, ok := l.input(n, g*cg+c, i, j, p, q); ok {
									s += float64(l.x.Data[xi]) * float64(dy[at4(n, o, i, j, O, OH, OW)])
								}
							}
						}
					}
					l.w.Grad[((o*cg+c)*k+p)*k+q] += float32(s)
				}
			}
		}
	}
	if l.x.Grad == nil {
		return
	}
	// Input gradient: gathered per input element in float64, then added.
	acc := make([]float64, l.x.N()*l.x.PerSample())
	for n := 0; n < N; n++ {
		for o := 0; o < O; o++ {
			g := o / og
			for i := 0; i < OH; i++ {
				for j := 0; j < OW; j++ {
					d := float64(dy[at4(n, o, i, j, O, OH, OW)])
					for c := 0; c < cg; c++ {
						for p := 0; p < k; p++ {
							for q := 0; q < k; q++ {
								if xi, ok := l.input(n, g*cg+c, i, j, p, q); ok {
									acc[xi] += float64(l.w.Data[((o*cg+c)*k+p)*k+q]) * d
								}
							}
						}
					}
				}
			}
		}
	}
	for i, v := range acc {
		l.x.Grad[i] += float32(v)
	}
}

// IsChannelScale: a 1x1 depthwise convolution, stride 1, no padding, no
// bias: y[n,c] = w[c] x[n,c].
func (l *conv) IsChannelScale() bool {
	a := l.a
	return a.Kernel == 1 && a.Stride == 1 && a.Pad == 0 && l.b == nil && a.Groups == l.x.C() && a.OutC == l.x.C() && a.Groups > 1
}

// PerSampleScaleGrads (channel scales only) is, after a Backward,
// g[n*C+c] = sum over positions of dy[n,c] * x[n,c].
func (l *conv) PerSampleScaleGrads(g []float64) (*nn.Param, bool, error) {
	if !l.IsChannelScale() {
		return nil, false, nil
	}
	N, C, HW := l.y.N(), l.y.C(), l.y.H()*l.y.W()
	if len(g) < N*C {
		return l.w, true, fmt.Errorf("channel scale %s: %d slots for %d samples x %d channels", l.w.Name, len(g), N, C)
	}
	for n := 0; n < N; n++ {
		for c := 0; c < C; c++ {
			var s float64
			for i := 0; i < HW; i++ {
				k := (n*C+c)*HW + i
				s += float64(l.y.Grad[k]) * float64(l.x.Data[k])
			}
			g[n*C+c] = s
		}
	}
	return l.w, true, nil
}

// ---------------------------------------------------------------------------
// Batch normalisation

// BatchNorm normalises each channel c over the batch and positions (m
// elements). In training, with the batch mean mu_c and biased variance
// var_c,
//
//	xhat = (x - mu_c) / sqrt(var_c + eps),  y = gamma_c * xhat + beta_c,
//	run_mean = (1-momentum) run_mean + momentum mu_c,
//	run_var  = (1-momentum) run_var  + momentum var_c * m/(m-1)  (unbiased);
//
// in evaluation mu_c and var_c are the running statistics. Backward, with
// sums over the channel's elements:
//
//	dgamma_c += sum dy*xhat,  dbeta_c += sum dy,
//	dx = gamma_c/sqrt(var_c+eps) * (dy - sum(dy)/m - xhat*sum(dy*xhat)/m)  (training),
//	dx = gamma_c/sqrt(var_c+eps) * dy                                       (evaluation).
func (*Backend) BatchNorm(x *nn.Value, gamma, beta, runMean, runVar *nn.Param, a nn.BNAttrs) (nn.Layer, error) {
	if err := checkInput("batchnorm", x, false); err != nil {
		return nil, err
	}
	c := x.C()
	for _, p := range []struct {
		role      string
		p         *nn.Param
		trainable bool
	}{{"gamma", gamma, true}, {"beta", beta, true}, {"running mean", runMean, false}, {"running variance", runVar, false}} {
		switch {
		case p.p == nil:
			return nil, fmt.Errorf("batchnorm on %s: %s parameter is nil", x.Name, p.role)
		case len(p.p.Data) != c:
			return nil, fmt.Errorf("batchnorm on %s: %s %s has %d elements, want %d (channels)", x.Name, p.role, p.p.Name, len(p.p.Data), c)
		case p.trainable != p.p.Trainable() || (p.trainable && len(p.p.Grad) != c):
			return nil, fmt.Errorf("batchnorm on %s: %s %s: trainable %v, want %v", x.Name, p.role, p.p.Name, p.p.Trainable(), p.trainable)
		}
	}
	if !(a.Eps > 0) || !(a.Momentum >= 0 && a.Momentum <= 1) {
		return nil, fmt.Errorf("batchnorm on %s: eps %g must be positive and momentum %g in [0,1]", x.Name, a.Eps, a.Momentum)
	}
	l := &batchNorm{x: x, gamma: gamma, beta: beta, runMean: runMean, runVar: runVar, a: a,
		mean: make([]float64, c), invStd: make([]float64, c)}
	l.y = nn.NewValue("batchnorm("+x.Name+")", x.Shape, true)
	return l, nil
}

type batchNorm struct {
	x, y                         *nn.Value
	gamma, beta, runMean, runVar *nn.Param
	a                            nn.BNAttrs
	train                        bool      // mode of the last Forward
	mean, invStd                 []float64 // per channel, as the last Forward used them
}

func (l *batchNorm) Output() *nn.Value { return l.y }

// channel calls f(k) for the offset k of every element of channel c in
// the current batch.
func (l *batchNorm) channel(c int, f func(k int)) {
	C, HW := l.x.C(), l.x.H()*l.x.W()
	for n := 0; n < l.x.N(); n++ {
		for i := 0; i < HW; i++ {
			f((n*C+c)*HW + i)
		}
	}
}

func (l *batchNorm) Forward(train bool) {
	l.train = train
	m := float64(l.x.N() * l.x.H() * l.x.W())
	for c := 0; c < l.x.C(); c++ {
		mean, variance := float64(l.runMean.Data[c]), float64(l.runVar.Data[c])
		if train {
			var s, q float64
			l.channel(c, func(k int) { s += float64(l.x.Data[k]) })
			mean = s / m
			l.channel(c, func(k int) { d := float64(l.x.Data[k]) - mean; q += d * d })
			variance = q / m
			unbiased := variance
			if m > 1 {
				unbiased = q / (m - 1)
			}
			mom := float64(l.a.Momentum)
			l.runMean.Data[c] = float32((1-mom)*float64(l.runMean.Data[c]) + mom*mean)
			l.runVar.Data[c] = float32((1-mom)*float64(l.runVar.Data[c]) + mom*unbiased)
		}
		invStd := 1 / math.Sqrt(variance+float64(l.a.Eps))
		l.mean[c], l.invStd[c] = mean, invStd
		gamma, beta := float64(l.gamma.Data[c]), float64(l.beta.Data[c])
		l.channel(c, func(k int) {
			l.y.Data[k] = float32(gamma*(float64(l.x.Data[k])-mean)*invStd + beta)
		})
	}
}

func (l *batchNorm) Backward() {
	m := float64(l.x.N() * l.x.H() * l.x.W())
	dy := l.y.Grad
	for c := 0; c < l.x.C(); c++ {
		mean, invStd := l.mean[c], l.invStd[c]
		xhat := func(k int) float64 { return (float64(l.x.Data[k]) - mean) * invStd }
		var sdy, sdyx float64
		l.channel(c, func(k int) {
			sdy += float64(dy[k])
			sdyx += float64(dy[k]) * xhat(k)
		})
		l.gamma.Grad[c] += float32(sdyx)
		l.beta.Grad[c] += float32(sdy)
		if l.x.Grad == nil {
			continue
		}
		scale := float64(l.gamma.Data[c]) * invStd
		l.channel(c, func(k int) {
			d := float64(dy[k])
			if l.train {
				d -= sdy/m + xhat(k)*sdyx/m
			}
			l.x.Grad[k] += float32(scale * d)
		})
	}
}

// Momentum and SetMomentum make the layer an nn.MomentumSetter
// (nn.RecalibrateBN averages batches by setting momentum 1/(k+1)).
func (l *batchNorm) Momentum() float32     { return l.a.Momentum }
func (l *batchNorm) SetMomentum(m float32) { l.a.Momentum = m }

// IsChannelScale is false: a batch norm also shifts.
func (l *batchNorm) IsChannelScale() bool { return false }

// PerSampleScaleGrads is, after an evaluation Forward and a Backward,
// g[n*C+c] = sum over positions of dy[n,c] * xhat[n,c]: the gradient with
// respect to gamma_c restricted to sample n. In training the batch
// statistics couple the samples, so it refuses.
func (l *batchNorm) PerSampleScaleGrads(g []float64) (*nn.Param, bool, error) {
	N, C, HW := l.x.N(), l.x.C(), l.x.H()*l.x.W()
	if l.train {
		return l.gamma, true, fmt.Errorf("batchnorm on %s: per-sample scale gradients need evaluation mode", l.x.Name)
	}
	if len(g) < N*C {
		return l.gamma, true, fmt.Errorf("batchnorm on %s: %d slots for %d samples x %d channels", l.x.Name, len(g), N, C)
	}
	for n := 0; n < N; n++ {
		for c := 0; c < C; c++ {
			var s float64
			for i := 0; i < HW; i++ {
				k := (n*C+c)*HW + i
				s += float64(l.y.Grad[k]) * (float64(l.x.Data[k]) - l.mean[c]) * l.invStd[c]
			}
			g[n*C+c] = s
		}
	}
	return l.gamma, true, nil
}

var (
	_ nn.MomentumSetter  = (*batchNorm)(nil)
	_ nn.PerSampleScaler = (*batchNorm)(nil)
	_ nn.PerSampleScaler = (*conv)(nil)
)
