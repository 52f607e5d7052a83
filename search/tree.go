package search

import (
	"fmt"
	"math"
	"slices"

	"bayesnas/bayes"
	"bayesnas/models"
	"bayesnas/nn"
)

// treeCells is a tree-cell space (NewTreeSpace): a tree cell per block of
// a PyramidNet, or per stage when blocks share cells. As proxyCells, it
// embeds its Space and brings the dependency rule, along tree paths.
type treeCells struct {
	*Space
	order  []string // Cell names in block order of first appearance
	byName map[string]*treeCellGroups
}

var _ cells = (*treeCells)(nil)

// treeCellGroups are the groups of one cell (shared by its blocks).
type treeCellGroups struct {
	blocks []string
	edges  []treeEdgeGroups // by edge index
}

type treeEdgeGroups struct {
	name   string
	parent int   // edge index, -1 for a top edge
	sw     int   // switch group, index in Space.Groups
	ops    []int // op groups in Space.Ops order
}

// NewTreeSpace groups the architecture variables of a network compiled from
// a tree-cell supernet (models.PyramidTreeNetwork with Search). Groups are
// per (cell, edge) switch and per (cell, edge, op), where the cell is the
// TreeSpaceCell's Cell name: blocks sharing a cell (SharePerStage) share
// groups, one variable per block; with a cell per block every group holds
// one variable. Group names are "<cell>.<edge>.switch" and
// "<cell>.<edge>.<op>" (e.g. "stage2.block0.h0.t1.l0.sep_3x3"); CellType is
// the cell name, From the edge index, To -1, Edge the edge name. Every
// group starts at Gamma = 1 and Omega = 1, as in NewSpace, and the space
// applies the tree dependency rule (treeCells.ApplyDependency).
func NewTreeSpace(ts *models.TreeSpace, net *nn.Network, lambdaSwitch, lambdaOp float64) (*Space, error) {
	if ts == nil || len(ts.Cells) == 0 {
		return nil, fmt.Errorf("tree search space: no cells")
	}
	if len(ts.Ops) == 0 {
		return nil, fmt.Errorf("tree search space: no candidate ops")
	}
	if !(lambdaSwitch >= 0) || !(lambdaOp >= 0) {
		return nil, fmt.Errorf("tree search space: lambdas (switch %g, op %g) must be >= 0", lambdaSwitch, lambdaOp)
	}
	s := &Space{Ops: slices.Clone(ts.Ops)}
	idx := &treeCells{Space: s, byName: map[string]*treeCellGroups{}}
	s.cells = idx
	for _, c := range ts.Cells {
		if err := checkTreeSpaceCell(c, len(ts.Ops)); err != nil {
			return nil, fmt.Errorf("tree search space: block %s (cell %s): %w", c.Block, c.Cell, err)
		}
		cg := idx.byName[c.Cell]
		if cg == nil {
			cg = &treeCellGroups{}
			idx.byName[c.Cell] = cg
			idx.order = append(idx.order, c.Cell)
			for _, e := range c.Edges {
				eg := treeEdgeGroups{name: e.Name, parent: e.Parent, sw: len(s.Groups)}
				s.Groups = append(s.Groups, &Group{Group: bayes.Group{Name: fmt.Sprintf("%s.%s.switch", c.Cell, e.Name), Lambda: lambdaSwitch},
					Kind: Switch, CellType: c.Cell, From: e.Index, To: -1, Edge: e.Name})
				for _, op := range ts.Ops {
					eg.ops = append(eg.ops, len(s.Groups))
					s.Groups = append(s.Groups, &Group{Group: bayes.Group{Name: fmt.Sprintf("%s.%s.%s", c.Cell, e.Name, op), Lambda: lambdaOp},
						Kind: Op, CellType: c.Cell, From: e.Index, To: -1, Edge: e.Name, Op: op})
				}
				cg.edges = append(cg.edges, eg)
			}
		}
		cg.blocks = append(cg.blocks, c.Block)
		for i, e := range c.Edges {
			eg := cg.edges[i]
			if e.Name != eg.name || e.Parent != eg.parent {
				return nil, fmt.Errorf("tree search space: block %s: edge %d is %s under %d, but another block of cell %s has %s under %d",
					c.Block, i, e.Name, e.Parent, c.Cell, eg.name, eg.parent)
			}
			v, err := archParam(net, e.Switch)
			if err != nil {
				return nil, fmt.Errorf("tree search space: block %s edge %s: %w", c.Block, e.Name, err)
			}
			s.Groups[eg.sw].Vars = append(s.Groups[eg.sw].Vars, v)
			for k, name := range e.OpWeights {
				v, err := archParam(net, name)
				if err != nil {
					return nil, fmt.Errorf("tree search space: block %s edge %s: %w", c.Block, e.Name, err)
				}
				s.Groups[eg.ops[k]].Vars = append(s.Groups[eg.ops[k]].Vars, v)
			}
		}
	}
	for _, g := range s.Groups {
		g.Gamma, g.Omega = 1, 1
	}
	s.ApplyDependency()
	return s, nil
}

