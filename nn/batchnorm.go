package nn

import (
	"fmt"
	"math"
)

type bnLayer struct {
	pool                         *Pool
	x, y                         *Value
	gamma, beta, runMean, runVar *Param
	a                            BNAttrs
	c, hw                        int
	train                        bool      // mode of the last Forward, which Backward differentiates
	mean, invStd                 []float64 // per channel, as used by the last Forward
	fwd, bwd                     func(worker, ch int)
}

// BatchNorm normalises each channel over the batch and spatial positions.
// In training it uses the batch statistics (biased variance) and updates the
// running ones PyTorch-style (unbiased variance); in evaluation it uses the
// running statistics. Work is split over channels, so every reduction runs on
// one goroutine in a fixed order and results do not depend on the workers.
func (c *CPU) BatchNorm(x *Value, gamma, beta, runMean, runVar *Param, a BNAttrs) (Layer, error) {
	if err := checkShape("batchnorm", x, false); err != nil {
		return nil, err
	}
	ch := x.C()
	for _, p := range []struct {
		role   string
		p      *Param
		buffer bool
	}{{"gamma", gamma, false}, {"beta", beta, false}, {"running mean", runMean, true}, {"running variance", runVar, true}} {
		switch {
		case p.p == nil:
			return nil, fmt.Errorf("batchnorm on %s: %s parameter is nil", x.Name, p.role)
		case len(p.p.Data) != ch:
			return nil, fmt.Errorf("batchnorm on %s: %s %s has %d elements, want %d (channels)", x.Name, p.role, p.p.Name, len(p.p.Data), ch)
		case p.buffer && p.p.Kind != Buffer:
			return nil, fmt.Errorf("batchnorm on %s: %s %s must be a Buffer param", x.Name, p.role, p.p.Name)
		case !p.buffer && (!p.p.Trainable() || len(p.p.Grad) != ch):
			return nil, fmt.Errorf("batchnorm on %s: %s %s must be trainable", x.Name, p.role, p.p.Name)
		}
	}
	if !(a.Eps > 0) || !(a.Momentum >= 0 && a.Momentum <= 1) {
		return nil, fmt.Errorf("batchnorm on %s: eps %g must be positive and momentum %g in [0,1]", x.Name, a.Eps, a.Momentum)
	}
	l := &bnLayer{pool: c.Pool, x: x, gamma: gamma, beta: beta, runMean: runMean, runVar: runVar, a: a,
		c: ch, hw: x.H() * x.W(), mean: make([]float64, ch), invStd: make([]float64, ch)}
	l.y = c.NewValue("batchnorm("+x.Name+")", x.Shape, true)
	l.fwd, l.bwd = l.forwardChannel, l.backwardChannel
	return l, nil
}

func (l *bnLayer) forwardChannel(_, ch int) {
	n, hw, stride := l.x.N(), l.hw, l.c*l.hw
	x, y := l.x.Data, l.y.Data
	var mean, invStd float64
	if l.train {
		m := n * hw
		var s float64
		for off := ch * hw; off < n*stride; off += stride {
			s += sumPlane(x[off : off+hw])
		}
		mean = s / float64(m)
		// Two passes rather than E[x^2]-E[x]^2, which cancels badly when the
		// mean is large compared with the spread.
		var q float64
		for off := ch * hw; off < n*stride; off += stride {
			q += sumSquaredDev(x[off:off+hw], float32(mean))
		}
		biased := q / float64(m)
		invStd = 1 / math.Sqrt(biased+float64(l.a.Eps))
		unbiased := biased
		if m > 1 { // PyTorch refuses m == 1 in training; keep the stats finite instead
			unbiased = q / float64(m-1)
		}
		mom := float64(l.a.Momentum)
		l.runMean.Data[ch] = float32((1-mom)*float64(l.runMean.Data[ch]) + mom*mean)
		l.runVar.Data[ch] = float32((1-mom)*float64(l.runVar.Data[ch]) + mom*unbiased)
	} else {
		mean = float64(l.runMean.Data[ch])
		invStd = 1 / math.Sqrt(float64(l.runVar.Data[ch])+float64(l.a.Eps))
	}
	l.mean[ch], l.invStd[ch] = mean, invStd
	scale := float64(l.gamma.Data[ch]) * invStd
	shift := float64(l.beta.Data[ch]) - scale*mean
	sc, sh := float32(scale), float32(shift)
	for off := ch * hw; off < n*stride; off += stride {
		ys := y[off : off+hw]
		for i, v := range x[off : off+hw] {
			ys[i] = v*sc + sh
		}
	}
}

