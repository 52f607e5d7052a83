// Package search is BayesNAS (METHOD.md sections 1-5): the architecture
// variables of a proxy-cell or tree-cell supernet grouped under the HARD
// prior with each space's dependency rule, derivation of the cells by
// thresholding, and the search loop. The prior's updates, the penalty and
// its proximal step, and the curvature estimators are package bayes's,
// shared with compression: a Space is a bayes.Set.
package search

import (
	"fmt"
	"math"

	"bayesnas/bayes"
	"bayesnas/models"
	"bayesnas/nn"
)

// Kind says what a group of architecture variables scales.
type Kind string

const (
	// Switch groups scale a whole edge's output ("zero op or not").
	Switch Kind = "switch"
	// Op groups scale one candidate op of an edge.
	Op Kind = "op"
)

// Cell types: variables are shared across cells of one type.
const (
	Normal = "normal"
	Reduce = "reduce"
)

// Group is the set of architecture variables that play the same role in
// every cell of one type: a bayes.Group (one variable per cell of CellType;
// tree: per block using the cell) sharing one prior variance Gamma, and
// where it sits in the space. The hierarchy between groups is not stored
// here but in the space's kind (proxyCells, treeCells), whose
// ApplyDependency walks it.
//
// In a tree-cell space (NewTreeSpace) CellType is the models.TreeSpaceCell
// Cell name (a block, or a stage when cells are shared per stage), From is
// the edge index within the cell (models.TreeEdgeName order), To is -1 and
// Edge is the edge's name.
type Group struct {
	bayes.Group
	Kind     Kind
	CellType string
	From, To int
	Edge     string // tree cells only: the edge's name within the cell ("h0.t1.l0")
	Op       string // "" for a switch
	// CostMs is an op group's marginal latency on the target device
	// (LatencyConfig); 0 when the search prices nothing.
	CostMs float64
}

// Space is the grouped architecture variables of one supernet. With
// Priors and ApplyDependency it is the bayes.Set that the updates, the
// penalty and the proximal step act on; what differs between proxy and
// tree cells (how the groups are indexed, and the HARD rule between them)
// is its cells.
type Space struct {
	Nodes  int // proxy cells' intermediate nodes (0 for tree cells)
	Ops    []string
	Groups []*Group
	// Aux are the auxiliary skips' weights (models.ProxyConfig.AuxSkip):
	// not architecture variables, the search sets them (searcher.setAux).
	Aux []*nn.Param
	// cells is the space's kind, set by the constructor: *proxyCells or
	// *treeCells, each a bayes.Set over Groups with its own dependency rule.
	cells cells
}

// cells is the kind of a space: the index of its groups by cell and edge,
// and (through bayes.Set) its HARD dependency rule.
type cells interface {
	bayes.Set
	// cellTypes lists the cell types, in the order derivation reports them.
	cellTypes() []string
}

// proxyCells is a proxy-cell space (NewSpace): DARTS-style cells of a
// normal and a reduction type, every node fed by every earlier one. It
// embeds its Space for the groups and Priors; its own ApplyDependency
// (which Space.ApplyDependency calls) is the proxy rule.
type proxyCells struct {
	*Space
	// switches[cellType][from][to] and ops[cellType][from][to][op] index
	// Groups.
	switches map[string]map[[2]int]int
	ops      map[string]map[[2]int]map[string]int
}

var _ cells = (*proxyCells)(nil)

// Priors is every group's prior, in Groups order. (Each group's update
// reads only its own variables and gamma; the hierarchy enters afterwards,
// through ApplyDependency.)
func (s *Space) Priors() []*bayes.Group {
	ps := make([]*bayes.Group, len(s.Groups))
	for i, g := range s.Groups {
		ps[i] = &g.Group
	}
	return ps
}