// checkTreeSpaceCell accepts the tree of models.PyramidTreeNetwork only:
// derivation emits models.TreeCell, whose edges are that tree's.
func checkTreeSpaceCell(c models.TreeSpaceCell, ops int) error {
	if len(c.Edges) != models.TreeEdges {
		return fmt.Errorf("%d edges, want %d", len(c.Edges), models.TreeEdges)
	}
	for i, e := range c.Edges {
		switch {
		case e.Index != i || e.Name != models.TreeEdgeName(i):
			return fmt.Errorf("edge %d is index %d %q, want %q", i, e.Index, e.Name, models.TreeEdgeName(i))
		case e.Parent != models.TreeEdgeParent(i):
			return fmt.Errorf("edge %d (%s) has parent %d, want %d", i, e.Name, e.Parent, models.TreeEdgeParent(i))
		case len(e.OpWeights) != ops:
			return fmt.Errorf("edge %d (%s) has %d op weights for %d ops", i, e.Name, len(e.OpWeights), ops)
		}
	}
	return nil
}

// TreeSwitchGroup and TreeOpGroup return the group of a tree cell's edge
// switch or op, or nil (no such cell, edge or op, or not a tree space).
func (s *Space) TreeSwitchGroup(cell string, edge int) *Group {
	if e := s.treeEdge(cell, edge); e != nil {
		return s.Groups[e.sw]
	}
	return nil
}

func (s *Space) TreeOpGroup(cell string, edge int, op string) *Group {
	e := s.treeEdge(cell, edge)
	if e == nil {
		return nil
	}
	if k := slices.Index(s.Ops, op); k >= 0 {
		return s.Groups[e.ops[k]]
	}
	return nil
}

// tree is the space's tree-cell index, or nil for another kind.
func (s *Space) tree() *treeCells {
	tc, _ := s.cells.(*treeCells)
	return tc
}

func (s *Space) treeEdge(cell string, edge int) *treeEdgeGroups {
	tc := s.tree()
	if tc == nil {
		return nil
	}
	cg := tc.byName[cell]
	if cg == nil || edge < 0 || edge >= len(cg.edges) {
		return nil
	}
	return &cg.edges[edge]
}

// cellTypes are the cells in block order.
func (c *treeCells) cellTypes() []string { return slices.Clone(c.order) }

// ApplyDependency is the HARD rule along tree paths (METHOD.md section 2:
// an edge's parent is the edge above it on the path from the root). Per
// cell, edges in index order (a parent comes before its children):
//
//	alive(e)              = max_o GammaEff(op o of e)
//	GammaEff(switch of e) = 1/(1/Gamma(switch e) + 1/alive(parent(e)))   (alive = +Inf above a top edge)
//	GammaEff(op o of e)   = 1/(1/Gamma(op o of e) + 1/GammaEff(switch e))
//
// alive(e) is the proxy rule's node variance for the node an edge feeds,
// which in a tree has that one in-edge: the leaves below e receive e's
// output, which is zero unless e's switch and one of its ops are. The root
// conv feeding the top edges is not searched, hence +Inf. Frozen groups
// count as Gamma = 0, so a pruned switch or a pruned set of ops prunes
// everything below. Nothing flows upward: a top edge whose leaves are all
// pruned keeps its GammaEff (derivation drops it, models.TreeCell.Pruned).
func (c *treeCells) ApplyDependency() {
	for _, name := range c.order {
		cg := c.byName[name]
		alive := make([]float64, len(cg.edges))
		for i, e := range cg.edges {
			parent := math.Inf(1)
			if e.parent >= 0 {
				parent = alive[e.parent]
			}
			sw := c.Groups[e.sw]
			sw.GammaEff = bayes.Combine(sw.GammaOrZero(), parent)
			for _, oi := range e.ops {
				g := c.Groups[oi]
				g.GammaEff = bayes.Combine(g.GammaOrZero(), sw.GammaEff)
				alive[i] = math.Max(alive[i], g.GammaEff)
			}
		}
	}
}

// TreeDerivation is a derived tree cell per cell of the space and the
// table of every decision. Cells[i] is the cell named Names[i]; with the
// supernet's config they are in the order models.PyramidTreeConfig.Cells
// wants (per block, or per stage with SharePerStage).
type TreeDerivation struct {
	Names []string          `json:"names"`
	Cells []models.TreeCell `json:"cells"`
	Table TreeDecisionTable `json:"table"`
}

// TreeDecisionTable lets a user see how sure each decision was.
type TreeDecisionTable struct {
	Threshold       float64             `json:"threshold"`
	Relative        bool                `json:"relative"`
	MinSignificance float64             `json:"min_significance,omitempty"`
	Cells           []TreeCellDecisions `json:"cells"`
}

