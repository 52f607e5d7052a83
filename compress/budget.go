package compress

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"bayesnas/models"
	"bayesnas/nn"
)

// LatencyModel prices a network on the target device: pipeline adapts a
// device profile (hwprofile) to it, and tests use a hand-made one.
type LatencyModel interface {
	LatencyMs(g *models.Graph, params []*nn.Param) (float64, error)
}

// Budget is a latency budget: absolute milliseconds, or a fraction of the
// unpruned network's latency (measured on the device when the caller times
// it, predicted otherwise: Of takes either).
type Budget struct {
	Ms       float64 // > 0: absolute
	Fraction float64 // > 0: of the unpruned latency
}

// ParseBudget reads "2.5ms" or "0.5x".
func ParseBudget(s string) (Budget, error) {
	t := strings.TrimSpace(s)
	var b Budget
	var err error
	switch {
	case strings.HasSuffix(t, "ms"):
		b.Ms, err = strconv.ParseFloat(strings.TrimSuffix(t, "ms"), 64)
		if err == nil && !(b.Ms > 0 && !math.IsInf(b.Ms, 0)) {
			err = fmt.Errorf("not a positive number of milliseconds")
		}
	case strings.HasSuffix(t, "x"):
		b.Fraction, err = strconv.ParseFloat(strings.TrimSuffix(t, "x"), 64)
		if err == nil && !(b.Fraction > 0 && b.Fraction <= 1) {
			err = fmt.Errorf("a fraction of the unpruned latency must be in (0, 1]")
		}
	default:
		err = fmt.Errorf("want milliseconds (2.5ms) or a fraction of the unpruned latency (0.5x)")
	}
	if err != nil {
		return Budget{}, fmt.Errorf("budget %q: %w", s, err)
	}
	return b, nil
}

// Of returns the budget in milliseconds for a network whose unpruned
// latency is baseMs.
func (b Budget) Of(baseMs float64) float64 {
	if b.Ms > 0 {
		return b.Ms
	}
	return b.Fraction * baseMs
}

func (b Budget) String() string {
	if b.Ms > 0 {
		return strconv.FormatFloat(b.Ms, 'g', -1, 64) + "ms"
	}
	return strconv.FormatFloat(b.Fraction, 'g', -1, 64) + "x"
}

// layer is the set of prunable groups produced by the same weights: the
// groups whose produce members name the same nodes. Widths are rounded per
// layer.
type layer struct {
	key      string // the producing nodes, joined
	node     string // the first producing node, whose width is rounded
	groups   []int  // group indices, by score ascending
	perGroup int    // channels of node one group holds
	width    int    // node's output channels
}

// layers collects the prunable groups that have producing weights.
func layers(g *models.Graph, groups []Group) ([]*layer, error) {
	shapes, err := g.InferShapes()
	if err != nil {
		return nil, err
	}
	byKey := map[string]*layer{}
	var order []string
	for _, gr := range groups {
		if !gr.Prunable {
			continue
		}
		var nodes []string
		count := map[string]int{}
		for _, m := range gr.Members {
			if m.Role == RoleProduce {
				if count[m.Node] == 0 {
					nodes = append(nodes, m.Node)
				}
				count[m.Node]++
			}
		}
		if len(nodes) == 0 {
			continue // padded zeros only: nothing computes them
		}
		slices.Sort(nodes)
		key := strings.Join(nodes, "+")
		l := byKey[key]
		if l == nil {
			l = &layer{key: key, node: nodes[0], perGroup: count[nodes[0]], width: shapes[nodes[0]][0]}
			byKey[key] = l
			order = append(order, key)
		}
		l.groups = append(l.groups, gr.Index)
	}
	out := make([]*layer, len(order))
	for i, k := range order {
		out[i] = byKey[k]
	}
	return out, nil
}

