package compress

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"bayesnas/models"
	"bayesnas/nn"
)

// Report says what Prune did.
type Report struct {
	Removed []int        `json:"removed"` // group indices, ascending
	Widths  []NodeWidth  `json:"widths"`  // every conv, linear and bn, in graph order
	Folds   []Fold       `json:"folds"`
	Lost    []LostSignal `json:"lost,omitempty"`
}

// NodeWidth is a node's channels before and after: input channels read and
// output channels written (a linear's In counts channels, not features).
type NodeWidth struct {
	Node      string `json:"node"`
	Op        string `json:"op"`
	InBefore  int    `json:"in_before"`
	InAfter   int    `json:"in_after"`
	OutBefore int    `json:"out_before"`
	OutAfter  int    `json:"out_after"`
}

// Fold is one removed input channel whose constant value (in the masked
// network, eval mode) was folded into the node that read it.
type Fold struct {
	Node    string  `json:"node"`    // the reader
	Input   string  `json:"input"`   // the value it reads
	Channel int     `json:"channel"` // channel of Input, before pruning
	Value   float64 `json:"value"`   // the constant
	// Into is where it went: "bias" (created when the node had none),
	// or "running_mean of <bn>" (the bn reading the node's output).
	Into string `json:"into"`
	// Exact is false where the fold holds only in the interior: a constant
	// map seen through zero padding is not constant at the borders.
	Exact bool `json:"exact"`
}

// LostSignal is a removed input channel that was not a known constant in
// the masked sense (its producing conv rows were not zero): it is dropped
// with nothing folded, and the pruned network differs from the original.
type LostSignal struct {
	Node    string `json:"node"`
	Input   string `json:"input"`
	Channel int    `json:"channel"`
}

// Prune removes the groups of g with the given indices (ChannelGroups'
// order) under DefaultGroupOptions; see PruneWith.
func Prune(g *models.Graph, params []*nn.Param, remove []int) (*models.Graph, []*nn.Param, *Report, error) {
	return PruneWith(g, params, remove, DefaultGroupOptions())
}

// PruneWith removes the groups with the given indices, refusing protected
// ones under opt, and returns a smaller graph, its parameters (named as
// models.Compile names them, in ParamSpecs order, new tensors) and a report.
// Constants that removed channels carry in the masked network (conv rows and
// bias zero, then BN, ReLU, sums) are folded into the kept channels of the
// convs and linears that read them. Neither g nor params is modified.
func PruneWith(g *models.Graph, params []*nn.Param, remove []int, opt GroupOptions) (*models.Graph, []*nn.Param, *Report, error) {
	a, err := analyze(g)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pruning graph %q: %w", g.Name, err)
	}
	fail := func(format string, args ...any) (*models.Graph, []*nn.Param, *Report, error) {
		return nil, nil, nil, fmt.Errorf("pruning graph %q: "+format, append([]any{g.Name}, args...)...)
	}
	reasons := a.protection(opt)
	gone := make([]bool, len(a.groups))
	for _, gi := range remove {
		if gi < 0 || gi >= len(a.groups) {
			return fail("group %d out of range (the graph has %d groups)", gi, len(a.groups))
		}
		if reasons[gi] != "" {
			return fail("group %d is protected: %s", gi, reasons[gi])
		}
		gone[gi] = true
	}
	p := &pruner{a: a, gone: gone, params: map[string]*nn.Param{}}
	for _, prm := range params {
		p.params[prm.Name] = prm
	}
	specs, err := g.ParamSpecs()
	if err != nil {
		return fail("%v", err)
	}
	for _, s := range specs {
		prm := p.params[s.Name]
		if prm == nil {
			return fail("node %q: no parameter %q", s.Node, s.Name)
		}
		if !slices.Equal(prm.Shape, s.Shape) {
			return fail("node %q: parameter %q has shape %v, the graph says %v", s.Node, s.Name, prm.Shape, s.Shape)
		}
	}
	if err := p.checkKept(); err != nil {
		return fail("%v", err)
	}
	rep := &Report{}
	for gi, r := range gone {
		if r {
			rep.Removed = append(rep.Removed, gi)
		}
	}
	// Work on copies: folds change biases and running means before slicing.
	p.work = map[string][]float32{}
	for _, s := range specs {
		p.work[s.Name] = slices.Clone(p.params[s.Name].Data)
	}
	p.constants()
	newBias, err := p.fold(rep)
	if err != nil {
		return fail("%v", err)
	}
	ng, err := p.rewrite(newBias)
	if err != nil {
		return fail("%v", err)
	}
	out, err := p.slice(ng, newBias)
	if err != nil {
		return fail("%v", err)
	}
	p.widths(rep)
	return ng, out, rep, nil
}

