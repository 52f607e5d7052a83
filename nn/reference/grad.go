package reference

import "bayesnas/nn"

// Every reference layer is an nn.GradLayer: the network may leave clearing
// an input's gradient to the backward pass, just before the layer that
// first adds into it, as it does on the CPU backend. No layer here offers
// to overwrite instead of adding (SetGradAssign reports false): the network
// then clears the gradient itself, and the loops stay the definition's.
// Implementing the exported interface from this package also proves that a
// backend outside package nn can.

func (l *conv) GradInputs() []*nn.Value          { return []*nn.Value{l.x} }
func (l *batchNorm) GradInputs() []*nn.Value     { return []*nn.Value{l.x} }
func (l *pool) GradInputs() []*nn.Value          { return []*nn.Value{l.x} }
func (l *globalAvgPool) GradInputs() []*nn.Value { return []*nn.Value{l.x} }
func (l *relu) GradInputs() []*nn.Value          { return []*nn.Value{l.x} }
func (l *linear) GradInputs() []*nn.Value        { return []*nn.Value{l.x} }
func (l add) GradInputs() []*nn.Value            { return l.s.xs }
func (l *sum) GradInputs() []*nn.Value           { return l.xs }
func (l *channelMap) GradInputs() []*nn.Value    { return l.xs }
func (l *stochastic) GradInputs() []*nn.Value    { return []*nn.Value{l.x} }

func (*conv) SetGradAssign(*nn.Value, bool) bool          { return false }
func (*batchNorm) SetGradAssign(*nn.Value, bool) bool     { return false }
func (*pool) SetGradAssign(*nn.Value, bool) bool          { return false }
func (*globalAvgPool) SetGradAssign(*nn.Value, bool) bool { return false }
func (*relu) SetGradAssign(*nn.Value, bool) bool          { return false }
func (*linear) SetGradAssign(*nn.Value, bool) bool        { return false }
func (add) SetGradAssign(*nn.Value, bool) bool            { return false }
func (*sum) SetGradAssign(*nn.Value, bool) bool           { return false }
func (*channelMap) SetGradAssign(*nn.Value, bool) bool    { return false }
func (*stochastic) SetGradAssign(*nn.Value, bool) bool    { return false }

var (
	_ nn.GradLayer = (*conv)(nil)
	_ nn.GradLayer = (*batchNorm)(nil)
	_ nn.GradLayer = (*pool)(nil)
	_ nn.GradLayer = (*globalAvgPool)(nil)
	_ nn.GradLayer = (*relu)(nil)
	_ nn.GradLayer = (*linear)(nil)
	_ nn.GradLayer = add{}
	_ nn.GradLayer = (*sum)(nil)
	_ nn.GradLayer = (*channelMap)(nil)
	_ nn.GradLayer = (*stochastic)(nil)
)