// NewSpace groups the architecture variables of a network compiled from a
// proxy supernet. Every group starts at Gamma = 1 and Omega = 1 (a
// deterministic start; the released code draws omega at random).
func NewSpace(space *models.ProxySpace, net *nn.Network, lambdaSwitch, lambdaOp float64) (*Space, error) {
	if space == nil || len(space.Cells) == 0 {
		return nil, fmt.Errorf("search space: no cells")
	}
	if !(lambdaSwitch >= 0) || !(lambdaOp >= 0) {
		return nil, fmt.Errorf("search space: lambdas (switch %g, op %g) must be >= 0", lambdaSwitch, lambdaOp)
	}
	s := &Space{Nodes: space.Nodes, Ops: space.Ops}
	pc := &proxyCells{Space: s, switches: map[string]map[[2]int]int{}, ops: map[string]map[[2]int]map[string]int{}}
	s.cells = pc
	for _, c := range space.Cells {
		ct := Normal
		if c.Reduction {
			ct = Reduce
		}
		if pc.switches[ct] == nil {
			pc.switches[ct] = map[[2]int]int{}
			pc.ops[ct] = map[[2]int]map[string]int{}
		}
		for _, e := range c.Edges {
			key := [2]int{e.From, e.To}
			if len(e.OpWeights) != len(space.Ops) {
				return nil, fmt.Errorf("search space: %s edge %d->%d has %d op weights for %d ops", c.Name, e.From, e.To, len(e.OpWeights), len(space.Ops))
			}
			sw, err := archParam(net, e.Switch)
			if err != nil {
				return nil, err
			}
			gi, ok := pc.switches[ct][key]
			if !ok {
				gi = len(s.Groups)
				pc.switches[ct][key] = gi
				pc.ops[ct][key] = map[string]int{}
				s.Groups = append(s.Groups, &Group{Group: bayes.Group{Name: fmt.Sprintf("%s.e%d_%d.switch", ct, e.From, e.To), Lambda: lambdaSwitch},
					Kind: Switch, CellType: ct, From: e.From, To: e.To})
			}
			s.Groups[gi].Vars = append(s.Groups[gi].Vars, sw)
			if e.Aux != "" {
				v, err := archParam(net, e.Aux)
				if err != nil {
					return nil, err
				}
				s.Aux = append(s.Aux, v.P)
			}
			for i, op := range space.Ops {
				v, err := archParam(net, e.OpWeights[i])
				if err != nil {
					return nil, err
				}
				oi, ok := pc.ops[ct][key][op]
				if !ok {
					oi = len(s.Groups)
					pc.ops[ct][key][op] = oi
					s.Groups = append(s.Groups, &Group{Group: bayes.Group{Name: fmt.Sprintf("%s.e%d_%d.%s", ct, e.From, e.To, op), Lambda: lambdaOp},
						Kind: Op, CellType: ct, From: e.From, To: e.To, Op: op})
				}
				s.Groups[oi].Vars = append(s.Groups[oi].Vars, v)
			}
		}
	}
	for _, g := range s.Groups {
		g.Gamma, g.Omega = 1, 1
	}
	s.ApplyDependency()
	return s, nil
}

// archParam finds a scalar architecture variable of net by name.
func archParam(net *nn.Network, name string) (bayes.Var, error) {
	p := net.Param(name)
	if p == nil {
		return bayes.Var{}, fmt.Errorf("search space: the network has no parameter %q (compiled from another graph?)", name)
	}
	if p.Kind != nn.ArchVar || len(p.Data) != 1 {
		return bayes.Var{}, fmt.Errorf("search space: parameter %q is not a scalar architecture variable", name)
	}
	return bayes.Var{P: p}, nil
}

// CellTypes lists the cell types present, normal first; for a tree space,
// the cells in block order.
func (s *Space) CellTypes() []string { return s.cells.cellTypes() }

func (c *proxyCells) cellTypes() []string {
	var ts []string
	for _, t := range []string{Normal, Reduce} {
		if c.switches[t] != nil {
			ts = append(ts, t)
		}
	}
	return ts
}

// proxy is the space's proxy-cell index, or nil for another kind.
func (s *Space) proxy() *proxyCells {
	pc, _ := s.cells.(*proxyCells)
	return pc
}

// SwitchGroup and OpGroup return the group of an edge's switch or op, or
// nil (no such edge or op, or not a proxy-cell space).
func (s *Space) SwitchGroup(cellType string, from, to int) *Group {
	if pc := s.proxy(); pc != nil {
		if i, ok := pc.switches[cellType][[2]int{from, to}]; ok {
			return s.Groups[i]
		}
	}
	return nil
}

func (s *Space) OpGroup(cellType string, from, to int, op string) *Group {
	if pc := s.proxy(); pc != nil {
		if i, ok := pc.ops[cellType][[2]int{from, to}][op]; ok {
			return s.Groups[i]
		}
	}
	return nil
}

// ApplyDependency computes every GammaEff from the Gammas (METHOD.md
// section 2) by the rule of the space's kind (proxyCells, treeCells).
func (s *Space) ApplyDependency() { s.cells.ApplyDependency() }

// ApplyDependency is the HARD rule of proxy cells:
//
//	gammaNode(0) = gammaNode(1) = +Inf                 (cell inputs)
//	gammaNode(j) = sum over edges e = (i,j) of max_o GammaEff(e,o)
//	GammaEff(switch of (j,k)) = 1/(1/Gamma(switch) + 1/gammaNode(j))
//	GammaEff(op o of (j,k))   = 1/(1/Gamma(op) + 1/GammaEff(switch of (j,k)))
//
// evaluated node by node in topological order, per cell type. A node whose
// in-edges are all pruned has gammaNode 0, so every edge out of it is
// pruned (the poster's proposition: j carries information to k only if
// some op into j is alive). Frozen groups count as Gamma = 0.
func (c *proxyCells) ApplyDependency() {
	for _, ct := range c.cellTypes() {
		nodeVar := make([]float64, c.Nodes+2)
		nodeVar[0], nodeVar[1] = math.Inf(1), math.Inf(1)
		for k := 2; k < c.Nodes+2; k++ {
			for j := 0; j < k; j++ {
				sw := c.SwitchGroup(ct, j, k)
				if sw == nil {
					continue
				}
				sw.GammaEff = bayes.Combine(sw.GammaOrZero(), nodeVar[j])
				best := 0.0
				for _, op := range c.Ops {
					g := c.OpGroup(ct, j, k, op)
					g.GammaEff = bayes.Combine(g.GammaOrZero(), sw.GammaEff)
					best = math.Max(best, g.GammaEff)
				}
				nodeVar[k] += best
			}
		}
	}
}
