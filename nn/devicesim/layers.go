package devicesim

import "bayesnas/nn"

// The layers' optional interfaces, each on its own type so that an
// assertion tells a layer kind as it does on the CPU backend (an add must
// not answer as a weighted sum). Every call that reads tensors stages them
// as Forward does.

// bnLayer is a batch norm (alone or fused): RecalibrateBN's momentum and
// the per-sample scale gradients.
type bnLayer struct{ *layer }

func (l bnLayer) Momentum() float32     { return l.inner.(nn.MomentumSetter).Momentum() }
func (l bnLayer) SetMomentum(m float32) { l.inner.(nn.MomentumSetter).SetMomentum(m) }

func (l bnLayer) PerSampleScaleGrads(g []float64) (gamma *nn.Param, ok bool, err error) {
	l.run(func() { gamma, ok, err = nn.PerSampleScaleGrads(l.inner, g) })
	return gamma, ok, err
}
func (l bnLayer) IsChannelScale() bool { return false }

// convLayer is a convolution, which is a channel scale when it is a 1x1
// depthwise one without bias.
type convLayer struct{ *layer }

func (l convLayer) PerSampleScaleGrads(g []float64) (gamma *nn.Param, ok bool, err error) {
	l.run(func() { gamma, ok, err = nn.PerSampleScaleGrads(l.inner, g) })
	return gamma, ok, err
}
func (l convLayer) IsChannelScale() bool { return nn.IsChannelScale(l.inner) }

// wsumLayer is a weighted sum. Its per-sample gradients are the CPU
// layer's buffer, filled by the last Backward: results a device backend
// would have copied out then.
type wsumLayer struct{ *layer }

func (l wsumLayer) PerSampleWeightGrads() ([]*nn.Param, []float64) {
	w, g, _ := nn.PerSampleWeightGrads(l.inner)
	return w, g
}

// stochLayer is dropout or drop-path: the mask counter.
type stochLayer struct{ *layer }

func (l stochLayer) Step() uint64        { return l.inner.(nn.Stochastic).Step() }
func (l stochLayer) SetStep(step uint64) { l.inner.(nn.Stochastic).SetStep(step) }
func (l stochLayer) Freeze(frozen bool)  { l.inner.(nn.Stochastic).Freeze(frozen) }

// build checks that the tensors are this backend's, runs the CPU
// constructor and wraps its layer.
func build(ctor func() (nn.Layer, error), ins []*nn.Value, ps ...*nn.Param) (*layer, error) {
	if err := checkOwned(ins, ps...); err != nil {
		return nil, err
	}
	inner, err := ctor()
	return wrap(inner, err, ins, ps...)
}

// plain is build for a layer with no optional interface.
func plain(ctor func() (nn.Layer, error), ins []*nn.Value, ps ...*nn.Param) (nn.Layer, error) {
	l, err := build(ctor, ins, ps...)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func one(x *nn.Value) []*nn.Value { return []*nn.Value{x} }

func (b *Backend) Conv2D(x *nn.Value, w, bias *nn.Param, a nn.ConvAttrs) (nn.Layer, error) {
	l, err := build(func() (nn.Layer, error) { return b.cpu.Conv2D(x, w, bias, a) }, one(x), w, bias)
	if err != nil {
		return nil, err
	}
	return convLayer{l}, nil
}

func (b *Backend) BatchNorm(x *nn.Value, gamma, beta, runMean, runVar *nn.Param, a nn.BNAttrs) (nn.Layer, error) {
	l, err := build(func() (nn.Layer, error) { return b.cpu.BatchNorm(x, gamma, beta, runMean, runVar, a) },
		one(x), gamma, beta, runMean, runVar)
	if err != nil {
		return nil, err
	}
	return bnLayer{l}, nil
}

// BatchNormReLU is the CPU's fused layer (nn.BNFuser), so models compiles
// the same fused networks on this backend.
func (b *Backend) BatchNormReLU(x *nn.Value, gamma, beta, runMean, runVar *nn.Param, a nn.BNAttrs) (nn.Layer, error) {
	l, err := build(func() (nn.Layer, error) { return b.cpu.BatchNormReLU(x, gamma, beta, runMean, runVar, a) },
		one(x), gamma, beta, runMean, runVar)
	if err != nil {
		return nil, err
	}
	return bnLayer{l}, nil
}

func (b *Backend) BatchNormAdd(x, other *nn.Value, gamma, beta, runMean, runVar *nn.Param, a nn.BNAttrs) (nn.Layer, error) {
	l, err := build(func() (nn.Layer, error) { return b.cpu.BatchNormAdd(x, other, gamma, beta, runMean, runVar, a) },
		[]*nn.Value{x, other}, gamma, beta, runMean, runVar)
	if err != nil {
		return nil, err
	}
	return bnLayer{l}, nil
}

func (b *Backend) ReLU(x *nn.Value) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.ReLU(x) }, one(x))
}

func (b *Backend) MaxPool(x *nn.Value, a nn.PoolAttrs) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.MaxPool(x, a) }, one(x))
}

func (b *Backend) AvgPool(x *nn.Value, a nn.PoolAttrs) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.AvgPool(x, a) }, one(x))
}

func (b *Backend) GlobalAvgPool(x *nn.Value) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.GlobalAvgPool(x) }, one(x))
}

func (b *Backend) Linear(x *nn.Value, w, bias *nn.Param) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.Linear(x, w, bias) }, one(x), w, bias)
}

func (b *Backend) Add(xs []*nn.Value) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.Add(xs) }, xs)
}

func (b *Backend) WeightedSum(xs []*nn.Value, w []*nn.Param) (nn.Layer, error) {
	l, err := build(func() (nn.Layer, error) { return b.cpu.WeightedSum(xs, w) }, xs, w...)
	if err != nil {
		return nil, err
	}
	return wsumLayer{l}, nil
}

func (b *Backend) Concat(xs []*nn.Value) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.Concat(xs) }, xs)
}

func (b *Backend) SliceChannels(x *nn.Value, start, end int) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.SliceChannels(x, start, end) }, one(x))
}

func (b *Backend) PadChannels(x *nn.Value, outC int) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.PadChannels(x, outC) }, one(x))
}

func (b *Backend) ChannelShuffle(x *nn.Value, groups int) (nn.Layer, error) {
	return plain(func() (nn.Layer, error) { return b.cpu.ChannelShuffle(x, groups) }, one(x))
}

func (b *Backend) Dropout(x *nn.Value, p float32, seed uint64) (nn.Layer, error) {
	l, err := build(func() (nn.Layer, error) { return b.cpu.Dropout(x, p, seed) }, one(x))
	if err != nil {
		return nil, err
	}
	return stochLayer{l}, nil
}

func (b *Backend) DropPath(x *nn.Value, p float32, seed uint64) (nn.Layer, error) {
	l, err := build(func() (nn.Layer, error) { return b.cpu.DropPath(x, p, seed) }, one(x))
	if err != nil {
		return nil, err
	}
	return stochLayer{l}, nil
}

var (
	_ nn.Backend           = (*Backend)(nil)
	_ nn.BNFuser           = (*Backend)(nil)
	_ nn.GradLayer         = (*layer)(nil)
	_ nn.MomentumSetter    = bnLayer{}
	_ nn.PerSampleScaler   = bnLayer{}
	_ nn.PerSampleScaler   = convLayer{}
	_ nn.PerSampleWeighter = wsumLayer{}
	_ nn.Stochastic        = stochLayer{}
)
