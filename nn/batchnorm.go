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
			for _, v := range x[off : off+hw] {
				s += float64(v)
			}
		}
		mean = s / float64(m)
		// Two passes rather than E[x^2]-E[x]^2, which cancels badly when the
		// mean is large compared with the spread.
		var q float64
		for off := ch * hw; off < n*stride; off += stride {
			for _, v := range x[off : off+hw] {
				d := float64(v) - mean
				q += d * d
			}
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
		g := dy[off : off+hw]
		for i, v := range x[off : off+hw] {
			d := float64(g[i])
			sdy += d
			sdyx += d * (float64(v) - mean) * invStd
		}
	}
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
	for off := ch * hw; off < n*stride; off += stride {
		g, dx := dy[off:off+hw], l.x.Grad[off:off+hw]
		for i, v := range x[off : off+hw] {
			xhat := (float64(v) - mean) * invStd
			dx[i] += float32(k * (float64(g[i]) - a - b*xhat))
		}
	}
}

func (l *bnLayer) Forward(train bool) {
	l.train = train
	l.pool.Run(l.c, l.fwd)
}

func (l *bnLayer) Backward() { l.pool.Run(l.c, l.bwd) }

func (l *bnLayer) Output() *Value { return l.y }
