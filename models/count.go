package models

import (
	"fmt"

	"bayesnas/nn"
)

// ParamSpec describes one parameter tensor of a graph.
type ParamSpec struct {
	Name  string
	Node  string
	Shape []int
	Kind  nn.ParamKind
}

// nodeParams lists a node's parameters given its input shapes; the order is
// the order the backend constructors take them in.
func nodeParams(n *Node, ins [][]int) []ParamSpec {
	p := func(slot string, kind nn.ParamKind, shape ...int) ParamSpec {
		return ParamSpec{Name: n.Name + "." + slot, Node: n.Name, Shape: shape, Kind: kind}
	}
	a := n.Attrs
	switch n.Op {
	case OpConv:
		ps := []ParamSpec{p("weight", nn.Weight, a.OutChannels, ins[0][0]/a.Groups, a.Kernel, a.Kernel)}
		if a.Bias {
			ps = append(ps, p("bias", nn.NoDecay, a.OutChannels))
		}
		return ps
	case OpBN:
		c := ins[0][0]
		return []ParamSpec{p("weight", nn.NoDecay, c), p("bias", nn.NoDecay, c),
			p("running_mean", nn.Buffer, c), p("running_var", nn.Buffer, c)}
	case OpLinear:
		in := 1
		for _, d := range ins[0] {
			in *= d
		}
		ps := []ParamSpec{p("weight", nn.Weight, a.OutChannels, in)}
		if a.Bias {
			ps = append(ps, p("bias", nn.NoDecay, a.OutChannels))
		}
		return ps
	case OpWSum:
		ps := make([]ParamSpec, len(ins))
		for i := range ins {
			ps[i] = p(fmt.Sprintf("w%d", i), nn.ArchVar, 1)
		}
		return ps
	}
	return nil
}

func inputShapes(n *Node, shapes map[string][]int) [][]int {
	ins := make([][]int, len(n.Inputs))
	for i, in := range n.Inputs {
		ins[i] = shapes[in]
	}
	return ins
}

// ParamSpecs validates the graph and lists every parameter in graph order.
func (g *Graph) ParamSpecs() ([]ParamSpec, error) {
	shapes, err := g.InferShapes()
	if err != nil {
		return nil, err
	}
	// Names are unique without a check: slots contain no dot, so the text
	// before a name's last dot is its node, and node names are unique.
	var specs []ParamSpec
	for _, n := range g.Nodes {
		specs = append(specs, nodeParams(n, inputShapes(n, shapes))...)
	}
	return specs, nil
}

// Counts summarises a graph's size and per-sample work.
//
// Params counts trained tensors (conv and linear weights and biases, BN
// scale and shift); Buffers counts BN running statistics; ArchVars counts the
// wsum architecture weights. MACs counts multiply-accumulates of conv and
// linear per sample, out_channels*H_out*W_out*(in_channels/groups)*k*k and
// in*out respectively; bias additions, BN, pooling, activations and
// elementwise ops are not counted, as is usual when reporting MACs/FLOPs of
// CNNs (they are a few percent of the total).
type Counts struct {
	Params   int64
	Buffers  int64
	ArchVars int64
	MACs     int64
	Nodes    []NodeCount // one per node, in graph order
}

// NodeCount is one node's share of Counts.
type NodeCount struct {
	Name, Op                        string
	Params, Buffers, ArchVars, MACs int64
}

// Count validates the graph and counts its parameters and multiply-adds.
func (g *Graph) Count() (Counts, error) {
	shapes, err := g.InferShapes()
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, n := range g.Nodes {
		ins := inputShapes(n, shapes)
		nc := NodeCount{Name: n.Name, Op: n.Op}
		for _, s := range nodeParams(n, ins) {
			size := int64(1)
			for _, d := range s.Shape {
				size *= int64(d)
			}
			switch s.Kind {
			case nn.Buffer:
				nc.Buffers += size
			case nn.ArchVar:
				nc.ArchVars += size
			default:
				nc.Params += size
			}
		}
		out := shapes[n.Name]
		switch n.Op {
		case OpConv:
			a := n.Attrs
			nc.MACs = int64(out[0]) * int64(out[1]) * int64(out[2]) * int64(ins[0][0]/a.Groups) * int64(a.Kernel*a.Kernel)
		case OpLinear:
			in := int64(1)
			for _, d := range ins[0] {
				in *= int64(d)
			}
			nc.MACs = in * int64(n.Attrs.OutChannels)
		}
		c.Params += nc.Params
		c.Buffers += nc.Buffers
		c.ArchVars += nc.ArchVars
		c.MACs += nc.MACs
		c.Nodes = append(c.Nodes, nc)
	}
	return c, nil
}