type pruner struct {
	a      *analysis
	gone   []bool // per group
	params map[string]*nn.Param
	work   map[string][]float32 // parameter data being folded into
	konst  []konst              // per slot, for removed slots
}

// konst is the value of a removed channel in the masked network in eval
// mode: a constant map when ok; exact false when that holds only in the
// interior (it passed through zero padding).
type konst struct {
	v     float64
	ok    bool
	exact bool
}

func (p *pruner) removed(s int) bool { return p.gone[p.a.class[s]] }

// kept lists the channels of value v that stay, ascending.
func (p *pruner) kept(v string) []int {
	var out []int
	for i := range p.a.channels(v) {
		if !p.removed(p.a.base[v] + i) {
			out = append(out, i)
		}
	}
	return out
}

// groupsIn lists the removed groups holding channels of v (for errors).
func (p *pruner) groupsIn(v string) []int {
	var out []int
	for i := range p.a.channels(v) {
		if gi := p.a.class[p.a.base[v]+i]; p.gone[gi] && !slices.Contains(out, gi) {
			out = append(out, gi)
		}
	}
	return out
}

// checkKept refuses removals that empty a value or leave groups of a grouped
// conv or a shuffle with different widths.
func (p *pruner) checkKept() error {
	a := p.a
	for _, v := range a.values {
		if len(p.kept(v)) == 0 {
			what := "the graph input"
			if n := a.g.Node(v); n != nil {
				what = fmt.Sprintf("node %q (%s)", v, n.Op)
			}
			return fmt.Errorf("removing groups %v would leave %s with no channel", p.groupsIn(v), what)
		}
	}
	for _, n := range a.g.Nodes {
		var groups int
		switch {
		case n.Op == models.OpConv && n.Attrs.Groups > 1 && !isDepthwise(n, a.channels(n.Inputs[0])):
			groups = n.Attrs.Groups
		case n.Op == models.OpShuffle:
			groups = n.Attrs.Groups
		default:
			continue
		}
		for _, v := range []string{n.Inputs[0], n.Name} {
			if n.Op == models.OpShuffle && v == n.Name {
				continue
			}
			per := a.channels(v) / groups
			var want []int
			for k := range groups {
				var offs []int
				for i := range per {
					if !p.removed(a.base[v] + k*per + i) {
						offs = append(offs, i)
					}
				}
				if k == 0 {
					want = offs
				} else if !slices.Equal(offs, want) {
					return fmt.Errorf("node %q (%s): removing groups %v keeps channels %v of group %d of %q but %v of group 0 (groups must keep equal widths)",
						n.Name, n.Op, p.groupsIn(v), offs, k, v, want)
				}
			}
		}
	}
	return nil
}

func (p *pruner) param(node, slot string) []float32 { return p.work[node+"."+slot] }

// constants computes, in graph order, the masked network's value of every
// removed channel: a conv row with zero weights and bias gives 0, and BN,
// ReLU, pools, sums and channel copies map constants to constants.
func (p *pruner) constants() {
	a := p.a
	p.konst = make([]konst, a.slots)
	for _, n := range a.g.Nodes {
		out, c := a.base[n.Name], a.channels(n.Name)
		in, cin := a.base[n.Inputs[0]], a.channels(n.Inputs[0])
		for j := range c {
			s := out + j
			if !p.removed(s) {
				continue
			}
			var k konst
			switch n.Op {
			case models.OpConv:
				w := p.param(n.Name, "weight")
				row := len(w) / c
				zero := !slices.ContainsFunc(w[j*row:(j+1)*row], func(x float32) bool { return x != 0 })
				var b float64
				if n.Attrs.Bias {
					b = float64(p.param(n.Name, "bias")[j])
				}
				switch {
				case zero:
					k = konst{v: b, ok: true, exact: true}
				case isDepthwise(n, cin) && p.konst[in+j].ok:
					// A depthwise row on a constant map: the sum of its taps,
					// except where the window overlaps the padding.
					sum := 0.0
					for _, x := range w[j*row : (j+1)*row] {
						sum += float64(x)
					}
					ki := p.konst[in+j]
					k = konst{v: ki.v*sum + b, ok: true, exact: ki.exact && n.Attrs.Pad == 0}
				}
			case models.OpBN:
				ki := p.konst[in+j]
				if ki.ok {
					gamma, beta := float64(p.param(n.Name, "weight")[j]), float64(p.param(n.Name, "bias")[j])
					mean, vr := float64(p.param(n.Name, "running_mean")[j]), float64(p.param(n.Name, "running_var")[j])
					// float32 eps, as nn's BatchNorm uses it.
					k = konst{v: gamma*(ki.v-mean)/math.Sqrt(vr+float64(float32(n.Attrs.Eps))) + beta, ok: true, exact: ki.exact}
				}
			case models.OpReLU:
				k = p.konst[in+j]
				k.v = max(k.v, 0)
			case models.OpMaxPool, models.OpGAP, models.OpDropout, models.OpDropPath:
				// Max pooling pads with -inf; eval-mode dropouts are identities.
				k = p.konst[in+j]
			case models.OpAvgPool:
				k = p.konst[in+j]
				k.exact = k.exact && !(n.Attrs.CountIncludePad && n.Attrs.Pad > 0)
			case models.OpAdd, models.OpWSum:
				k = konst{ok: true, exact: true}
				for xi, x := range n.Inputs {
					kx := p.konst[a.base[x]+j]
					w := 1.0
					if n.Op == models.OpWSum {
						w = float64(p.param(n.Name, fmt.Sprintf("w%d", xi))[0])
					}
					k = konst{v: k.v + w*kx.v, ok: k.ok && kx.ok, exact: k.exact && kx.exact}
				}
			case models.OpConcat:
				off := 0
				for _, x := range n.Inputs {
					if cx := a.channels(x); j < off+cx {
						k = p.konst[a.base[x]+j-off]
						break
					} else {
						off += cx
					}
				}
			case models.OpSlice:
				k = p.konst[in+n.Attrs.Start+j]
			case models.OpShuffle:
				groups := n.Attrs.Groups
				per := cin / groups
				k = p.konst[in+(j%groups)*per+j/groups]
			case models.OpPadCh:
				if j < cin {
					k = p.konst[in+j]
				} else {
					k = konst{ok: true, exact: true}
				}
			}
			p.konst[s] = k
		}
	}
}

