package search

import (
	"fmt"
	"math"

	"bayesnas/models"
)

// DeriveConfig says how gamma_eff is thresholded (METHOD.md section 5).
type DeriveConfig struct {
	// Threshold tau: an op is kept iff its gamma_eff > tau. With Relative,
	// tau = Threshold * (largest op gamma_eff of that cell type).
	Threshold float64 `json:"threshold"`
	Relative  bool    `json:"relative"`
	// MinSignificance also asks of every kept op and switch that its
	// posterior mean be this many posterior standard deviations from zero,
	// |a|/sqrt(C) averaged over the cells of its group (Group.Significance).
	// gamma_eff alone keeps variables the search drove to zero when their
	// curvature went to zero with them (gamma ~ |a| sqrt(lambda/H) is then
	// 0/0): edges whose switch is 0.000 in every cell survived a relative
	// threshold of 0.1. 0 turns the check off.
	MinSignificance float64 `json:"min_significance,omitempty"`
	// drop are groups a latency target removed (deriveUnderTarget); a
	// pointer keeps DeriveConfig comparable.
	drop *map[*Group]bool
}

// keeps says whether group g clears tau and the significance floor (and
// was not dropped for the latency target).
func (c DeriveConfig) keeps(g *Group, tau float64) bool {
	return g.GammaEff > tau && c.significant(g) && (c.drop == nil || !(*c.drop)[g])
}

// significant says whether g clears the significance floor (always, before
// the first update). A relative threshold is taken over the significant ops
// only: the inflated gamma_eff of a zeroed op (12.9 against 0.03-0.12 for
// the ops a tree search kept alive) would otherwise set tau.
func (c DeriveConfig) significant(g *Group) bool {
	z, ok := g.Significance()
	return !ok || z >= c.MinSignificance
}

func (c DeriveConfig) validate() error {
	if !(c.Threshold >= 0) || math.IsInf(c.Threshold, 0) {
		return fmt.Errorf("derive: threshold %g, want a finite value >= 0", c.Threshold)
	}
	if !(c.MinSignificance >= 0) || math.IsInf(c.MinSignificance, 0) {
		return fmt.Errorf("derive: min_significance %g, want a finite value >= 0", c.MinSignificance)
	}
	if c.Relative && c.Threshold >= 1 {
		return fmt.Errorf("derive: relative threshold %g, want < 1 (1 would drop even the strongest op)", c.Threshold)
	}
	return nil
}

// Derivation is a derived cell per type and the table of every decision.
type Derivation struct {
	Normal []models.ProxyEdge `json:"normal"`
	Reduce []models.ProxyEdge `json:"reduce"`
	Table  DecisionTable      `json:"table"`
}

// DecisionTable lets a user see how sure each decision was.
type DecisionTable struct {
	Threshold       float64         `json:"threshold"`
	Relative        bool            `json:"relative"`
	MinSignificance float64         `json:"min_significance,omitempty"`
	Cells           []CellDecisions `json:"cells"`
}

// CellDecisions are one cell type's decisions; Tau is the absolute
// threshold applied. Forced says the threshold kept nothing connected and
// the strongest op out of a cell input was kept so that the cell is not empty.
type CellDecisions struct {
	Type        string         `json:"type"`
	Tau         float64        `json:"tau"`
	LiveNodes   []int          `json:"live_nodes"`
	Forced      bool           `json:"forced,omitempty"`
	CopiedFrom  string         `json:"copied_from,omitempty"`
	Edges       []EdgeDecision `json:"edges"`
	KeptEdges   int            `json:"kept_edges"`
	KeptOps     int            `json:"kept_ops"`
	CandidateOp int            `json:"candidate_ops"`
}

// EdgeDecision is one edge: its switch and its ops. Reason says why a
// kept-looking edge was dropped (its source node is not reached).
type EdgeDecision struct {
	From   int           `json:"from"`
	To     int           `json:"to"`
	Kept   bool          `json:"kept"`
	Reason string        `json:"reason,omitempty"`
	Switch VarDecision   `json:"switch"`
	Ops    []VarDecision `json:"ops"`
}

// VarDecision is one group: the variable of each cell of the type, the
// prior variance, its effective value after the dependency rule, the
// reweighting coefficient, and per cell the curvature H and Laplace
// posterior variance C of the last update.
type VarDecision struct {
	Op           string    `json:"op,omitempty"`
	Kept         bool      `json:"kept"`
	Weights      []float64 `json:"weights"`
	Lambda       float64   `json:"lambda"`
	Gamma        float64   `json:"gamma"`
	GammaEff     float64   `json:"gamma_eff"`
	Significance float64   `json:"significance,omitempty"` // mean |a|/sqrt(C); absent before the first update
	Omega        float64   `json:"omega"`
	Curvature    []float64 `json:"curvature,omitempty"`
	PosteriorVar []float64 `json:"posterior_var,omitempty"`
	Frozen       bool      `json:"frozen,omitempty"`
	// LatencyMs is the op's marginal latency on the device of a
	// latency-aware search (LatencyConfig), which scaled its Lambda.
	LatencyMs float64 `json:"latency_ms,omitempty"`
}

func decision(g *Group, kept bool) VarDecision {
	z, _ := g.Significance()
	return VarDecision{Op: g.Op, Kept: kept, Weights: g.Values(), Lambda: g.Lambda, Gamma: g.Gamma,
		GammaEff: g.GammaEff, Significance: z, Omega: g.Omega, Curvature: g.H, PosteriorVar: g.C, Frozen: g.Frozen,
		LatencyMs: g.CostMs}
}

