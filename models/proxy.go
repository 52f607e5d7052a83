package models

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
)

// Candidate ops of the proxy (DARTS/SNAS) cell space. The zero op is not a
// candidate: it is the edge switch of the supernet.
const (
	ProxySep3 = "sep_conv_3x3"
	ProxySep5 = "sep_conv_5x5"
	ProxyDil3 = "dil_conv_3x3"
	ProxyDil5 = "dil_conv_5x5"
	ProxyMax3 = "max_pool_3x3"
	ProxyAvg3 = "avg_pool_3x3"
	ProxySkip = "skip_connect"
)

// ProxyOps lists every candidate op in the supernet's order.
var ProxyOps = []string{ProxySep3, ProxySep5, ProxyDil3, ProxyDil5, ProxyMax3, ProxyAvg3, ProxySkip}

// ProxyEdge is one edge of a cell: nodes 0 and 1 are the cell inputs
// (outputs of the cell before the previous one and of the previous one),
// nodes 2.. are the intermediate nodes; From < To. Ops are summed.
type ProxyEdge struct {
	From int      `json:"from"`
	To   int      `json:"to"`
	Ops  []string `json:"ops"`
}

// ProxyConfig sizes a stack of proxy cells: stem, Cells cells (reduction
// cells at Cells/3 and 2*Cells/3, as DARTS), global average pool, linear.
//
// With Search set the graph is the supernet: every edge (j,k), j<k, carries
// every op of Ops (Normal and Reduce must be empty), and
//
//	edge(j,k) = switch[j,k] * (sum_o w[j,k,o] * o(x_j))
//
// is two wsum nodes: "<edge>.mix" (one weight per op, inputs in Ops order,
// params <edge>.mix.w<i>) and "<edge>.switch" (one input, param
// <edge>.switch.w0). The switch thus scales the edge OUTPUT (METHOD.md
// section 1). Pooling ops are followed by a BN, as in DARTS' MixedOp, so
// that their scale is comparable with the conv ops' BN-ended outputs.
//
// Without Search the graph is a derived network: Normal and Reduce list the
// kept edges and their ops, summed with add and no architecture weights. A
// node no edge reaches is left out of the cell output (and its out-edges
// must not exist); at least one node must remain.
type ProxyConfig struct {
	Input          [3]int `json:"input"` // C,H,W
	Classes        int    `json:"classes"`
	Channels       int    `json:"channels"`        // channels of the first cells (DARTS: 16)
	Cells          int    `json:"cells"`           // DARTS search: 8, evaluation: 20
	Nodes          int    `json:"nodes"`           // intermediate nodes per cell (4)
	StemMultiplier int    `json:"stem_multiplier"` // stem channels = StemMultiplier*Channels (3)
	StemStride     int    `json:"stem_stride"`     // 1; 2 quarters the cost of every cell
	Search         bool   `json:"search"`
	// AuxSkip (search only) adds to every stride-1 edge an identity path
	// scaled by a weight beta that is not an architecture variable: the
	// search decays it from 1 to 0 (DARTS-, Chu et al. 2021), so that the
	// easier optimisation a residual path gives the supernet is not credited
	// to the skip_connect candidate.
	AuxSkip bool        `json:"aux_skip,omitempty"`
	Ops     []string    `json:"ops,omitempty"` // supernet candidates; empty = ProxyOps
	Normal  []ProxyEdge `json:"normal,omitempty"`
	Reduce  []ProxyEdge `json:"reduce,omitempty"`
}

// ProxySupernetDefault is the small Fashion-MNIST supernet: 5 cells of
// width 8 after a stride-2 stem (14x14 maps in the first cells), so that a
// search fits in minutes on two cores.
func ProxySupernetDefault() ProxyConfig {
	return ProxyConfig{Input: [3]int{1, 28, 28}, Classes: 10, Channels: 8, Cells: 5, Nodes: 4,
		StemMultiplier: 3, StemStride: 2, Search: true}
}

// ProxySpace describes where the architecture variables of a supernet are.
type ProxySpace struct {
	Ops   []string         `json:"ops"`
	Nodes int              `json:"nodes"`
	Cells []ProxySpaceCell `json:"cells"`
}

// ProxySpaceCell is one cell of a supernet.
type ProxySpaceCell struct {
	Name      string           `json:"name"`
	Reduction bool             `json:"reduction"`
	Edges     []ProxySpaceEdge `json:"edges"`
}

// ProxySpaceEdge names the parameters of one edge: OpWeights[i] scales op
// Ops[i] of the space; Switch scales the edge output.
type ProxySpaceEdge struct {
	From      int      `json:"from"`
	To        int      `json:"to"`
	Node      string   `json:"node"` // the edge's mix node
	OpWeights []string `json:"op_weights"`
	Switch    string   `json:"switch"`
	Aux       string   `json:"aux,omitempty"` // the auxiliary skip's weight (ProxyConfig.AuxSkip)
}

