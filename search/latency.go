package search

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"bayesnas/models"
	"bayesnas/nn"
)

// LatencyModel prices a network on the target device: pipeline adapts a
// device profile (hwprofile) to it, pricing the derived network as it will
// be retrained, and tests use a hand-made one. (compress.LatencyModel has
// the same method, so one adapter serves both.)
type LatencyModel interface {
	LatencyMs(g *models.Graph, params []*nn.Param) (float64, error)
}

// LatencyConfig makes the search device-aware (ProxylessNAS's point: the
// ops worth keeping depend on what they cost on the target). The
// reweighted prior takes it naturally: an op group's penalty weight is
//
//	lambda_g = lambda_op * (1 + scale * cost_g / mean cost)
//
// where cost_g is the group's marginal latency on the device at its
// position (the network with every op on every edge, less that op in every
// cell of the group), so an op that costs more milliseconds there needs
// more evidence to stay. Switches keep lambda_switch (an edge costs what
// its ops cost). With TargetMs the scale follows the derived network's
// predicted latency after every update (multiplied by predicted/target,
// within [0.5, 2]), and the derivation then drops the kept ops with the
// least significance per millisecond until the prediction meets the
// target. The zero value leaves the search as it was.
type LatencyConfig struct {
	// Profile is the device profile's path and ProfileHash its content
	// hash (set by the caller that reads it): a resume against a profile
	// that prices differently is refused as another configuration.
	Profile     string `json:"profile,omitempty"`
	ProfileHash string `json:"profile_hash,omitempty"`
	// Weight is the starting scale (1 when only a target is given).
	Weight   float64 `json:"weight,omitempty"`
	TargetMs float64 `json:"target_ms,omitempty"`
	// Params are builder parameters laid over the derived network's before
	// it is priced (model.params of its retraining: {channels: 16} prices
	// the stack that will be deployed, not the search's); the pipeline sets
	// them to retrain.params.
	Params map[string]any `json:"params,omitempty"`
}

// On says whether the search prices its ops.
func (c LatencyConfig) On() bool { return c.Weight > 0 || c.TargetMs > 0 }

func (c LatencyConfig) validate() error {
	switch {
	case !(c.Weight >= 0) || math.IsInf(c.Weight, 0):
		return fmt.Errorf("latency.weight = %g, want a finite value >= 0", c.Weight)
	case !(c.TargetMs >= 0) || math.IsInf(c.TargetMs, 0):
		return fmt.Errorf("latency.target_ms = %g, want a finite value >= 0", c.TargetMs)
	case c.On() && c.Profile == "":
		return fmt.Errorf("latency: weight or target_ms set without a device profile (latency.profile)")
	}
	return nil
}

// startScale is the scale before any update.
func (c LatencyConfig) startScale() float64 {
	if c.Weight > 0 {
		return c.Weight
	}
	return 1
}

// Scale bounds: one update moves the scale by at most 2x either way, and
// it stays within [1e-3, 1e3] of the start.
const (
	scaleStep = 2
	scaleSpan = 1e3
)

// LatencyFile is the search's latency report in its run directory.
const LatencyFile = "search_latency.json"

