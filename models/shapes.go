package models

import (
	"fmt"
	"slices"

	"bayesnas/nn"
)

// InferShapes validates the graph and returns the per-sample output shape of
// the input and of every node: (C,H,W) for feature maps, (C,1,1) after gap,
// (Out) after linear. The batch dimension is not part of the IR.
func (g *Graph) InferShapes() (map[string][]int, error) {
	if g.Format != Format {
		return nil, fmt.Errorf("graph %q: format %q, want %q", g.Name, g.Format, Format)
	}
	if g.Input.Name == "" {
		return nil, fmt.Errorf("graph %q: input has no name", g.Name)
	}
	if len(g.Input.Shape) != 3 {
		return nil, fmt.Errorf("graph %q: input %q: shape %v, want 3 dimensions (C,H,W)", g.Name, g.Input.Name, g.Input.Shape)
	}
	for _, d := range g.Input.Shape {
		if d < 1 {
			return nil, fmt.Errorf("graph %q: input %q: shape %v has a dimension < 1", g.Name, g.Input.Name, g.Input.Shape)
		}
	}
	shapes := map[string][]int{g.Input.Name: append([]int(nil), g.Input.Shape...)}
	for i, n := range g.Nodes {
		if n == nil {
			return nil, fmt.Errorf("graph %q: node %d is null", g.Name, i)
		}
		if n.Name == "" {
			return nil, fmt.Errorf("graph %q: node %d (%s) has no name", g.Name, i, n.Op)
		}
		if _, dup := shapes[n.Name]; dup {
			return nil, nodeErr(n, "duplicate name (an earlier node or the input has it)")
		}
		ins := make([][]int, len(n.Inputs))
		for j, in := range n.Inputs {
			s, ok := shapes[in]
			if !ok {
				if g.Node(in) != nil {
					return nil, nodeErr(n, "input %q comes later in the node list (nodes must be in topological order)", in)
				}
				return nil, nodeErr(n, "unknown input %q", in)
			}
			ins[j] = s
		}
		out, err := inferNode(n, ins)
		if err != nil {
			return nil, &NodeError{Node: n.Name, Op: n.Op, Err: err}
		}
		shapes[n.Name] = out
	}
	if g.Output == "" {
		return nil, fmt.Errorf("graph %q: no output named", g.Name)
	}
	if g.Node(g.Output) == nil {
		return nil, fmt.Errorf("graph %q: output %q is not a node", g.Name, g.Output)
	}
	return shapes, nil
}

// wantInputs checks the input count: exactly min when max == min, at least
// min when max < 0.
func wantInputs(ins [][]int, min, max int) error {
	switch {
	case max == min && len(ins) != min:
		return fmt.Errorf("has %d inputs, want %d", len(ins), min)
	case len(ins) < min:
		return fmt.Errorf("has %d inputs, want at least %d", len(ins), min)
	case max >= 0 && len(ins) > max:
		return fmt.Errorf("has %d inputs, want at most %d", len(ins), max)
	}
	return nil
}

func wantMap(s []int) error {
	if len(s) != 3 {
		return fmt.Errorf("input shape %v is not a (C,H,W) feature map", s)
	}
	return nil
}

func atLeast(field string, v, min int) error {
	if v < min {
		return fmt.Errorf("attribute %s = %d, want >= %d", field, v, min)
	}
	return nil
}

// windowOut is the spatial size of a conv or pooling window, or an error when
// the window does not fit.
func windowOut(in, kernel, stride, pad, dilation int) (int, error) {
	span := dilation*(kernel-1) + 1
	if in+2*pad < span {
		return 0, fmt.Errorf("window %d (kernel %d, dilation %d) larger than padded input %d", span, kernel, dilation, in+2*pad)
	}
	return (in+2*pad-span)/stride + 1, nil
}

