package compress

import (
	"fmt"
	"strings"

	"bayesnas/models"
	"bayesnas/nn"
)

// gateSuffix names the channel scale withGates puts after a conv.
const gateSuffix = ".gate"

// withGates returns a copy of g in which every conv producing channels of
// a prunable group (ls) that no batch norm alone reads is followed by a
// channel scale, a 1x1 depthwise conv named <conv>.gate that its readers
// read instead, so that every prunable group can have gates (Gates). In a
// tree cell the root conv feeds a shuffle and the separable convs' last
// 1x1 feeds a sum: without these, 62 of the bundled tree network's groups
// had no gate, the pace could only switch off the others, and to reach
// the budget it switched off nearly all of them (train accuracy 0.75 to
// 0.22). A gate at 1 leaves the network's function unchanged; foldGates
// multiplies it into its conv.
func withGates(g *models.Graph, groups []Group, ls []*layer) (*models.Graph, []string) {
	readers := readersOf(g)
	gate := map[string]bool{}
	for _, l := range ls {
		for _, gi := range l.groups {
			for _, m := range groups[gi].Members {
				n := g.Node(m.Node)
				if m.Role != RoleProduce || n == nil || n.Op != models.OpConv || m.Node == g.Output {
					continue
				}
				if rs := readers[m.Node]; len(rs) == 1 && rs[0].Op == models.OpBN {
					continue
				}
				gate[m.Node] = true
			}
		}
	}
	out := &models.Graph{}
	*out = *g
	out.Nodes = nil
	var gated []string
	for _, n := range g.Nodes {
		c := *n
		c.Inputs = make([]string, len(n.Inputs))
		for i, in := range n.Inputs {
			if gate[in] {
				in += gateSuffix
			}
			c.Inputs[i] = in
		}
		out.Nodes = append(out.Nodes, &c)
		if gate[n.Name] {
			gated = append(gated, n.Name)
			ch := n.Attrs.OutChannels
			out.Nodes = append(out.Nodes, &models.Node{Name: n.Name + gateSuffix, Op: models.OpConv, Inputs: []string{n.Name},
				Attrs: models.Attrs{OutChannels: ch, Kernel: 1, Stride: 1, Dilation: 1, Groups: ch}})
		}
	}
	return out, gated
}

// initGates sets every gate of the gated convs to 1.
func initGates(params []*nn.Param, gated []string) error {
	byName := paramsByName(params)
	for _, c := range gated {
		p := byName[c+gateSuffix+".weight"]
		if p == nil {
			return fmt.Errorf("bayes: gate of %s missing from the network", c)
		}
		for i := range p.Data {
			p.Data[i] = 1
		}
		p.Commit()
	}
	return nil
}

// foldGates returns g's parameters (in the order of names) from the gated
// network's: every gated conv's output channel multiplied by its gate
// (weights and bias), the gates dropped. The result computes what the gated
// network computes.
func foldGates(params []*nn.Param, names []string, gated []string) ([]*nn.Param, error) {
	byName := paramsByName(params)
	out := make([]*nn.Param, 0, len(names))
	for _, name := range names {
		p := byName[name]
		if p == nil {
			return nil, fmt.Errorf("bayes: parameter %s missing from the gated network", name)
		}
		out = append(out, p)
	}
	for _, c := range gated {
		s, w := byName[c+gateSuffix+".weight"], byName[c+".weight"]
		if s == nil || w == nil || len(w.Data)%len(s.Data) != 0 {
			return nil, fmt.Errorf("bayes: folding the gate of %s: weight or gate missing", c)
		}
		per := len(w.Data) / len(s.Data)
		gates := s.Host()
		for i, v := range w.Host() {
			w.Data[i] = v * gates[i/per] // element i is in output channel i/per
		}
		w.Commit()
		if b := byName[c+".bias"]; b != nil {
			for ch, v := range b.Host() {
				b.Data[ch] = v * gates[ch]
			}
			b.Commit()
		}
	}
	return out, nil
}

// isGate reports whether n is a channel scale that withGates added.
func isGate(n *models.Node) bool {
	return n.Op == models.OpConv && strings.HasSuffix(n.Name, gateSuffix) && n.Attrs.Kernel == 1 &&
		n.Attrs.Groups == n.Attrs.OutChannels && !n.Attrs.Bias
}

// readersOf maps every value of g to the nodes that read it.
func readersOf(g *models.Graph) map[string][]*models.Node {
	readers := map[string][]*models.Node{}
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			readers[in] = append(readers[in], n)
		}
	}
	return readers
}

func paramsByName(ps []*nn.Param) map[string]*nn.Param {
	m := make(map[string]*nn.Param, len(ps))
	for _, p := range ps {
		m[p.Name] = p
	}
	return m
}
