// Package search is BayesNAS (METHOD.md sections 1-5): groups of
// architecture variables with a hierarchical ARD (HARD) prior, the
// Laplace/reweighted-l1 updates of their variances, curvature estimators
// built on per-sample gradients from the backward pass, derivation of a
// cell by thresholding, and the search loop over a proxy cell supernet.
package search

import (
	"fmt"
	"math"
	"slices"

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
// every cell of one type; they share one prior variance Gamma.
//
// In a tree-cell space (NewTreeSpace) CellType is the models.TreeSpaceCell
// Cell name (a block, or a stage when cells are shared per stage), From is
// the edge index within the cell (models.TreeEdgeName order), To is -1 and
// Edge is the edge's name.
type Group struct {
	Name     string
	Kind     Kind
	CellType string
	From, To int
	Edge     string // tree cells only: the edge's name within the cell ("h0.t1.l0")
	Op       string // "" for a switch

	Params []*nn.Param // one scalar per cell of CellType (tree: per block using the cell)
	Lambda float64

	Gamma    float64   // prior variance of the group (METHOD.md section 3)
	GammaEff float64   // after the dependency rule (section 2)
	Omega    float64   // reweighting coefficient of the l1 penalty
	H        []float64 // curvature per member at the last update
	C        []float64 // Laplace posterior variance per member at the last update
	Clamped  bool      // omega fell below eps at the last update (flat loss)
	Frozen   bool      // pruned during the search: held at exactly zero

	parent int // index of the switch group for ops; -1 for switches (their parent is a node)
}

// Space is the grouped architecture variables of one supernet.
type Space struct {
	Nodes  int // proxy cells' intermediate nodes (0 for tree cells)
	Ops    []string
	Groups []*Group
	// Aux are the auxiliary skips' weights (models.ProxyConfig.AuxSkip):
	// not architecture variables, the search sets them (searcher.setAux).
	Aux []*nn.Param
	// switches[cellType][from][to] and ops[cellType][from][to][op] index
	// Groups (proxy space).
	switches map[string]map[[2]int]int
	ops      map[string]map[[2]int]map[string]int
	// tree indexes Groups for a tree-cell space; nil for the proxy space.
	tree *treeIndex
	// dependency is the HARD rule of the space's kind, set by the
	// constructor, so that ApplyDependency (and through it Update and
	// dynamic pruning) applies the right one.
	dependency func(*Space)
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
	s := &Space{Nodes: space.Nodes, Ops: space.Ops, dependency: (*Space).proxyDependency,
		switches: map[string]map[[2]int]int{}, ops: map[string]map[[2]int]map[string]int{}}
	for _, c := range space.Cells {
		ct := Normal
		if c.Reduction {
			ct = Reduce
		}
		if s.switches[ct] == nil {
			s.switches[ct] = map[[2]int]int{}
			s.ops[ct] = map[[2]int]map[string]int{}
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
			gi, ok := s.switches[ct][key]
			if !ok {
				gi = len(s.Groups)
				s.switches[ct][key] = gi
				s.ops[ct][key] = map[string]int{}
				s.Groups = append(s.Groups, &Group{Name: fmt.Sprintf("%s.e%d_%d.switch", ct, e.From, e.To), Kind: Switch,
					CellType: ct, From: e.From, To: e.To, Lambda: lambdaSwitch, parent: -1})
			}
			s.Groups[gi].Params = append(s.Groups[gi].Params, sw)
			if e.Aux != "" {
				p, err := archParam(net, e.Aux)
				if err != nil {
					return nil, err
				}
				s.Aux = append(s.Aux, p)
			}
			for i, op := range space.Ops {
				p, err := archParam(net, e.OpWeights[i])
				if err != nil {
					return nil, err
				}
				oi, ok := s.ops[ct][key][op]
				if !ok {
					oi = len(s.Groups)
					s.ops[ct][key][op] = oi
					s.Groups = append(s.Groups, &Group{Name: fmt.Sprintf("%s.e%d_%d.%s", ct, e.From, e.To, op), Kind: Op,
						CellType: ct, From: e.From, To: e.To, Op: op, Lambda: lambdaOp, parent: gi})
				}
				s.Groups[oi].Params = append(s.Groups[oi].Params, p)
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
func archParam(net *nn.Network, name string) (*nn.Param, error) {
	p := net.Param(name)
	if p == nil {
		return nil, fmt.Errorf("search space: the network has no parameter %q (compiled from another graph?)", name)
	}
	if p.Kind != nn.ArchVar || len(p.Data) != 1 {
		return nil, fmt.Errorf("search space: parameter %q is not a scalar architecture variable", name)
	}
	return p, nil
}

// CellTypes lists the cell types present, normal first; for a tree space,
// the cells in block order.
func (s *Space) CellTypes() []string {
	if s.tree != nil {
		return slices.Clone(s.tree.cells)
	}
	var ts []string
	for _, t := range []string{Normal, Reduce} {
		if s.switches[t] != nil {
			ts = append(ts, t)
		}
	}
	return ts
}

// SwitchGroup and OpGroup return the group of an edge's switch or op, or nil.
func (s *Space) SwitchGroup(cellType string, from, to int) *Group {
	if i, ok := s.switches[cellType][[2]int{from, to}]; ok {
		return s.Groups[i]
	}
	return nil
}

func (s *Space) OpGroup(cellType string, from, to int, op string) *Group {
	if i, ok := s.ops[cellType][[2]int{from, to}][op]; ok {
		return s.Groups[i]
	}
	return nil
}

// Significance is the mean over the group's members of |a|/sqrt(C), the
// posterior mean in posterior standard deviations (C of the last update,
// so ok is false before the first one). A member with C = 0 counts 0 when
// its value is 0 too (frozen) and 1e6 otherwise.
func (g *Group) Significance() (z float64, ok bool) {
	if len(g.C) != len(g.Params) || len(g.Params) == 0 {
		return 0, false
	}
	for i, p := range g.Params {
		a := math.Abs(float64(p.Data[0]))
		switch {
		case g.C[i] > 0:
			z += a / math.Sqrt(g.C[i])
		case a > 0:
			z += 1e6
		}
	}
	return z / float64(len(g.Params)), true
}

// Values returns the current values of a group's variables.
func (g *Group) Values() []float64 {
	a := make([]float64, len(g.Params))
	for i, p := range g.Params {
		a[i] = float64(p.Data[0])
	}
	return a
}

// combine adds precisions: a child with prior variance gamma under a parent
// of effective variance parent has 1/(1/gamma + 1/parent). IEEE arithmetic
// gives the limits: a zero parent or child gives 0, an infinite parent
// (a cell input) leaves gamma unchanged.
func combine(gamma, parent float64) float64 {
	if gamma == 0 || parent == 0 {
		return 0
	}
	return 1 / (1/gamma + 1/parent)
}

// ApplyDependency computes every GammaEff from the Gammas (METHOD.md
// section 2) by the space's rule: proxyDependency for proxy cells,
// treeDependency for tree cells.
func (s *Space) ApplyDependency() { s.dependency(s) }

// proxyDependency is the HARD rule of proxy cells:
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
func (s *Space) proxyDependency() {
	for _, ct := range s.CellTypes() {
		nodeVar := make([]float64, s.Nodes+2)
		nodeVar[0], nodeVar[1] = math.Inf(1), math.Inf(1)
		for k := 2; k < s.Nodes+2; k++ {
			for j := 0; j < k; j++ {
				sw := s.SwitchGroup(ct, j, k)
				if sw == nil {
					continue
				}
				sw.GammaEff = combine(sw.gammaOrZero(), nodeVar[j])
				best := 0.0
				for _, op := range s.Ops {
					g := s.OpGroup(ct, j, k, op)
					g.GammaEff = combine(g.gammaOrZero(), sw.GammaEff)
					best = math.Max(best, g.GammaEff)
				}
				nodeVar[k] += best
			}
		}
	}
}

func (g *Group) gammaOrZero() float64 {
	if g.Frozen {
		return 0
	}
	return g.Gamma
}

// UpdateGroup is one Laplace / reweighted-l1 step for a group (METHOD.md
// section 3) from its variables a, their curvature H and its old gamma:
//
//	C_i   = 1 / (1/gamma + H_i/lambda)
//	omega = sqrt( sum_i H_i / (lambda + gamma*H_i) )
//	gamma = ||a||_2 / max(omega, eps)
//
// clamped reports omega < eps (the loss is flat in every member: H = 0).
// With lambda = 0 there is no penalty and no prior: omega is 0 by
// convention and gamma stays where it was.
func UpdateGroup(a, h []float64, gamma, lambda, eps float64) (c []float64, omega, newGamma float64, clamped bool) {
	c = make([]float64, len(a))
	var sum, norm2 float64
	for i := range a {
		norm2 += a[i] * a[i]
		if lambda == 0 {
			c[i] = gamma
			continue
		}
		c[i] = 1 / (1/gamma + h[i]/lambda)
		sum += h[i] / (lambda + gamma*h[i])
	}
	if lambda == 0 {
		return c, 0, gamma, false
	}
	omega = math.Sqrt(sum)
	clamped = omega < eps
	return c, omega, math.Sqrt(norm2) / math.Max(omega, eps), clamped
}

// Update runs UpdateGroup on every live group with curvature h (indexed by
// parameter) and then the dependency rule. It returns the number of groups
// whose omega was clamped.
func (s *Space) Update(h map[*nn.Param]float64, eps float64) (clamped int, err error) {
	for _, g := range s.Groups {
		if g.Frozen {
			continue
		}
		hs := make([]float64, len(g.Params))
		for i, p := range g.Params {
			v, ok := h[p]
			if !ok {
				return 0, fmt.Errorf("search update: no curvature for %s (group %s)", p.Name, g.Name)
			}
			hs[i] = v
		}
		g.H = hs
		g.C, g.Omega, g.Gamma, g.Clamped = UpdateGroup(g.Values(), hs, g.Gamma, g.Lambda, eps)
		if g.Clamped {
			clamped++
		}
	}
	s.ApplyDependency()
	return clamped, nil
}

// norm is ||a_g||_2 over the group's scalar variables.
func (g *Group) norm() float64 {
	var norm2 float64
	for _, p := range g.Params {
		norm2 += float64(p.Data[0]) * float64(p.Data[0])
	}
	return math.Sqrt(norm2)
}

// AddPenaltyGrad adds the gradient of sum_g lambda_g*omega_g*||a_g||_2 to
// the architecture variables' gradients and returns the penalty's value.
// At a_g = 0 the subgradient 0 is used.
func (s *Space) AddPenaltyGrad() float64 {
	var total float64
	s.eachPenalised(func(g *Group, norm float64) {
		k := g.Lambda * g.Omega
		total += k * norm
		for _, p := range g.Params {
			p.Grad[0] += float32(k * float64(p.Data[0]) / norm)
		}
	})
	return total
}

// eachPenalised calls f with every group the penalty acts on (live, lambda
// > 0, not already at zero) and its norm.
func (s *Space) eachPenalised(f func(g *Group, norm float64)) {
	for _, g := range s.Groups {
		if g.Frozen || g.Lambda == 0 {
			continue
		}
		if norm := g.norm(); norm > 0 {
			f(g, norm)
		}
	}
}

// ProxPenalty applies the penalty sum_g lambda_g*omega_g*||a_g||_2 as a
// proximal step after the optimizer's step on the data loss alone: every
// live group is shrunk towards zero by its group soft-threshold,
//
//	a_g <- a_g * max(0, 1 - eta_g*lambda_g*omega_g/||a_g||),
//
// eta_g = lr * the mean of step(p) over the group's variables, step being
// the optimizer's factor on a unit gradient (Adam: 1/(sqrt(v_hat)+eps)), so
// the fixed points are those of the penalised loss. Unlike a subgradient,
// it sets groups the data do not hold up to exactly zero: with Adam the
// subgradient leaves them jittering at +-lr around zero, their curvature
// near zero too, and gamma = ||a||/omega ~ ||a|| sqrt(lambda/H) blows up.
func (s *Space) ProxPenalty(lr float64, step func(p *nn.Param) float64) {
	s.eachPenalised(func(g *Group, norm float64) {
		var eta float64
		for _, p := range g.Params {
			eta += step(p)
		}
		eta *= lr / float64(len(g.Params))
		shrink := 1 - eta*g.Lambda*g.Omega/norm
		if shrink < 0 {
			shrink = 0
		}
		for _, p := range g.Params {
			p.Data[0] = float32(float64(p.Data[0]) * shrink)
		}
	})
}

// Penalty is sum_g lambda_g*omega_g*||a_g||_2 over live groups.
func (s *Space) Penalty() float64 {
	var total float64
	for _, g := range s.Groups {
		if g.Frozen || g.Lambda == 0 {
			continue
		}
		total += g.Lambda * g.Omega * g.norm()
	}
	return total
}