// ProxyReductions says which cells reduce (halve resolution, double width).
func ProxyReductions(cells int) []bool {
	r := make([]bool, cells)
	r[cells/3] = true
	r[2*cells/3] = true
	return r
}

func (cfg ProxyConfig) validate() error {
	switch {
	case cfg.Input[0] < 1 || cfg.Input[1] < 1 || cfg.Input[2] < 1:
		return fmt.Errorf("proxy: input %v has a dimension < 1", cfg.Input)
	case cfg.Classes < 1:
		return fmt.Errorf("proxy: classes = %d, want >= 1", cfg.Classes)
	case cfg.Channels < 1:
		return fmt.Errorf("proxy: channels = %d, want >= 1", cfg.Channels)
	case cfg.Cells < 1:
		return fmt.Errorf("proxy: cells = %d, want >= 1", cfg.Cells)
	case cfg.Nodes < 1:
		return fmt.Errorf("proxy: nodes = %d, want >= 1", cfg.Nodes)
	case cfg.StemMultiplier < 1:
		return fmt.Errorf("proxy: stem_multiplier = %d, want >= 1", cfg.StemMultiplier)
	case cfg.StemStride < 1:
		return fmt.Errorf("proxy: stem_stride = %d, want >= 1", cfg.StemStride)
	}
	for _, op := range cfg.Ops {
		if !slices.Contains(ProxyOps, op) {
			return fmt.Errorf("proxy: ops: unknown op %q (want one of %v)", op, ProxyOps)
		}
	}
	if cfg.AuxSkip && !cfg.Search {
		return fmt.Errorf("proxy: aux_skip is for a search supernet only")
	}
	if cfg.Search {
		if len(cfg.Normal) > 0 || len(cfg.Reduce) > 0 {
			return fmt.Errorf("proxy: a search supernet has every edge; normal and reduce must be empty")
		}
		return nil
	}
	for _, c := range []struct {
		name  string
		edges []ProxyEdge
	}{{"normal", cfg.Normal}, {"reduce", cfg.Reduce}} {
		if err := checkProxyCell(c.edges, cfg.Nodes); err != nil {
			return fmt.Errorf("proxy: %s cell: %w", c.name, err)
		}
	}
	return nil
}

// checkProxyCell validates a derived cell: edges in range, no duplicates,
// known ops, at least one node reached, and no edge out of a node nothing reaches.
func checkProxyCell(edges []ProxyEdge, nodes int) error {
	reached := liveProxyNodes(edges, nodes)
	seen := map[[2]int]bool{}
	for i, e := range edges {
		switch {
		case e.From < 0 || e.To < 2 || e.To >= nodes+2 || e.From >= e.To:
			return fmt.Errorf("edge %d (%d->%d): want 0 <= from < to, 2 <= to < %d", i, e.From, e.To, nodes+2)
		case seen[[2]int{e.From, e.To}]:
			return fmt.Errorf("edge %d (%d->%d) appears twice", i, e.From, e.To)
		case len(e.Ops) == 0:
			return fmt.Errorf("edge %d (%d->%d) has no ops", i, e.From, e.To)
		case !reached[e.From]:
			return fmt.Errorf("edge %d (%d->%d) leaves node %d, which no edge reaches", i, e.From, e.To, e.From)
		}
		seen[[2]int{e.From, e.To}] = true
		for _, op := range e.Ops {
			if !slices.Contains(ProxyOps, op) {
				return fmt.Errorf("edge %d (%d->%d): unknown op %q (want one of %v)", i, e.From, e.To, op, ProxyOps)
			}
		}
	}
	some := false
	for k := 2; k < nodes+2; k++ {
		some = some || reached[k]
	}
	if !some {
		return fmt.Errorf("no intermediate node is reached by an edge")
	}
	return nil
}

// liveProxyNodes marks the cell inputs and every node with an in-edge.
func liveProxyNodes(edges []ProxyEdge, nodes int) []bool {
	r := make([]bool, nodes+2)
	r[0], r[1] = true, true
	for _, e := range edges {
		if e.To >= 0 && e.To < len(r) {
			r[e.To] = true
		}
	}
	return r
}

