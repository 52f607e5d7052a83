package nn

import (
	"fmt"
	"math"
)

// bnMinTasks is how many (channel, sample range) tasks a batch norm layer
// aims for: with fewer channels than this, each channel's samples are split
// into ranges so every core gets work. The split depends only on the shape,
// never on the workers, so the reductions are the same on any pool.
const bnMinTasks = 16

// bnChunks is the number of sample ranges per channel for c channels and a
// batch of n.
func bnChunks(c, n int) int { return min((bnMinTasks+c-1)/c, n) }

type bnLayer struct {
	pool                         *Pool
	x, y                         *Value
	gamma, beta, runMean, runVar *Param
	a                            BNAttrs
	c, hw                        int
	train                        bool      // mode of the last Forward, which Backward differentiates
	mean, invStd                 []float64 // per channel, as used by the last Forward
	// chunks is the number of sample ranges per channel of the current
	// batch; partial holds their (sum, sum of squares) or (sum dy,
	// sum dy*(x-mean)), [channel][chunk][2], when chunks > 1.
	chunks                 int
	assignX                bool // the next Backward overwrites x.Grad (see gradLayer)
	partial                []float64
	fwdFused, bwdFused     func(worker, ch int)
	fwdStats, fwdNormalize func(worker, task int)
	bwdSums, bwdDx         func(worker, task int)
}

// BatchNorm normalises each channel over the batch and spatial positions.
// In training it uses the batch statistics (biased variance) and updates the
// running ones PyTorch-style (unbiased variance); in evaluation it uses the
// running statistics. Work is split over channels and, when there are fewer
// than bnMinTasks, over fixed sample ranges whose partial sums are added in
// order: every reduction runs in an order set by the shape alone, so results
// do not depend on the workers.
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
	l.chunks = bnChunks(ch, x.N())
	l.partial = make([]float64, 2*ch*l.chunks)
	l.y = c.NewValue("batchnorm("+x.Name+")", x.Shape, true)
	l.fwdFused, l.bwdFused = l.forwardFused, l.backwardFused
	l.fwdStats, l.fwdNormalize = l.forwardStats, l.forwardNormalize
	l.bwdSums, l.bwdDx = l.backwardSums, l.backwardDx
	return l, nil
}

// taskRange maps a chunked task to its channel and sample range [n0, n1).
func (l *bnLayer) taskRange(task int) (ch, k, n0, n1 int) {
	n, chunks := l.x.N(), l.chunks
	ch, k = task/chunks, task%chunks
	return ch, k, k * n / chunks, (k + 1) * n / chunks
}

// shiftOf is the mean of channel ch's plane in sample 0: close enough to the
// batch mean that (x-shift) neither cancels nor overflows the float32 lanes,
// and computed identically by every task of the channel.
func (l *bnLayer) shiftOf(ch int) float32 {
	return float32(sumPlane(l.x.Data[ch*l.hw:(ch+1)*l.hw]) / float64(l.hw))
}

// trainSums returns, for channel ch over samples [n0, n1), the sum of x-shift
// and of (x-shift)^2. One pass gives both, and the shift keeps E[d^2]-E[d]^2 from
// cancelling when the mean is large compared with the spread (x-shift is
// even exact while x is within a factor 2 of the shift).
func (l *bnLayer) trainSums(ch, n0, n1 int) (shift float32, s, q float64) {
	hw, stride := l.hw, l.c*l.hw
	x := l.x.Data
	shift = l.shiftOf(ch)
	for off := n0*stride + ch*hw; off < n1*stride; off += stride {
		a, b := sumsAbout(x[off:off+hw], shift)
		s += a
		q += b
	}
	return shift, s, q
}

// trainStats turns the channel's sums into the batch mean and 1/std; update
// says whether to also record them and move the running statistics (exactly
// one task per channel does).
func (l *bnLayer) trainStats(ch int, shift float32, s, q float64, update bool) (mean, invStd float64) {
	m := float64(l.x.N() * l.hw)
	d := s / m
	mean = float64(shift) + d
	biased := max(q/m-d*d, 0)
	invStd = 1 / math.Sqrt(biased+float64(l.a.Eps))
	if update {
		unbiased := biased
		if m > 1 { // PyTorch refuses m == 1 in training; keep the stats finite instead
			unbiased = biased * m / (m - 1)
		}
		mom := float64(l.a.Momentum)
		l.runMean.Data[ch] = float32((1-mom)*float64(l.runMean.Data[ch]) + mom*mean)
		l.runVar.Data[ch] = float32((1-mom)*float64(l.runVar.Data[ch]) + mom*unbiased)
		l.mean[ch], l.invStd[ch] = mean, invStd
	}
	return mean, invStd
}

func (l *bnLayer) evalStats(ch int, update bool) (mean, invStd float64) {
	mean = float64(l.runMean.Data[ch])
	invStd = 1 / math.Sqrt(float64(l.runVar.Data[ch])+float64(l.a.Eps))
	if update {
		l.mean[ch], l.invStd[ch] = mean, invStd
	}
	return mean, invStd
}

