package models

import "bayesnas/nn"

// bnFusion says which batch norms compile into the layer of the one node
// that reads their output, on a backend that can fuse (nn.BNFuser): a ReLU
// (BN+ReLU: every bottleneck's bn2 and bn3 and PyramidNet's head, every
// tree-cell edge), or a two-input add (BN+Add: the residual join after
// each bottleneck's bn4). Fusion is the engine's business: the graph, its
// export and its parameters are unchanged, and the fused layers give the
// same floats as the separate ones (nn tests that). The network keeps one
// layer per node: the batch norm's place holds nn.Skipped, whose value
// (allocated without a gradient) is never written, and the reader's place
// holds the fused layer.
type bnFusion struct {
	fuser nn.BNFuser
	into  map[string]*Node // batch norm node name -> its reader
	// pending holds, by reader name, the operands of the batch norm that
	// the reader's layer will include.
	pending map[string]pendingBN
}

type pendingBN struct {
	bn *Node
	x  *nn.Value
	ps []*nn.Param
}

// planBNFusion finds the fusable pairs of g: a batch norm that is not the
// graph's output and whose output is read exactly once, by a ReLU, or by an
// add of two inputs whose other input is not the batch norm's own input
// (its gradient would have two writers in one layer) and not another fused
// batch norm (whose value would never be written).
func planBNFusion(g *Graph, be nn.Backend) *bnFusion {
	f := &bnFusion{into: map[string]*Node{}, pending: map[string]pendingBN{}}
	fuser, ok := be.(nn.BNFuser)
	if !ok {
		return f
	}
	f.fuser = fuser
	reads := map[string]int{}
	reader := map[string]*Node{}
	claimed := map[*Node]bool{}
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			reads[in]++
			reader[in] = n
		}
	}
	for _, n := range g.Nodes {
		if n.Op != OpBN || n.Name == g.Output || reads[n.Name] != 1 {
			continue
		}
		r := reader[n.Name]
		if claimed[r] {
			// An add of two batch norms includes the first; the second
			// runs on its own and its output is the fused layer's addend.
			continue
		}
		switch {
		case r.Op == OpReLU:
		case r.Op == OpAdd && len(r.Inputs) == 2 && otherInput(r, n.Name) != n.Inputs[0]:
		default:
			continue
		}
		f.into[n.Name] = r
		claimed[r] = true
	}
	return f
}

// otherInput is the input of a two-input node that is not name.
func otherInput(n *Node, name string) string {
	if n.Inputs[0] == name {
		return n.Inputs[1]
	}
	return n.Inputs[0]
}

// build makes node n's layer: nn.Skipped for a batch norm that a later
// layer includes, the fused layer for that batch norm's reader, otherwise
// the node's own layer (buildLayer).
func (f *bnFusion) build(be nn.Backend, n *Node, xs []*nn.Value, ps []*nn.Param) (nn.Layer, error) {
	if r := f.into[n.Name]; r != nil {
		f.pending[r.Name] = pendingBN{bn: n, x: xs[0], ps: ps}
		return nn.Skipped(be.NewValue(n.Name, xs[0].Shape, false)), nil
	}
	p, ok := f.pending[n.Name]
	if !ok {
		return buildLayer(be, n, xs, ps)
	}
	a := nn.BNAttrs{Eps: float32(p.bn.Attrs.Eps), Momentum: float32(p.bn.Attrs.Momentum)}
	if n.Op == OpReLU {
		return f.fuser.BatchNormReLU(p.x, p.ps[0], p.ps[1], p.ps[2], p.ps[3], a)
	}
	other := xs[0]
	if n.Inputs[0] == p.bn.Name {
		other = xs[1]
	}
	return f.fuser.BatchNormAdd(p.x, other, p.ps[0], p.ps[1], p.ps[2], p.ps[3], a)
}