// ProxyNetwork builds the graph (supernet or derived network) and, for a
// supernet, the map of its architecture variables.
func ProxyNetwork(cfg ProxyConfig) (*Graph, *ProxySpace, error) {
	if err := cfg.validate(); err != nil {
		return nil, nil, err
	}
	ops := cfg.Ops
	if len(ops) == 0 {
		ops = ProxyOps
	}
	params, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: %w", err)
	}
	kind := "derived"
	if cfg.Search {
		kind = "supernet"
	}
	b := NewGraphBuilder(fmt.Sprintf("proxy_%s_c%d_w%d", kind, cfg.Cells, cfg.Channels), "input", cfg.Input)
	stemC := cfg.StemMultiplier * cfg.Channels
	x := b.Node("stem.conv", OpConv, Attrs{OutChannels: stemC, Kernel: 3, Stride: cfg.StemStride, Pad: 1, Dilation: 1, Groups: 1}, "input")
	x = b.BN("stem.bn", x)
	var space *ProxySpace
	if cfg.Search {
		space = &ProxySpace{Ops: ops, Nodes: cfg.Nodes}
	}
	s0, s1 := x, x
	cPP, cP, c := stemC, stemC, cfg.Channels
	reductions := ProxyReductions(cfg.Cells)
	prevReduction := false
	for i, red := range reductions {
		if red {
			c *= 2
		}
		edges := cfg.Normal
		if red {
			edges = cfg.Reduce
		}
		if cfg.Search {
			edges = fullProxyCell(cfg.Nodes, ops)
		}
		pc := proxyCell{b: b, name: fmt.Sprintf("cell%d", i), c: c, reduction: red, search: cfg.Search, aux: cfg.AuxSkip}
		out, outC, sc := pc.build(s0, s1, cPP, cP, prevReduction, edges, cfg.Nodes)
		if space != nil {
			space.Cells = append(space.Cells, sc)
		}
		s0, s1 = s1, out
		cPP, cP = cP, outC
		prevReduction = red
	}
	x = b.Node("head.gap", OpGAP, Attrs{}, s1)
	x = b.Node("head.fc", OpLinear, Attrs{OutChannels: cfg.Classes, Bias: true}, x)
	g, err := b.Finish(x, &BuilderInfo{Name: "proxy", Params: params})
	if err != nil {
		return nil, nil, err
	}
	return g, space, nil
}

func fullProxyCell(nodes int, ops []string) []ProxyEdge {
	var edges []ProxyEdge
	for k := 2; k < nodes+2; k++ {
		for j := 0; j < k; j++ {
			edges = append(edges, ProxyEdge{From: j, To: k, Ops: ops})
		}
	}
	return edges
}

type proxyCell struct {
	b         *GraphBuilder
	name      string
	c         int
	reduction bool
	search    bool
	aux       bool           // an auxiliary skip on every stride-1 edge (ProxyConfig.AuxSkip)
	relu      map[int]string // shared ReLU of each source node, made on first use
}

// reluConvBN is DARTS' ReLUConvBN with a 1x1 conv (cell input preprocessing).
func (p *proxyCell) reluConvBN(name, in string, out, stride int) string {
	b := p.b
	x := b.ReLU(name+".relu", in)
	x = b.Node(name+".conv", OpConv, Attrs{OutChannels: out, Kernel: 1, Stride: stride, Pad: 0, Dilation: 1, Groups: 1}, x)
	return b.BN(name+".bn", x)
}

// build appends the cell and returns its output (the concatenation of the
// intermediate nodes that exist) and its channel count.
func (p *proxyCell) build(s0, s1 string, cPP, cP int, prevReduction bool, edges []ProxyEdge, nodes int) (string, int, ProxySpaceCell) {
	sc := ProxySpaceCell{Name: p.name, Reduction: p.reduction}
	// DARTS preprocesses s0 with FactorizedReduce after a reduction cell; the
	// IR has no half-pixel shift, so a stride-2 ReLU-conv1x1-BN stands in for it.
	stride0 := 1
	if prevReduction {
		stride0 = 2
	}
	states := make([]string, nodes+2)
	states[0] = p.reluConvBN(p.name+".pre0", s0, p.c, stride0)
	states[1] = p.reluConvBN(p.name+".pre1", s1, p.c, 1)
	p.relu = map[int]string{}
	var outs []string
	for k := 2; k < nodes+2; k++ {
		var terms []string
		for _, e := range edges {
			if e.To != k {
				continue
			}
			stride := 1
			if p.reduction && e.From < 2 {
				stride = 2
			}
			edge := fmt.Sprintf("%s.e%d_%d", p.name, e.From, e.To)
			var opOuts []string
			for _, op := range e.Ops {
				opOuts = append(opOuts, p.op(edge, op, e.From, states[e.From], stride))
			}
			var out string
			switch {
			case p.search:
				mix := p.b.Node(edge+".mix", OpWSum, Attrs{}, opOuts...)
				out = p.b.Node(edge+".switch", OpWSum, Attrs{}, mix)
				se := ProxySpaceEdge{From: e.From, To: e.To, Node: mix, Switch: out + ".w0"}
				for i := range opOuts {
					se.OpWeights = append(se.OpWeights, fmt.Sprintf("%s.w%d", mix, i))
				}
				if p.aux && stride == 1 {
					aux := p.b.Node(edge+".aux", OpWSum, Attrs{}, states[e.From])
					terms = append(terms, aux)
					se.Aux = aux + ".w0"
				}
				sc.Edges = append(sc.Edges, se)
			case len(opOuts) == 1:
				out = opOuts[0]
			default:
				out = p.b.Node(edge+".sum", OpAdd, Attrs{}, opOuts...)
			}
			terms = append(terms, out)
		}
		switch len(terms) {
		case 0:
			continue // a dropped node: not in the output, and no edge leaves it
		case 1:
			states[k] = terms[0]
		default:
			states[k] = p.b.Node(fmt.Sprintf("%s.n%d", p.name, k), OpAdd, Attrs{}, terms...)
		}
		outs = append(outs, states[k])
	}
	if len(outs) == 1 {
		return outs[0], p.c, sc
	}
	return p.b.Node(p.name+".out", OpConcat, Attrs{}, outs...), len(outs) * p.c, sc
}