// LatencyReport is the derived network's latency as the search predicted
// it (search_latency.json; the pipeline adds the retrained network's
// latency measured on the device).
type LatencyReport struct {
	Profile     string  `json:"profile"`
	ProfileHash string  `json:"profile_hash"`
	TargetMs    float64 `json:"target_ms,omitempty"`
	PredictedMs float64 `json:"predicted_ms"`
	// ThresholdMs is the prediction of the derivation by the thresholds
	// alone, before ops were dropped for the target: what the search's
	// penalties produced, and what moves the scale.
	ThresholdMs float64 `json:"threshold_ms"`
	// AllOpsMs is the network with every candidate op on every edge: what
	// the op costs are marginal to.
	AllOpsMs float64 `json:"all_ops_ms"`
	// Met says the prediction is within the target (true without one).
	Met bool `json:"met"`
	// Scale is the latency scale of the last update.
	Scale float64 `json:"scale"`
	// Dropped are the op groups the derivation dropped to meet the target,
	// in the order dropped.
	Dropped []string `json:"dropped,omitempty"`
	// MeasuredMs and MeasuredP90Ms: the retrained network timed on the
	// device (pipeline), with the device and how it was timed.
	MeasuredMs    float64 `json:"measured_ms,omitempty"`
	MeasuredP90Ms float64 `json:"measured_p90_ms,omitempty"`
	// MeasuredMet says the measured latency is within the target (set
	// with MeasuredMs when there is a target): the target is priced on the
	// profile, and its error on one network can put a network predicted
	// under it a few percent over it on the device.
	MeasuredMet *bool  `json:"measured_met,omitempty"`
	Device      string `json:"device,omitempty"`
	Statistic   string `json:"statistic,omitempty"`
}

// allOps is the derivation that keeps every op on every edge except those
// in skip: the network the op costs are marginal to.
func (s *searcher) allOps(skip map[*Group]bool) (*models.Graph, error) {
	if tc := s.space.tree(); tc != nil {
		var cells []models.TreeCell
		for _, name := range tc.order {
			cg := tc.byName[name]
			cell := models.TreeCell{Edges: make([][]string, len(cg.edges))}
			for i, e := range cg.edges {
				for k, oi := range e.ops {
					if !skip[tc.Groups[oi]] {
						cell.Edges[i] = append(cell.Edges[i], tc.Ops[k])
					}
				}
			}
			cells = append(cells, cell.Pruned())
		}
		base := s.cfg.Tree
		base.Search, base.Ops, base.Cells = false, nil, nil
		return DerivedTreeNetwork(base, cells...)
	}
	d := &Derivation{}
	for _, ct := range []string{Normal, Reduce} {
		var edges []models.ProxyEdge
		for k := 2; k < s.space.Nodes+2; k++ {
			for j := range k {
				var ops []string
				for _, op := range s.space.Ops {
					if g := s.space.OpGroup(ct, j, k, op); g != nil && !skip[g] {
						ops = append(ops, op)
					}
				}
				if len(ops) > 0 {
					edges = append(edges, models.ProxyEdge{From: j, To: k, Ops: ops})
				}
			}
		}
		if ct == Normal {
			d.Normal = edges
		} else {
			d.Reduce = edges
		}
	}
	return DerivedNetwork(s.cfg.Space, d, s.cfg.Space.Cells, s.cfg.Space.Channels)
}

// priceOps sets every op group's CostMs: its marginal latency on the
// device (0 where removing it saves nothing: latency is not monotone).
func (s *searcher) priceOps() error {
	all, err := s.allOps(nil)
	if err != nil {
		return fmt.Errorf("search: pricing ops: %w", err)
	}
	base, err := s.lat.LatencyMs(all, nil)
	if err != nil {
		return fmt.Errorf("search: pricing the network with every op: %w", err)
	}
	s.allOpsMs = base
	for _, g := range s.space.Groups {
		if g.Kind != Op {
			continue
		}
		less, err := s.allOps(map[*Group]bool{g: true})
		if err != nil {
			return fmt.Errorf("search: pricing op group %s: %w", g.Name, err)
		}
		ms, err := s.lat.LatencyMs(less, nil)
		if err != nil {
			return fmt.Errorf("search: pricing op group %s: %w", g.Name, err)
		}
		g.CostMs = max(base-ms, 0)
	}
	return nil
}

// setLambdas scales every op group's penalty weight by its cost at the
// current scale (see LatencyConfig).
func (s *searcher) setLambdas() {
	var sum float64
	var n int
	for _, g := range s.space.Groups {
		if g.Kind == Op {
			sum += g.CostMs
			n++
		}
	}
	if n == 0 || sum <= 0 {
		return
	}
	mean := sum / float64(n)
	for _, g := range s.space.Groups {
		if g.Kind == Op {
			g.Lambda = s.cfg.LambdaOp * (1 + s.pos.LatencyScale*g.CostMs/mean)
		}
	}
}