// GroupL1 scores each group by the mean absolute value of the weights that
// produce its channels (Li et al. 2017's filter norm, averaged so that
// layers of different fan-in compare).
func GroupL1(groups []Group, params []*nn.Param, g *models.Graph) []float64 {
	byName := paramsByName(params)
	scores := make([]float64, len(groups))
	for i, gr := range groups {
		var sum float64
		var n int
		for _, m := range gr.Members {
			if m.Role != RoleProduce {
				continue
			}
			w := byName[m.Node+".weight"]
			if w == nil || len(w.Shape) == 0 {
				continue
			}
			per := len(w.Data) / w.Shape[0]
			for _, v := range w.Data[m.Index*per : (m.Index+1)*per] {
				sum += math.Abs(float64(v))
			}
			n += per
		}
		if n > 0 {
			scores[i] = sum / float64(n)
		}
	}
	return scores
}

// BudgetOptions configure a selection of groups to a latency budget.
type BudgetOptions struct {
	Latency  LatencyModel
	BudgetMs float64
	// Multiple rounds every layer's remaining width to a multiple of it
	// where the layer allows (default 8: a width of 7 can be slower than 8).
	Multiple int
	Groups   GroupOptions
}

// Selection is the outcome of a selection: the groups removed and the
// predicted latencies.
type Selection struct {
	Method    string  `json:"method"`
	Removed   []int   `json:"removed_groups"`
	BaseMs    float64 `json:"predicted_ms_before"`
	PrunedMs  float64 `json:"predicted_ms_after"`
	BudgetMs  float64 `json:"budget_ms"`
	MetBudget bool    `json:"met_budget"`
	Steps     int     `json:"steps"`
}

// keepCount is how many channels of a layer of width w to keep for a
// fraction f, rounded up to the multiple (never below one group's worth).
func keepCount(w, perGroup, multiple int, f float64) int {
	k := int(math.Ceil(f * float64(w)))
	if multiple > 0 {
		k = (k + multiple - 1) / multiple * multiple
	}
	k = min(max(k, perGroup), w)
	return k - k%perGroup
}

// floor is the fewest channels a layer keeps: one multiple (or its whole
// width when narrower), in whole groups.
func floor(l *layer, multiple int) int {
	f := min(multiple, l.width)
	return max(f-f%l.perGroup, l.perGroup)
}

// removeFor lists the groups each layer drops to keep keep(layer) channels,
// the lowest scores first.
func removeFor(ls []*layer, keep func(l *layer) int) []int {
	var rm []int
	for _, l := range ls {
		drop := (l.width - keep(l)) / l.perGroup
		rm = append(rm, l.groups[:min(drop, len(l.groups))]...)
	}
	slices.Sort(rm)
	return rm
}

func (o *BudgetOptions) prepare(g *models.Graph, params []*nn.Param, scores []float64) ([]*layer, []Group, float64, error) {
	if o.Multiple <= 0 {
		o.Multiple = 8
	}
	groups, err := ChannelGroups(g, o.Groups)
	if err != nil {
		return nil, nil, 0, err
	}
	if scores == nil {
		scores = GroupL1(groups, params, g)
	}
	ls, err := layers(g, groups)
	if err != nil {
		return nil, nil, 0, err
	}
	for _, l := range ls {
		sort.SliceStable(l.groups, func(a, b int) bool { return scores[l.groups[a]] < scores[l.groups[b]] })
	}
	base, err := o.Latency.LatencyMs(g, params)
	if err != nil {
		return nil, nil, 0, err
	}
	return ls, groups, base, nil
}

// errStructure marks a removal the graph cannot take, as opposed to a
// network the latency model cannot price.
type errStructure struct{ error }

func (e errStructure) Unwrap() error { return e.error }

// predict prunes rm and prices the result.
func (o *BudgetOptions) predict(g *models.Graph, params []*nn.Param, rm []int) (float64, error) {
	pg, pp, _, err := PruneWith(g, params, rm, o.Groups)
	if err != nil {
		return 0, errStructure{err}
	}
	ms, err := o.Latency.LatencyMs(pg, pp)
	if err != nil {
		return 0, fmt.Errorf("pricing the pruned network: %w", err)
	}
	return ms, nil
}