// TreeCellDecisions are one cell's decisions; Tau is the absolute threshold
// applied, Blocks the blocks that use the cell. Dead says no edge is kept:
// each of those blocks is its shortcut alone in the derived network (a
// valid network, so unlike proxy cells nothing is forced).
type TreeCellDecisions struct {
	Cell         string             `json:"cell"`
	Blocks       []string           `json:"blocks"`
	Tau          float64            `json:"tau"`
	Dead         bool               `json:"dead,omitempty"`
	Edges        []TreeEdgeDecision `json:"edges"`
	KeptEdges    int                `json:"kept_edges"`
	KeptOps      int                `json:"kept_ops"`
	CandidateOps int                `json:"candidate_ops"`
}

// TreeEdgeDecision is one edge: its switch and its ops. Reason says why an
// edge that cleared the threshold was dropped by connectivity.
type TreeEdgeDecision struct {
	Index  int           `json:"index"`
	Name   string        `json:"name"`
	Parent int           `json:"parent"`
	Kept   bool          `json:"kept"`
	Reason string        `json:"reason,omitempty"`
	Switch VarDecision   `json:"switch"`
	Ops    []VarDecision `json:"ops"`
}

// DeriveTree thresholds gamma_eff per cell: an op is kept iff its
// gamma_eff > tau, an edge iff its switch's gamma_eff > tau and at least
// one of its ops is kept (several kept ops are summed); tau is
// cfg.Threshold, or with Relative that times the largest op gamma_eff of
// the cell's groups. The cell then goes through models.TreeCell.Pruned:
// a leaf under a dropped top edge goes (a safeguard: the dependency rule
// keeps a leaf's gamma_eff at most its parent's, up to rounding), and so
// does a top edge with no kept leaf (its output reaches nothing).
func (s *Space) DeriveTree(cfg DeriveConfig) (*TreeDerivation, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tc := s.tree()
	if tc == nil {
		return nil, fmt.Errorf("derive tree: not a tree-cell space (use Derive)")
	}
	d := &TreeDerivation{Table: TreeDecisionTable{Threshold: cfg.Threshold, Relative: cfg.Relative, MinSignificance: cfg.MinSignificance}}
	for _, name := range tc.order {
		cell, cd := tc.deriveCell(name, cfg)
		d.Names = append(d.Names, name)
		d.Cells = append(d.Cells, cell)
		d.Table.Cells = append(d.Table.Cells, cd)
	}
	return d, nil
}

func (c *treeCells) deriveCell(name string, cfg DeriveConfig) (models.TreeCell, TreeCellDecisions) {
	cg := c.byName[name]
	tau := cfg.Threshold
	if cfg.Relative {
		var best float64
		for _, e := range cg.edges {
			for _, oi := range e.ops {
				if cfg.significant(c.Groups[oi]) {
					best = math.Max(best, c.Groups[oi].GammaEff)
				}
			}
		}
		tau *= best
	}
	raw := models.TreeCell{Edges: make([][]string, len(cg.edges))}
	for i, e := range cg.edges {
		if !cfg.keeps(c.Groups[e.sw], tau) {
			continue
		}
		for k, oi := range e.ops {
			if cfg.keeps(c.Groups[oi], tau) {
				raw.Edges[i] = append(raw.Edges[i], c.Ops[k])
			}
		}
	}
	cell := raw.Pruned()
	cd := TreeCellDecisions{Cell: name, Blocks: slices.Clone(cg.blocks), Tau: tau, Dead: cell.Dead()}
	for i, e := range cg.edges {
		kept := len(cell.Edges[i]) > 0
		ed := TreeEdgeDecision{Index: i, Name: e.name, Parent: e.parent, Kept: kept, Switch: decision(c.Groups[e.sw], kept)}
		switch {
		case kept:
			cd.KeptEdges++
			cd.KeptOps += len(cell.Edges[i])
		case len(raw.Edges[i]) > 0 && e.parent >= 0:
			ed.Reason = fmt.Sprintf("its parent edge %s is dropped", cg.edges[e.parent].name)
		case len(raw.Edges[i]) > 0:
			ed.Reason = "no leaf edge below it is kept, so its output reaches nothing"
		}
		for _, oi := range e.ops {
			g := c.Groups[oi]
			ed.Ops = append(ed.Ops, decision(g, kept && cfg.keeps(g, tau)))
			cd.CandidateOps++
		}
		cd.Edges = append(cd.Edges, ed)
	}
	return cell, cd
}

// DerivedTreeNetwork builds the derived network: base's backbone (Search,
// Ops and Cells are replaced) with the given cells, one per block or, with
// base.SharePerStage, one per stage (TreeDerivation.Cells of a search on
// base).
func DerivedTreeNetwork(base models.PyramidTreeConfig, cells ...models.TreeCell) (*models.Graph, error) {
	cfg := base
	cfg.Search, cfg.Ops, cfg.Cells = false, nil, cells
	g, _, err := models.PyramidTreeNetwork(cfg)
	if err != nil {
		return nil, fmt.Errorf("derived tree network: %w", err)
	}
	return g, nil
}