// inferNode checks one node's inputs and attributes and returns its output
// shape. Errors here are wrapped with the node's name by the caller.
func inferNode(n *Node, ins [][]int) ([]int, error) {
	a := n.Attrs
	switch n.Op {
	case OpConv:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := wantMap(ins[0]); err != nil {
			return nil, err
		}
		err := firstErr(atLeast("out_channels", a.OutChannels, 1), atLeast("kernel", a.Kernel, 1),
			atLeast("stride", a.Stride, 1), atLeast("pad", a.Pad, 0),
			atLeast("dilation", a.Dilation, 1), atLeast("groups", a.Groups, 1))
		if err != nil {
			return nil, err
		}
		c := ins[0][0]
		if c%a.Groups != 0 || a.OutChannels%a.Groups != 0 {
			return nil, fmt.Errorf("groups %d must divide input channels %d and out_channels %d", a.Groups, c, a.OutChannels)
		}
		h, err := windowOut(ins[0][1], a.Kernel, a.Stride, a.Pad, a.Dilation)
		if err != nil {
			return nil, err
		}
		w, err := windowOut(ins[0][2], a.Kernel, a.Stride, a.Pad, a.Dilation)
		if err != nil {
			return nil, err
		}
		return []int{a.OutChannels, h, w}, nil

	case OpBN:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := wantMap(ins[0]); err != nil {
			return nil, err
		}
		if !(a.Eps > 0) {
			return nil, fmt.Errorf("attribute eps = %g, want > 0", a.Eps)
		}
		if !(a.Momentum > 0 && a.Momentum <= 1) {
			return nil, fmt.Errorf("attribute momentum = %g, want in (0, 1]", a.Momentum)
		}
		return append([]int(nil), ins[0]...), nil

	case OpReLU, OpDropout, OpDropPath:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if n.Op != OpReLU && !(a.P >= 0 && a.P < 1) {
			return nil, fmt.Errorf("attribute p = %g, want in [0, 1)", a.P)
		}
		return append([]int(nil), ins[0]...), nil

	case OpMaxPool, OpAvgPool:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := wantMap(ins[0]); err != nil {
			return nil, err
		}
		err := firstErr(atLeast("kernel", a.Kernel, 1), atLeast("stride", a.Stride, 1), atLeast("pad", a.Pad, 0))
		if err != nil {
			return nil, err
		}
		// PyTorch and ONNX Runtime reject windows that could lie wholly in the
		// padding; refusing them here keeps every graph exportable.
		if 2*a.Pad > a.Kernel {
			return nil, fmt.Errorf("pad %d more than half of kernel %d", a.Pad, a.Kernel)
		}
		if n.Op == OpMaxPool && a.CountIncludePad {
			return nil, fmt.Errorf("count_include_pad applies to avgpool only")
		}
		if a.CeilMode && a.CountIncludePad {
			return nil, fmt.Errorf("ceil_mode with count_include_pad is not supported")
		}
		h, err := windowOut(ins[0][1], a.Kernel, a.Stride, a.Pad, 1)
		if err != nil {
			return nil, err
		}
		w, err := windowOut(ins[0][2], a.Kernel, a.Stride, a.Pad, 1)
		if err != nil {
			return nil, err
		}
		if a.CeilMode {
			h = nn.PoolOutSize(ins[0][1], a.Kernel, a.Stride, a.Pad, true)
			w = nn.PoolOutSize(ins[0][2], a.Kernel, a.Stride, a.Pad, true)
		}
		return []int{ins[0][0], h, w}, nil

	case OpGAP:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := wantMap(ins[0]); err != nil {
			return nil, err
		}
		return []int{ins[0][0], 1, 1}, nil

	case OpLinear:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := atLeast("out_channels", a.OutChannels, 1); err != nil {
			return nil, err
		}
		return []int{a.OutChannels}, nil

	case OpAdd, OpWSum:
		min := 2
		if n.Op == OpWSum {
			min = 1 // an edge with a single candidate op still carries its weight
		}
		if err := wantInputs(ins, min, -1); err != nil {
			return nil, err
		}
		for j, s := range ins[1:] {
			if !slices.Equal(s, ins[0]) {
				return nil, fmt.Errorf("input %d (%q) has shape %v, input 0 (%q) has %v", j+1, n.Inputs[j+1], s, n.Inputs[0], ins[0])
			}
		}
		return append([]int(nil), ins[0]...), nil

	case OpConcat:
		if err := wantInputs(ins, 2, -1); err != nil {
			return nil, err
		}
		c := 0
		for j, s := range ins {
			if err := wantMap(s); err != nil {
				return nil, fmt.Errorf("input %d (%q): %w", j, n.Inputs[j], err)
			}
			if s[1] != ins[0][1] || s[2] != ins[0][2] {
				return nil, fmt.Errorf("input %d (%q) is %dx%d, input 0 (%q) is %dx%d", j, n.Inputs[j], s[1], s[2], n.Inputs[0], ins[0][1], ins[0][2])
			}
			c += s[0]
		}
		return []int{c, ins[0][1], ins[0][2]}, nil

	case OpSlice:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := wantMap(ins[0]); err != nil {
			return nil, err
		}
		if a.Start < 0 || a.End <= a.Start || a.End > ins[0][0] {
			return nil, fmt.Errorf("channel range [start %d, end %d) out of range for %d channels", a.Start, a.End, ins[0][0])
		}
		return []int{a.End - a.Start, ins[0][1], ins[0][2]}, nil

	case OpPadCh:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := wantMap(ins[0]); err != nil {
			return nil, err
		}
		if a.OutChannels < ins[0][0] {
			return nil, fmt.Errorf("attribute out_channels = %d, fewer than the %d input channels", a.OutChannels, ins[0][0])
		}
		return []int{a.OutChannels, ins[0][1], ins[0][2]}, nil

	case OpShuffle:
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		if err := wantMap(ins[0]); err != nil {
			return nil, err
		}
		if err := atLeast("groups", a.Groups, 1); err != nil {
			return nil, err
		}
		if ins[0][0]%a.Groups != 0 {
			return nil, fmt.Errorf("groups %d must divide input channels %d", a.Groups, ins[0][0])
		}
		return append([]int(nil), ins[0]...), nil

	case "":
		return nil, fmt.Errorf("no op")
	default:
		return nil, fmt.Errorf("unknown op %q", n.Op)
	}
}

// firstErr reports one attribute problem at a time, the first in field order.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