// fold adds, for every conv or linear reading a removed constant channel,
// W[:, i]*constant to its kept outputs: into its bias, or, for a conv with
// no bias whose output only a bn reads, into that bn's running mean; a bias
// is created otherwise. It returns the biases created.
func (p *pruner) fold(rep *Report) (map[string][]float32, error) {
	a := p.a
	created := map[string][]float32{}
	readers := readersOf(a.g)
	for _, n := range a.g.Nodes {
		if n.Op != models.OpConv && n.Op != models.OpLinear {
			continue
		}
		x := n.Inputs[0]
		in, cin := a.base[x], a.channels(x)
		if n.Op == models.OpConv && isDepthwise(n, cin) {
			continue // its removed inputs are its removed outputs
		}
		c := a.channels(n.Name)
		groups := 1
		if n.Op == models.OpConv {
			groups = n.Attrs.Groups
		}
		w := p.param(n.Name, "weight")
		row := len(w) / c // weights per output: (cin/groups)*k*k, or cin*h*w for a linear
		perIn, perOut := cin/groups, c/groups
		taps := row / perIn // k*k, or the features per channel
		delta := make([]float64, c)
		folded := false
		for i := range cin {
			s := in + i
			if !p.removed(s) {
				continue
			}
			k := p.konst[s]
			if !k.ok {
				rep.Lost = append(rep.Lost, LostSignal{Node: n.Name, Input: x, Channel: i})
				continue
			}
			if k.v == 0 {
				continue
			}
			exact := k.exact && (n.Op == models.OpLinear || n.Attrs.Pad == 0)
			grp, col := i/perIn, i%perIn
			for o := grp * perOut; o < (grp+1)*perOut; o++ {
				sum := 0.0
				for _, wt := range w[o*row+col*taps : o*row+(col+1)*taps] {
					sum += float64(wt)
				}
				delta[o] += sum * k.v
			}
			folded = true
			rep.Folds = append(rep.Folds, Fold{Node: n.Name, Input: x, Channel: i, Value: k.v, Exact: exact})
		}
		if !folded {
			continue
		}
		into := "bias"
		rs := readers[n.Name]
		switch {
		case n.Attrs.Bias:
			b := p.param(n.Name, "bias")
			for o := range c {
				b[o] += float32(delta[o])
			}
		case n.Op == models.OpConv && len(rs) == 1 && rs[0].Op == models.OpBN && n.Name != a.g.Output:
			// A bias before an eval-mode BN is a shift of its running mean
			// (and in training mode the batch mean removes it anyway), so the
			// conv stays bias-free, as BN-folding exporters expect.
			m := p.param(rs[0].Name, "running_mean")
			for o := range c {
				m[o] -= float32(delta[o])
			}
			into = fmt.Sprintf("running_mean of %s", rs[0].Name)
		default:
			b := make([]float32, c)
			for o := range c {
				b[o] = float32(delta[o])
			}
			created[n.Name] = b
			p.work[n.Name+".bias"] = b
		}
		for f := len(rep.Folds) - 1; f >= 0 && rep.Folds[f].Node == n.Name; f-- {
			rep.Folds[f].Into = into
		}
	}
	return created, nil
}

