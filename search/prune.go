package search

import (
	"fmt"

	"bayesnas/models"
	"bayesnas/nn"
)

// pruner skips the layers that only feed frozen branches. Compile makes one
// layer per graph node, in order, so node i's layer is all[i] and its
// output is net.Values[i+1]. A wsum input whose weight is frozen at zero
// contributes exactly nothing, so the nodes reachable only through such
// inputs need not run; their outputs are zeroed once, so the wsum reads
// 0*0 and the network computes the same function as with every layer.
type pruner struct {
	g   *models.Graph
	net *nn.Network
	all []nn.Layer
}

func newPruner(g *models.Graph, net *nn.Network) *pruner {
	return &pruner{g: g, net: net, all: append([]nn.Layer(nil), net.Layers...)}
}

// apply sets net.Layers to the layers still needed given the frozen groups.
func (p *pruner) apply(s *Space) {
	frozen := map[string]bool{}
	for _, g := range s.Groups {
		if g.Frozen {
			for _, v := range g.Vars {
				frozen[v.P.Name] = true
			}
		}
	}
	index := make(map[string]int, len(p.g.Nodes))
	for i, n := range p.g.Nodes {
		index[n.Name] = i
	}
	needed := make([]bool, len(p.g.Nodes))
	needed[index[p.g.Output]] = true
	for i := len(p.g.Nodes) - 1; i >= 0; i-- {
		if !needed[i] {
			continue
		}
		n := p.g.Nodes[i]
		for j, in := range n.Inputs {
			if n.Op == models.OpWSum && frozen[fmt.Sprintf("%s.w%d", n.Name, j)] {
				continue
			}
			if k, ok := index[in]; ok {
				needed[k] = true
			}
		}
	}
	p.net.Layers = p.net.Layers[:0:0]
	for i, l := range p.all {
		if needed[i] {
			p.net.Layers = append(p.net.Layers, l)
			continue
		}
		v := p.net.Values[i+1]
		v.Zero()
	}
}