// adaptScale moves the latency scale towards the target after an update:
// a derivation by the thresholds predicted over the target raises every
// op's latency penalty, one under it lowers them. (The prediction after
// the ops dropped for the target always meets it and says nothing of
// whether the penalties are strong enough.)
func (s *searcher) adaptScale(predictedMs float64) {
	lc := s.cfg.Latency
	if lc.TargetMs <= 0 || predictedMs <= 0 {
		return
	}
	k := min(max(predictedMs/lc.TargetMs, 1/float64(scaleStep)), scaleStep)
	start := lc.startScale()
	s.pos.LatencyScale = min(max(s.pos.LatencyScale*k, start/scaleSpan), start*scaleSpan)
	s.setLambdas()
}

// keptOpGroups lists the op groups the current derivation keeps.
func (s *searcher) keptOpGroups() []*Group {
	var kept []*Group
	if d := s.r.TreeDerivation; d != nil && s.space.tree() != nil {
		for ci, name := range d.Names {
			for i, ops := range d.Cells[ci].Edges {
				for _, op := range ops {
					if g := s.space.TreeOpGroup(name, i, op); g != nil {
						kept = append(kept, g)
					}
				}
			}
		}
		return kept
	}
	if d := s.r.Derivation; d != nil {
		for _, c := range d.Table.Cells {
			if c.CopiedFrom != "" {
				continue
			}
			for _, e := range c.Edges {
				for _, o := range e.Ops {
					if o.Kept {
						kept = append(kept, s.space.OpGroup(c.Type, e.From, e.To, o.Op))
					}
				}
			}
		}
	}
	return kept
}

// deriveUnderTarget derives with cfg, then, while the derived network's
// predicted latency exceeds the target, drops the kept op with the least
// posterior significance per millisecond (the most costly first among
// equals) and derives again. Ops that cost nothing are never dropped; when
// only they remain the report says the target is not met.
func (s *searcher) deriveUnderTarget(cfg DeriveConfig) ([]cellCount, error) {
	lc := s.cfg.Latency
	rep := &LatencyReport{Profile: lc.Profile, ProfileHash: lc.ProfileHash, TargetMs: lc.TargetMs,
		AllOpsMs: s.allOpsMs, Scale: s.pos.LatencyScale}
	drop := map[*Group]bool{}
	cfg.drop = &drop
	for {
		counts, err := s.deriveWith(cfg)
		if err != nil {
			return nil, err
		}
		g, err := s.derivedNetwork()
		if err != nil {
			return nil, err
		}
		if rep.PredictedMs, err = s.lat.LatencyMs(g, nil); err != nil {
			return nil, fmt.Errorf("search: pricing the derived network: %w", err)
		}
		if len(rep.Dropped) == 0 {
			rep.ThresholdMs = rep.PredictedMs
		}
		rep.Met = lc.TargetMs <= 0 || rep.PredictedMs <= lc.TargetMs
		if rep.Met {
			s.r.Latency = rep
			return counts, nil
		}
		var cands []*Group
		for _, g := range s.keptOpGroups() {
			if g.CostMs > 0 && !drop[g] {
				cands = append(cands, g)
			}
		}
		if len(cands) == 0 {
			s.r.Latency = rep
			return counts, nil
		}
		worst := slices.MinFunc(cands, func(a, b *Group) int {
			za, _ := a.Significance()
			zb, _ := b.Significance()
			if c := cmp.Compare(za/a.CostMs, zb/b.CostMs); c != 0 {
				return c
			}
			return cmp.Compare(b.CostMs, a.CostMs)
		})
		drop[worst] = true
		rep.Dropped = append(rep.Dropped, worst.Name)
	}
}