// rewrite returns a copy of the graph with the new widths.
func (p *pruner) rewrite(newBias map[string][]float32) (*models.Graph, error) {
	a := p.a
	ng := *a.g
	ng.Input.Shape = slices.Clone(a.g.Input.Shape)
	ng.Nodes = make([]*models.Node, len(a.g.Nodes))
	for i, n := range a.g.Nodes {
		cp := *n
		cp.Inputs = slices.Clone(n.Inputs)
		kOut := len(p.kept(n.Name))
		switch n.Op {
		case models.OpConv:
			if isDepthwise(n, a.channels(n.Inputs[0])) {
				cp.Attrs.Groups = kOut
			}
			cp.Attrs.OutChannels = kOut
			if _, ok := newBias[n.Name]; ok {
				cp.Attrs.Bias = true
			}
		case models.OpLinear:
			if _, ok := newBias[n.Name]; ok {
				cp.Attrs.Bias = true
			}
		case models.OpPadCh:
			cp.Attrs.OutChannels = kOut
		case models.OpSlice:
			before := 0
			for _, i := range p.kept(n.Inputs[0]) {
				if i < n.Attrs.Start {
					before++
				}
			}
			cp.Attrs.Start, cp.Attrs.End = before, before+kOut
		}
		ng.Nodes[i] = &cp
	}
	if err := ng.Validate(); err != nil {
		return nil, fmt.Errorf("the pruned graph is invalid: %w", err)
	}
	return &ng, nil
}

// slice cuts every parameter of the pruned graph from the folded copies.
func (p *pruner) slice(ng *models.Graph, newBias map[string][]float32) ([]*nn.Param, error) {
	a := p.a
	specs, err := ng.ParamSpecs()
	if err != nil {
		return nil, err
	}
	var out []*nn.Param
	for _, s := range specs {
		n := a.g.Node(s.Node)
		src := p.work[s.Name]
		kind := s.Kind
		if old := p.params[s.Name]; old != nil {
			kind = old.Kind
		}
		var data []float32
		keptOut := p.kept(n.Name)
		slot := s.Name[len(n.Name)+1:]
		switch {
		case n.Op == models.OpConv && slot == "weight":
			cin := a.channels(n.Inputs[0])
			c := a.channels(n.Name)
			row := len(src) / c
			taps := n.Attrs.Kernel * n.Attrs.Kernel
			cols := []int{0}
			if !isDepthwise(n, cin) {
				// Equal widths per group (checkKept): group 0's kept offsets.
				cols = cols[:0]
				for _, i := range p.kept(n.Inputs[0]) {
					if i < cin/n.Attrs.Groups {
						cols = append(cols, i)
					}
				}
			}
			for _, o := range keptOut {
				for _, col := range cols {
					data = append(data, src[o*row+col*taps:o*row+(col+1)*taps]...)
				}
			}
		case n.Op == models.OpLinear && slot == "weight":
			c := a.channels(n.Name)
			row := len(src) / c
			taps := row / a.channels(n.Inputs[0])
			for o := range c {
				for _, i := range p.kept(n.Inputs[0]) {
					data = append(data, src[o*row+i*taps:o*row+(i+1)*taps]...)
				}
			}
		case n.Op == models.OpConv || n.Op == models.OpBN || (n.Op == models.OpLinear && slot == "bias"):
			if src == nil {
				src = newBias[n.Name]
			}
			for _, o := range keptOut {
				data = append(data, src[o])
			}
		default: // wsum weights
			data = slices.Clone(src)
		}
		prm := nn.NewParam(s.Name, kind, s.Shape...)
		if len(data) != len(prm.Data) {
			return nil, fmt.Errorf("node %q: parameter %q sliced to %d values, its shape %v holds %d", n.Name, s.Name, len(data), s.Shape, len(prm.Data))
		}
		copy(prm.Data, data)
		out = append(out, prm)
	}
	return out, nil
}

// widths fills the report's per-node channels.
func (p *pruner) widths(rep *Report) {
	a := p.a
	for _, n := range a.g.Nodes {
		switch n.Op {
		case models.OpConv, models.OpLinear, models.OpBN:
			x := n.Inputs[0]
			rep.Widths = append(rep.Widths, NodeWidth{Node: n.Name, Op: n.Op,
				InBefore: a.channels(x), InAfter: len(p.kept(x)),
				OutBefore: a.channels(n.Name), OutAfter: len(p.kept(n.Name))})
		}
	}
	sort.Ints(rep.Removed)
}