// Uniform scales every prunable layer to the same fraction of its width
// (rounded to the multiple; the channels with the lowest L1 go first),
// the largest fraction whose predicted latency meets the budget, found by
// bisection: uniform width scaling, the baseline any structured method
// must beat.
func Uniform(g *models.Graph, params []*nn.Param, opt BudgetOptions) (*Selection, error) {
	ls, _, base, err := opt.prepare(g, params, nil)
	if err != nil {
		return nil, err
	}
	sel := &Selection{Method: "uniform", BaseMs: base, BudgetMs: opt.BudgetMs, PrunedMs: base}
	if base <= opt.BudgetMs {
		sel.MetBudget = true
		return sel, nil
	}
	at := func(f float64) []int {
		return removeFor(ls, func(l *layer) int {
			return max(keepCount(l.width, l.perGroup, opt.Multiple, f), floor(l, opt.Multiple))
		})
	}
	lo, hi := 0.0, 1.0 // lo meets the budget (or is the floor), hi does not
	loMs := math.Inf(1)
	for range 20 {
		mid := (lo + hi) / 2
		ms, err := opt.predict(g, params, at(mid))
		if err != nil {
			return nil, err
		}
		sel.Steps++
		if ms <= opt.BudgetMs {
			lo, loMs = mid, ms
		} else {
			hi = mid
		}
	}
	if math.IsInf(loMs, 1) {
		ms, err := opt.predict(g, params, at(0))
		if err != nil {
			return nil, err
		}
		sel.Removed, sel.PrunedMs = at(0), ms
		return sel, nil
	}
	sel.Removed, sel.PrunedMs, sel.MetBudget = at(lo), loMs, true
	return sel, nil
}

// Greedy removes, one layer step at a time, the group with the lowest
// score over all layers (a step drops enough groups of that layer to reach
// the next multiple), until the predicted latency meets the budget or
// nothing more can go. With GroupL1 scores it is L1-norm filter pruning
// (Li et al. 2017) over coupled groups, globally ranked.
func Greedy(g *models.Graph, params []*nn.Param, scores []float64, method string, opt BudgetOptions) (*Selection, error) {
	ls, groups, base, err := opt.prepare(g, params, scores)
	if err != nil {
		return nil, err
	}
	if scores == nil {
		// Filter norms differ in scale from layer to layer (He
		// initialisation alone scales them by fan-in): rank filters by their
		// norm relative to their layer's mean, or whole layers go first.
		scores = GroupL1(groups, params, g)
		for _, l := range ls {
			mean := 0.0
			for _, i := range l.groups {
				mean += scores[i]
			}
			mean /= float64(len(l.groups))
			for _, i := range l.groups {
				if mean > 0 {
					scores[i] /= mean
				}
			}
		}
	}
	sel := &Selection{Method: method, BaseMs: base, BudgetMs: opt.BudgetMs, PrunedMs: base}
	kept := map[*layer]int{}
	for _, l := range ls {
		kept[l] = l.width
	}
	dropped := map[*layer]int{} // groups removed per layer, from the front of l.groups
	frozen := map[*layer]bool{} // layers whose next step the graph does not allow
	for sel.PrunedMs > opt.BudgetMs {
		// The layer whose next group scores lowest and can still shrink.
		var best *layer
		for _, l := range ls {
			d := dropped[l]
			if frozen[l] || d >= len(l.groups) || kept[l]-l.perGroup < floor(l, opt.Multiple) {
				continue
			}
			if best == nil || scores[l.groups[d]] < scores[best.groups[dropped[best]]] {
				best = l
			}
		}
		if best == nil {
			break
		}
		// Down to the next multiple below, never under the floor.
		target := max((kept[best]-1)/opt.Multiple*opt.Multiple, floor(best, opt.Multiple))
		n := max(1, (kept[best]-target)/best.perGroup)
		n = min(n, len(best.groups)-dropped[best])
		dropped[best] += n
		kept[best] -= n * best.perGroup
		rm := removeFor(ls, func(l *layer) int { return l.width - dropped[l]*l.perGroup })
		ms, err := opt.predict(g, params, rm)
		var structural errStructure
		if errors.As(err, &structural) {
			// A removal the graph cannot take (it would empty a value a
			// concat or slice needs): undo it and leave the layer be.
			dropped[best] -= n
			kept[best] += n * best.perGroup
			frozen[best] = true
			continue
		}
		if err != nil {
			return nil, err // the device cannot price it: never a silent default
		}
		sel.Steps++
		sel.Removed, sel.PrunedMs = rm, ms
	}
	sel.MetBudget = sel.PrunedMs <= opt.BudgetMs
	return sel, nil
}