// normalize writes y = gamma*(x-mean)*invStd + beta for channel ch, samples [n0, n1).
func (l *bnLayer) normalize(ch, n0, n1 int, mean, invStd float64) {
	hw, stride := l.hw, l.c*l.hw
	x, y := l.x.Data, l.y.Data
	scale := float64(l.gamma.Data[ch]) * invStd
	shift := float64(l.beta.Data[ch]) - scale*mean
	sc, sh := float32(scale), float32(shift)
	for off := n0*stride + ch*hw; off < n1*stride; off += stride {
		ys, xs := y[off:off+hw], x[off:off+hw]
		ys = ys[:len(xs)]
		for i, v := range xs {
			ys[i] = v*sc + sh
		}
	}
}

// forwardFused handles a whole channel in one task: the statistics pass
// leaves the channel in cache for the normalising pass.
func (l *bnLayer) forwardFused(_, ch int) {
	n := l.x.N()
	var mean, invStd float64
	if l.train {
		shift, s, q := l.trainSums(ch, 0, n)
		mean, invStd = l.trainStats(ch, shift, s, q, true)
	} else {
		mean, invStd = l.evalStats(ch, true)
	}
	l.normalize(ch, 0, n, mean, invStd)
}

func (l *bnLayer) forwardStats(_, task int) {
	ch, _, n0, n1 := l.taskRange(task)
	_, s, q := l.trainSums(ch, n0, n1)
	l.partial[2*task], l.partial[2*task+1] = s, q
}

// forwardNormalize sums the channel's partial sums in chunk order (each task
// of the channel does the same sum, so all see the same statistics).
func (l *bnLayer) forwardNormalize(_, task int) {
	ch, k, n0, n1 := l.taskRange(task)
	var mean, invStd float64
	if l.train {
		var s, q float64
		for j := ch * l.chunks; j < (ch+1)*l.chunks; j++ {
			s += l.partial[2*j]
			q += l.partial[2*j+1]
		}
		shift := l.shiftOf(ch)
		mean, invStd = l.trainStats(ch, shift, s, q, k == 0)
	} else {
		mean, invStd = l.evalStats(ch, k == 0)
	}
	l.normalize(ch, n0, n1, mean, invStd)
}

// With xhat = (x-mean)*invStd and m elements per channel, dgamma =
// sum(dy*xhat), dbeta = sum(dy), and in training (statistics depend on x)
// dx = gamma*invStd*(dy - sum(dy)/m - xhat*sum(dy*xhat)/m); in evaluation
// dx = gamma*invStd*dy. One pass gives both sums, one more gives dx.

func (l *bnLayer) dySums(ch, n0, n1 int) (sdy, sdyx float64) {
	hw, stride := l.hw, l.c*l.hw
	x, dy := l.x.Data, l.y.Grad
	mean := float32(l.mean[ch])
	for off := n0*stride + ch*hw; off < n1*stride; off += stride {
		a, b := sumDyDev(dy[off:off+hw], x[off:off+hw], mean)
		sdy += a
		sdyx += b
	}
	return sdy, sdyx
}

// inputGrad adds channel ch's dx over samples [n0, n1); sdyx is sum(dy*(x-mean)).
func (l *bnLayer) inputGrad(ch, n0, n1 int, sdy, sdyx float64) {
	hw, stride := l.hw, l.c*l.hw
	x, dy, dxAll := l.x.Data, l.y.Grad, l.x.Grad
	mean, invStd := l.mean[ch], l.invStd[ch]
	k := float64(l.gamma.Data[ch]) * invStd
	var a, b float64 // dx = k*dy - k*a - k*b*xhat
	if l.train {
		m := float64(l.x.N() * hw)
		a, b = sdy/m, sdyx*invStd/m
	}
	// float32 coefficients: one multiply-add chain per element, with x-mean
	// formed first so a large mean does not cancel.
	kf, ka, kb, mf := float32(k), float32(k*a), float32(k*b*invStd), float32(mean)
	for off := n0*stride + ch*hw; off < n1*stride; off += stride {
		xs := x[off : off+hw]
		g, dx := dy[off:off+hw], dxAll[off:off+hw]
		g, dx = g[:len(xs)], dx[:len(xs)]
		if l.assignX {
			for i, v := range xs {
				dx[i] = kf*g[i] - ka - kb*(v-mf)
			}
			continue
		}
		for i, v := range xs {
			dx[i] += kf*g[i] - ka - kb*(v-mf)
		}
	}
}

func (l *bnLayer) paramGrads(ch int, sdy, sdyx float64) {
	l.gamma.Grad[ch] += float32(sdyx * l.invStd[ch])
	l.beta.Grad[ch] += float32(sdy)
}

func (l *bnLayer) backwardFused(_, ch int) {
	n := l.x.N()
	sdy, sdyx := l.dySums(ch, 0, n)
	l.paramGrads(ch, sdy, sdyx)
	if l.x.Grad != nil {
		l.inputGrad(ch, 0, n, sdy, sdyx)
	}
}

