package nn

import (
	"fmt"
	"math"

	"bayesnas/internal/bnplane"
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
	chunks  int
	assignX bool // the next Backward overwrites x.Grad (see gradLayer)
	partial []float64
	// A fused layer (bnfuse.go) also applies the one layer that reads the
	// normalised values: y = relu(bn(x)) when relu, y = bn(x) + add when
	// add is not nil.
	relu                   bool
	add                    *Value
	assignAdd              bool // the next Backward overwrites add.Grad
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
	l, err := c.newBN(x, gamma, beta, runMean, runVar, a)
	if err != nil {
		return nil, err
	}
	l.y = c.NewValue("batchnorm("+x.Name+")", x.Shape, true)
	return l, nil
}

// newBN checks a batch norm's operands and builds the layer, all but its
// output value.
func (c *CPU) newBN(x *Value, gamma, beta, runMean, runVar *Param, a BNAttrs) (*bnLayer, error) {
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

// grid is channel ch's planes of samples [n0, n1) and the offset of the
// first: the layout every bnplane kernel takes.
func (l *bnLayer) grid(ch, n0, n1 int) (off int, g bnplane.Grid) {
	stride := l.c * l.hw
	return n0*stride + ch*l.hw, bnplane.Grid{Rows: n1 - n0, Width: l.hw, Stride: stride}
}

// shiftOf is the mean of channel ch's plane in sample 0: close enough to the
// batch mean that (x-shift) neither cancels nor overflows the float32 lanes,
// and computed identically by every task of the channel.
func (l *bnLayer) shiftOf(ch int) float32 {
	off, g := l.grid(ch, 0, 1)
	s, _ := bnplane.SumsAbout(l.x.Data[off:], g, 0)
	return float32(s / float64(l.hw))
}

// trainSums returns, for channel ch over samples [n0, n1), the sum of x-shift
// and of (x-shift)^2. One pass gives both, and the shift keeps E[d^2]-E[d]^2 from
// cancelling when the mean is large compared with the spread (x-shift is
// even exact while x is within a factor 2 of the shift).
func (l *bnLayer) trainSums(ch, n0, n1 int) (shift float32, s, q float64) {
	shift = l.shiftOf(ch)
	off, g := l.grid(ch, n0, n1)
	s, q = bnplane.SumsAbout(l.x.Data[off:], g, shift)
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

// normalize writes y = gamma*(x-mean)*invStd + beta for channel ch,
// samples [n0, n1), plus add and through the ReLU in a fused layer.
func (l *bnLayer) normalize(ch, n0, n1 int, mean, invStd float64) {
	scale := float64(l.gamma.Data[ch]) * invStd
	shift := float64(l.beta.Data[ch]) - scale*mean
	off, g := l.grid(ch, n0, n1)
	var add []float32
	if l.add != nil {
		add = l.add.Data[off:]
	}
	bnplane.Affine(l.y.Data[off:], l.x.Data[off:], add, g, float32(scale), float32(shift), l.relu)
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

// In a fused layer with the ReLU, dy is the gradient of the ReLU's output,
// and the batch norm's own is dy where y > 0 (the mask that the ReLU layer's
// backward applies).

// mask is the output to mask the gradient with from offset off, or nil.
func (l *bnLayer) mask(off int) []float32 {
	if !l.relu {
		return nil
	}
	return l.y.Data[off:]
}

func (l *bnLayer) dySums(ch, n0, n1 int) (sdy, sdyx float64) {
	off, g := l.grid(ch, n0, n1)
	return bnplane.DySums(l.y.Grad[off:], l.mask(off), l.x.Data[off:], g, float32(l.mean[ch]))
}

// inputGrad adds channel ch's dx over samples [n0, n1); sdyx is sum(dy*(x-mean)).
func (l *bnLayer) inputGrad(ch, n0, n1 int, sdy, sdyx float64) {
	mean, invStd := l.mean[ch], l.invStd[ch]
	k := float64(l.gamma.Data[ch]) * invStd
	var a, b float64 // dx = k*dy - k*a - k*b*xhat
	if l.train {
		m := float64(l.x.N() * l.hw)
		a, b = sdy/m, sdyx*invStd/m
	}
	// float32 coefficients: one multiply-add chain per element, with x-mean
	// formed first so a large mean does not cancel.
	off, g := l.grid(ch, n0, n1)
	bnplane.InputGrad(l.x.Grad[off:], l.y.Grad[off:], l.mask(off), l.x.Data[off:], g,
		float32(k), float32(k*a), float32(k*b*invStd), float32(mean), l.assignX)
}

// addGrad passes the output gradient of channel ch, samples [n0, n1), to
// the residual input of a fused batch norm and add.
func (l *bnLayer) addGrad(ch, n0, n1 int) {
	if l.add == nil || l.add.Grad == nil {
		return
	}
	off, g := l.grid(ch, n0, n1)
	bnplane.AddTo(l.add.Grad[off:], l.y.Grad[off:], g, l.assignAdd)
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
	l.addGrad(ch, 0, n)
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
	l.addGrad(ch, n0, n1)
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

func (l *bnLayer) inputs() []*Value {
	if l.add != nil {
		return []*Value{l.x, l.add}
	}
	return []*Value{l.x}
}

func (l *bnLayer) setAssign(x *Value, on bool) bool {
	switch x {
	case l.x:
		l.assignX = on
	case l.add:
		l.assignAdd = on
	default:
		return false
	}
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