// Derive thresholds gamma_eff: an op is kept iff gamma_eff > tau (and it
// clears cfg.MinSignificance), an edge iff its switch does the same, at
// least one of its ops is kept and its
// source node is reached; several ops may stay on one edge (they are
// summed). Nodes are visited in topological order, so a node is live iff a
// kept edge from a live node enters it; every live intermediate node feeds
// the cell output (the output concatenates them), so live nodes are
// connected both ways and no isolated node is emitted. If nothing survives
// in a cell type, the op with the largest gamma_eff on an edge out of a
// cell input is kept (marked Forced). A cell type missing from the
// supernet copies the other type's cell (marked CopiedFrom).
func (s *Space) Derive(cfg DeriveConfig) (*Derivation, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if s.tree() != nil {
		return nil, fmt.Errorf("derive: a tree-cell space (use DeriveTree)")
	}
	d := &Derivation{Table: DecisionTable{Threshold: cfg.Threshold, Relative: cfg.Relative, MinSignificance: cfg.MinSignificance}}
	cells := map[string][]models.ProxyEdge{}
	for _, ct := range s.CellTypes() {
		edges, cd := s.deriveCell(ct, cfg)
		cells[ct] = edges
		d.Table.Cells = append(d.Table.Cells, cd)
	}
	types := s.CellTypes()
	if len(types) == 0 {
		return nil, fmt.Errorf("derive: the space has no cells")
	}
	for _, ct := range []string{Normal, Reduce} {
		if _, ok := cells[ct]; !ok {
			cells[ct] = cells[types[0]]
			d.Table.Cells = append(d.Table.Cells, CellDecisions{Type: ct, CopiedFrom: types[0]})
		}
	}
	d.Normal, d.Reduce = cells[Normal], cells[Reduce]
	return d, nil
}

func (s *Space) deriveCell(ct string, cfg DeriveConfig) ([]models.ProxyEdge, CellDecisions) {
	tau := cfg.Threshold
	if cfg.Relative {
		var best float64
		for _, g := range s.Groups {
			if g.CellType == ct && g.Kind == Op && cfg.significant(g) {
				best = math.Max(best, g.GammaEff)
			}
		}
		tau *= best
	}
	cd := CellDecisions{Type: ct, Tau: tau}
	live := make([]bool, s.Nodes+2)
	live[0], live[1] = true, true
	var edges []models.ProxyEdge
	keptOps := func(j, k int) []string {
		var ops []string
		for _, op := range s.Ops {
			if cfg.keeps(s.OpGroup(ct, j, k, op), tau) {
				ops = append(ops, op)
			}
		}
		return ops
	}
	for k := 2; k < s.Nodes+2; k++ {
		for j := 0; j < k; j++ {
			sw := s.SwitchGroup(ct, j, k)
			if sw == nil {
				continue
			}
			ops := keptOps(j, k)
			keep := cfg.keeps(sw, tau) && len(ops) > 0
			ed := EdgeDecision{From: j, To: k}
			if keep && !live[j] {
				keep, ed.Reason = false, fmt.Sprintf("node %d is not reached", j)
			}
			if keep {
				edges = append(edges, models.ProxyEdge{From: j, To: k, Ops: ops})
				live[k] = true
			}
			ed.Kept = keep
			ed.Switch = decision(sw, keep)
			for _, op := range s.Ops {
				g := s.OpGroup(ct, j, k, op)
				ed.Ops = append(ed.Ops, decision(g, keep && cfg.keeps(g, tau)))
				cd.CandidateOp++
			}
			cd.Edges = append(cd.Edges, ed)
		}
	}
	if len(edges) == 0 {
		// Nothing cleared the threshold: keep the strongest single op out of a
		// cell input rather than emit a cell with no node.
		// The most significant op wins (a zeroed op's gamma_eff can be the
		// largest, see DeriveConfig.MinSignificance), then gamma_eff
		// (before the first update every significance is 0).
		bestZ, best, bi, bo := -1.0, -1.0, -1, -1
		for i, ed := range cd.Edges {
			if ed.From >= 2 {
				continue
			}
			for o, op := range ed.Ops {
				if op.Significance > bestZ || op.Significance == bestZ && op.GammaEff > best {
					bestZ, best, bi, bo = op.Significance, op.GammaEff, i, o
				}
			}
		}
		ed := &cd.Edges[bi]
		ed.Kept, ed.Switch.Kept, ed.Ops[bo].Kept = true, true, true
		edges = []models.ProxyEdge{{From: ed.From, To: ed.To, Ops: []string{ed.Ops[bo].Op}}}
		live[ed.To] = true
		cd.Forced = true
	}
	for k := 2; k < s.Nodes+2; k++ {
		if live[k] {
			cd.LiveNodes = append(cd.LiveNodes, k)
		}
	}
	cd.KeptEdges = len(edges)
	for _, e := range edges {
		cd.KeptOps += len(e.Ops)
	}
	return edges, cd
}

// DerivedNetwork builds a proxy network of derived cells: base gives the
// input, classes, stem and node count; cells and channels size the stack
// (a deeper, wider stack than the supernet's for retraining from scratch).
func DerivedNetwork(base models.ProxyConfig, d *Derivation, cells, channels int) (*models.Graph, error) {
	cfg := base
	cfg.Search, cfg.AuxSkip = false, false
	cfg.Ops = nil
	cfg.Cells, cfg.Channels = cells, channels
	cfg.Normal, cfg.Reduce = d.Normal, d.Reduce
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		return nil, fmt.Errorf("derived network: %w", err)
	}
	return g, nil
}