func (p *proxyCell) sharedReLU(from int, in string) string {
	if r, ok := p.relu[from]; ok {
		return r
	}
	// One ReLU per source node: every conv op starts with ReLU(x_j), and
	// sharing it is exactly DARTS' function at a fraction of the memory.
	r := p.b.ReLU(fmt.Sprintf("%s.relu%d", p.name, from), in)
	p.relu[from] = r
	return r
}

// op appends one candidate op on edge and returns its output node.
func (p *proxyCell) op(edge, op string, from int, in string, stride int) string {
	b, c := p.b, p.c
	name := edge + "." + op
	dwpw := func(prefix, x string, k, stride, dil int) string {
		x = b.Node(prefix+".dw", OpConv, Attrs{OutChannels: c, Kernel: k, Stride: stride, Pad: dil * (k - 1) / 2, Dilation: dil, Groups: c}, x)
		x = b.Node(prefix+".pw", OpConv, Attrs{OutChannels: c, Kernel: 1, Stride: 1, Pad: 0, Dilation: 1, Groups: 1}, x)
		return b.BN(prefix+".bn", x)
	}
	switch op {
	case ProxySep3, ProxySep5:
		k := 3
		if op == ProxySep5 {
			k = 5
		}
		x := dwpw(name+".a", p.sharedReLU(from, in), k, stride, 1)
		x = b.ReLU(name+".b.relu", x)
		return dwpw(name+".b", x, k, 1, 1)
	case ProxyDil3, ProxyDil5:
		k := 3
		if op == ProxyDil5 {
			k = 5
		}
		return dwpw(name, p.sharedReLU(from, in), k, stride, 2)
	case ProxyMax3, ProxyAvg3:
		pool := OpMaxPool
		if op == ProxyAvg3 {
			pool = OpAvgPool
		}
		// DARTS averages without the padding (count_include_pad=False).
		x := b.Node(name+".pool", pool, Attrs{Kernel: 3, Stride: stride, Pad: 1}, in)
		if p.search {
			x = b.BN(name+".bn", x)
		}
		return x
	default: // ProxySkip, checked by validate
		if stride == 1 {
			return in
		}
		return p.reluConvBN(name, in, c, stride)
	}
}

// buildProxy decodes params over ProxySupernetDefault; unknown fields are errors.
func buildProxy(params json.RawMessage) (*Graph, error) {
	cfg := ProxySupernetDefault()
	if len(bytes.TrimSpace(params)) > 0 {
		if err := decodeStrict(params, &cfg); err != nil {
			return nil, fmt.Errorf("proxy params: %w", err)
		}
	}
	g, _, err := ProxyNetwork(cfg)
	return g, err
}

func init() { Builders["proxy"] = buildProxy }

// RandomDARTSCell draws a DARTS genotype cell (the random baseline of the
// DARTS and BayesNAS papers): every intermediate node gets two in-edges from
// distinct earlier nodes (the two cell inputs are nodes 0 and 1), one
// uniform op of ops each.
func RandomDARTSCell(r *rand.Rand, nodes int, ops []string) []ProxyEdge {
	var edges []ProxyEdge
	for to := 2; to < nodes+2; to++ {
		a := r.IntN(to)
		b := r.IntN(to - 1)
		if b >= a {
			b++
		}
		for _, from := range []int{min(a, b), max(a, b)} {
			edges = append(edges, ProxyEdge{From: from, To: to, Ops: []string{ops[r.IntN(len(ops))]}})
		}
	}
	return edges
}