func (l *bnLayer) backwardSums(_, task int) {
	ch, _, n0, n1 := l.taskRange(task)
	l.partial[2*task], l.partial[2*task+1] = l.dySums(ch, n0, n1)
}

func (l *bnLayer) backwardDx(_, task int) {
	ch, k, n0, n1 := l.taskRange(task)
	var sdy, sdyx float64
	for j := ch * l.chunks; j < (ch+1)*l.chunks; j++ {
		sdy += l.partial[2*j]
		sdyx += l.partial[2*j+1]
	}
	if k == 0 {
		l.paramGrads(ch, sdy, sdyx)
	}
	if l.x.Grad != nil {
		l.inputGrad(ch, n0, n1, sdy, sdyx)
	}
}

// sumPlane, sumsAbout and sumDyDev reduce one plane (at most a few thousand
// elements) in four float32 lanes: independent accumulators hide the add
// latency that a single float64 chain would pay per element, and the planes
// are then summed in float64. The order is fixed, so results do not depend
// on scheduling.
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

// sumsAbout returns sum(s-shift) and sum((s-shift)^2). Index loops rather
// than re-slicing: the compiler keeps all eight accumulators in registers.
func sumsAbout(s []float32, shift float32) (float64, float64) {
	var a0, a1, a2, a3, q0, q1, q2, q3 float32
	i := 0
	for ; i+4 <= len(s); i += 4 {
		d0, d1, d2, d3 := s[i]-shift, s[i+1]-shift, s[i+2]-shift, s[i+3]-shift
		a0 += d0
		q0 += d0 * d0
		a1 += d1
		q1 += d1 * d1
		a2 += d2
		q2 += d2 * d2
		a3 += d3
		q3 += d3 * d3
	}
	for ; i < len(s); i++ {
		d := s[i] - shift
		a0 += d
		q0 += d * d
	}
	return float64(a0) + float64(a1) + float64(a2) + float64(a3),
		float64(q0) + float64(q1) + float64(q2) + float64(q3)
}

// sumDyDev returns sum(dy) and sum(dy*(x-mean)). Two lanes, not four: with
// eight accumulators the compiler runs out of registers and spills.
func sumDyDev(dy, x []float32, mean float32) (float64, float64) {
	var s0, s1, q0, q1 float32
	dy = dy[:len(x)]
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
	l.chunks = bnChunks(l.c, l.x.N())
	if l.chunks == 1 {
		l.pool.Run(l.c, l.fwdFused)
		return
	}
	if train {
		l.pool.Run(l.c*l.chunks, l.fwdStats)
	}
	l.pool.Run(l.c*l.chunks, l.fwdNormalize)
}

func (l *bnLayer) Backward() {
	if l.chunks == 1 {
		l.pool.Run(l.c, l.bwdFused)
		return
	}
	l.pool.Run(l.c*l.chunks, l.bwdSums)
	l.pool.Run(l.c*l.chunks, l.bwdDx)
}

func (l *bnLayer) Output() *Value { return l.y }

func (l *bnLayer) inputs() []*Value { return []*Value{l.x} }

func (l *bnLayer) setAssign(x *Value, on bool) bool {
	if x != l.x {
		return false
	}
	l.assignX = on
	return true
}

// MomentumSetter is a layer with running statistics whose update rate can
// be changed: BN recalibration (RecalibrateBN) averages the statistics of
// several batches exactly by setting momentum 1/(k+1) for batch k.
type MomentumSetter interface {
	Momentum() float32
	SetMomentum(m float32)
}

func (l *bnLayer) Momentum() float32     { return l.a.Momentum }
func (l *bnLayer) SetMomentum(m float32) { l.a.Momentum = m }

// RecalibrateBN replaces the running statistics of every batch-norm layer
// of net by their plain average over the batches next yields (forward
// passes in training mode; nothing else changes), then restores each
// layer's momentum. Weight-sharing supernets need this: their running
// statistics, averaged along a trajectory whose architecture weights keep
// moving, can be far from the statistics of the current network, and
// evaluation mode then gives logits tens of times too large. It returns
// the number of batches used.
func RecalibrateBN(net *Network, next func(x []float32) (n int, ok bool)) int {
	var bns []MomentumSetter
	for _, l := range net.Layers {
		if m, ok := l.(MomentumSetter); ok {
			bns = append(bns, m)
		}
	}
	saved := make([]float32, len(bns))
	for i, b := range bns {
		saved[i] = b.Momentum()
	}
	k := 0
	for {
		n, ok := next(net.Input.Data[:cap(net.Input.Data)])
		if !ok || n == 0 {
			break
		}
		net.SetBatch(n)
		net.Input.Commit() // next wrote host memory
		for _, b := range bns {
			b.SetMomentum(1 / float32(k+1))
		}
		net.Forward(true)
		k++
	}
	for i, b := range bns {
		b.SetMomentum(saved[i])
	}
	return k
}