// backwardChannel: with xhat = (x-mean)*invStd and m elements per channel,
// dgamma = sum(dy*xhat), dbeta = sum(dy), and in training (statistics depend
// on x) dx = gamma*invStd*(dy - sum(dy)/m - xhat*sum(dy*xhat)/m); in
// evaluation dx = gamma*invStd*dy.
func (l *bnLayer) backwardChannel(_, ch int) {
	n, hw, stride := l.x.N(), l.hw, l.c*l.hw
	x, dy := l.x.Data, l.y.Grad
	mean, invStd := l.mean[ch], l.invStd[ch]
	var sdy, sdyx float64
	for off := ch * hw; off < n*stride; off += stride {
		a, b := sumDyDev(dy[off:off+hw], x[off:off+hw], float32(mean))
		sdy += a
		sdyx += b
	}
	sdyx *= invStd
	l.gamma.Grad[ch] += float32(sdyx)
	l.beta.Grad[ch] += float32(sdy)
	if l.x.Grad == nil {
		return
	}
	k := float64(l.gamma.Data[ch]) * invStd
	var a, b float64 // dx = k*dy - k*a - k*b*xhat
	if l.train {
		m := float64(n * hw)
		a, b = sdy/m, sdyx/m
	}
	// float32 coefficients: one multiply-add chain per element, with x-mean
	// formed first so a large mean does not cancel.
	kf, ka, kb, mf := float32(k), float32(k*a), float32(k*b*invStd), float32(mean)
	for off := ch * hw; off < n*stride; off += stride {
		g, dx := dy[off:off+hw], l.x.Grad[off:off+hw]
		for i, v := range x[off : off+hw] {
			dx[i] += kf*g[i] - ka - kb*(v-mf)
		}
	}
}

// sumPlane, sumSquaredDev and sumDyDev reduce one plane (at most a few
// thousand elements) in four float32 lanes: independent accumulators hide
// the add latency that a single float64 chain would pay per element, and the
// planes are then summed in float64. The order is fixed, so results do not
// depend on scheduling.
func sumPlane(s []float32) float64 {
	var a0, a1, a2, a3 float32
	i := 0
	for ; i+4 <= len(s); i += 4 {
		a0 += s[i]
		a1 += s[i+1]
		a2 += s[i+2]
		a3 += s[i+3]
	}
	for ; i < len(s); i++ {
		a0 += s[i]
	}
	return float64(a0) + float64(a1) + float64(a2) + float64(a3)
}

func sumSquaredDev(s []float32, mean float32) float64 {
	var a0, a1, a2, a3 float32
	i := 0
	for ; i+4 <= len(s); i += 4 {
		d0, d1, d2, d3 := s[i]-mean, s[i+1]-mean, s[i+2]-mean, s[i+3]-mean
		a0 += d0 * d0
		a1 += d1 * d1
		a2 += d2 * d2
		a3 += d3 * d3
	}
	for ; i < len(s); i++ {
		d := s[i] - mean
		a0 += d * d
	}
	return float64(a0) + float64(a1) + float64(a2) + float64(a3)
}

// sumDyDev returns sum(dy) and sum(dy*(x-mean)).
func sumDyDev(dy, x []float32, mean float32) (float64, float64) {
	var s0, s1, q0, q1 float32
	i := 0
	for ; i+2 <= len(x); i += 2 {
		s0 += dy[i]
		s1 += dy[i+1]
		q0 += dy[i] * (x[i] - mean)
		q1 += dy[i+1] * (x[i+1] - mean)
	}
	for ; i < len(x); i++ {
		s0 += dy[i]
		q0 += dy[i] * (x[i] - mean)
	}
	return float64(s0) + float64(s1), float64(q0) + float64(q1)
}

func (l *bnLayer) Forward(train bool) {
	l.train = train
	l.pool.Run(l.c, l.fwd)
}

func (l *bnLayer) Backward() { l.pool.Run(l.c, l.bwd) }

func (l *bnLayer) Output() *Value { return l.y }
