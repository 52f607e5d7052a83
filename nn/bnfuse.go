package nn

import (
	"fmt"
	"slices"
)

// BNFuser is a backend that can run a batch norm together with the one
// layer that reads its output, saving that layer's pass over memory in
// both directions and the batch norm output's store and load. It is
// optional: models.Compile fuses only on backends that implement it, and
// gives the same results either way.
type BNFuser interface {
	// BatchNormReLU is relu(BatchNorm(x)) in one layer; its output is the
	// ReLU's.
	BatchNormReLU(x *Value, gamma, beta, runMean, runVar *Param, a BNAttrs) (Layer, error)
	// BatchNormAdd is BatchNorm(x) + other in one layer (a residual join
	// of two inputs); its output is the sum's.
	BatchNormAdd(x, other *Value, gamma, beta, runMean, runVar *Param, a BNAttrs) (Layer, error)
}

// BatchNormReLU gives, float for float, what BatchNorm followed by ReLU
// gives: the same kernels compute the normalised values, the ReLU is
// applied to them in registers (bnplane.Affine matches max(v, 0) bit for
// bit), and the backward masks the gradient by the output as the ReLU
// layer does before the same sums.
func (c *CPU) BatchNormReLU(x *Value, gamma, beta, runMean, runVar *Param, a BNAttrs) (Layer, error) {
	l, err := c.newBN(x, gamma, beta, runMean, runVar, a)
	if err != nil {
		return nil, err
	}
	l.relu = true
	l.y = c.NewValue("relu(batchnorm("+x.Name+"))", x.Shape, true)
	return l, nil
}

// BatchNormAdd gives, float for float, what BatchNorm followed by a
// two-input Add gives: each output is the normalised value rounded, then
// the sum rounded, as the separate layers store them, and both inputs
// receive the sum's gradient unchanged.
func (c *CPU) BatchNormAdd(x, other *Value, gamma, beta, runMean, runVar *Param, a BNAttrs) (Layer, error) {
	if err := checkShape("batchnorm+add", other, false); err != nil {
		return nil, err
	}
	if x == other {
		// x's gradient would get two writers inside one layer, which the
		// deferred clearing (setAssign) cannot tell apart.
		return nil, fmt.Errorf("batchnorm+add: %s is both the batch norm's input and the other addend", x.Name)
	}
	l, err := c.newBN(x, gamma, beta, runMean, runVar, a)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(other.Shape, x.Shape) {
		return nil, fmt.Errorf("batchnorm+add: addend %s has shape %v, batch norm input %s has %v; they must match", other.Name, other.Shape, x.Name, x.Shape)
	}
	l.add = other
	l.y = c.NewValue("add(batchnorm("+x.Name+"),"+other.Name+")", x.Shape, true)
	return l, nil
}

var _ BNFuser = (*CPU)(nil)

// skippedLayer stands at the place of a node whose work a later layer does
// (the batch norm of a fused pair): it computes nothing, so its output
// value is never written and no layer reads it.
type skippedLayer struct{ y *Value }

// Skipped returns a layer that does nothing and whose output is y: it
// keeps a compiled network's one-layer-per-node layout (node i's layer at
// index i) when a backend fuses node i into a later node's layer.
func Skipped(y *Value) Layer { return skippedLayer{y} }

func (skippedLayer) Forward(bool)                {}
func (skippedLayer) Backward()                   {}
func (l skippedLayer) Output() *Value            { return l.y }
func (skippedLayer) inputs() []*Value            { return nil }
func (skippedLayer) setAssign(*Value, bool) bool { return false }

var _ gradLayer = skippedLayer{}
