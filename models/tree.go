package models

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Candidate ops of a tree-cell edge (METHOD.md section 7). Every conv op is
// pre-activation, BN -> ReLU -> depthwise kxk -> pointwise 1x1, as
// ProxylessNAS's DepthConvLayer with ops_order "bn_act_weight"; pools are
// 3x3, stride 1, padding 1, the average excluding the padding, with no BN
// (as the published network's PoolingLayer). The zero op is not a candidate:
// it is the edge switch of the supernet.
const (
	TreeIdentity = "identity"
	TreeSep3     = "sep_3x3"
	TreeSep5     = "sep_5x5"
	TreeSep7     = "sep_7x7"
	TreeDil3     = "dil_3x3" // depthwise 3x3 with dilation 2, then pointwise
	TreeMax3     = "max_pool_3x3"
	TreeAvg3     = "avg_pool_3x3"
)

// TreeOps lists every candidate op in the supernet's order.
var TreeOps = []string{TreeIdentity, TreeSep3, TreeSep5, TreeSep7, TreeDil3, TreeMax3, TreeAvg3}

// TreeEdges is the number of searchable edges of a tree cell.
const TreeEdges = 12

// The tree cell (depth 3), following ProxylessNAS's published CIFAR-10
// network (internal/fixtures/testdata/proxylessnas_cifar10_net.config), where
// METHOD.md leaves details open:
//
//	root:  3x3 conv, groups 2, planes -> 2*planes channels, the block's stride,
//	       then a channel shuffle (groups 2). The BN-ReLU before it is the
//	       bottleneck's bn2/relu2 (the file's root ConvLayer is bn_act_weight).
//	split: the 2*planes channels are cut into two halves of planes channels
//	       (split_type "split"; its two edges are fixed identities).
//	half h (h = 0, 1), on its slice x_h:
//	       top edges t0, t1 (a copy-and-add node with 2 edges), each followed by
//	       a copy-and-add node with 2 leaf edges:
//	       half_h = sum_i sum_j leaf_ij(top_i(x_h))
//	merge: BN per half (the split node's has_branch_bn), then add (merge_type
//	       "add"); the cell maps planes to planes channels.
//
// The file has no use_avg field and our IR has no constant scale, so every
// add is a plain sum (not divided by the number of branches).
//
// Edge indices run depth first: half 0 is edges 0..5 (top 0, its leaves 1
// and 2, top 3, its leaves 4 and 5), half 1 is edges 6..11 likewise. An
// edge's parent is the top edge above it (-1 for top edges): every edge's
// parent has a smaller index.

// treeEdgeNames are the edge names within a cell, by index.
var treeEdgeNames = [TreeEdges]string{
	"h0.t0", "h0.t0.l0", "h0.t0.l1", "h0.t1", "h0.t1.l0", "h0.t1.l1",
	"h1.t0", "h1.t0.l0", "h1.t0.l1", "h1.t1", "h1.t1.l0", "h1.t1.l1",
}

// TreeEdgeParent returns the index of edge i's parent (the edge above it on
// the path from the root), or -1 for a top edge.
func TreeEdgeParent(i int) int {
	if i%3 == 0 {
		return -1
	}
	return i - i%3
}

// TreeEdgeName returns the name of edge i within a cell ("h1.t0.l1": half 1,
// top edge 0, leaf 1).
func TreeEdgeName(i int) string { return treeEdgeNames[i] }

// TreeCell is a derived cell: the ops kept on each of the 12 edges (in
// TreeEdgeName order), summed; an empty list is a zero edge. A cell must be
// connected (see Pruned): a leaf with ops needs a parent with ops, and a top
// edge with ops needs a leaf with ops.
type TreeCell struct {
	Edges [][]string `json:"edges"`
}

// Pruned returns the cell with the connectivity rules applied, the function
// the supernet computes with the dropped edges' variables at zero: a leaf
// under a zero top edge is dropped (the HARD dependency prunes it with its
// parent), and a top edge none of whose leaves is kept is dropped (its output
// reaches nothing). Missing edges are zero edges.
func (c TreeCell) Pruned() TreeCell {
	out := TreeCell{Edges: make([][]string, TreeEdges)}
	for top := 0; top < TreeEdges; top += 3 {
		if top >= len(c.Edges) || len(c.Edges[top]) == 0 {
			continue
		}
		live := false
		for leaf := top + 1; leaf < top+3 && leaf < len(c.Edges); leaf++ {
			if len(c.Edges[leaf]) > 0 {
				out.Edges[leaf] = slices.Clone(c.Edges[leaf])
				live = true
			}
		}
		if live {
			out.Edges[top] = slices.Clone(c.Edges[top])
		}
	}
	return out
}

// Dead reports whether the cell keeps no edge at all.
func (c TreeCell) Dead() bool {
	for _, ops := range c.Edges {
		if len(ops) > 0 {
			return false
		}
	}
	return true
}

// check validates a derived cell: 12 edges, known ops, no op twice on an
// edge, and connected (Pruned leaves it unchanged).
func (c TreeCell) check() error {
	if len(c.Edges) != TreeEdges {
		return fmt.Errorf("%d edges, want %d", len(c.Edges), TreeEdges)
	}
	for i, ops := range c.Edges {
		for j, op := range ops {
			if !slices.Contains(TreeOps, op) {
				return fmt.Errorf("edge %d (%s): unknown op %q (want one of %v)", i, treeEdgeNames[i], op, TreeOps)
			}
			if slices.Contains(ops[:j], op) {
				return fmt.Errorf("edge %d (%s): op %q appears twice", i, treeEdgeNames[i], op)
			}
		}
	}
	for i, ops := range c.Edges {
		p := TreeEdgeParent(i)
		switch {
		case p >= 0 && len(ops) > 0 && len(c.Edges[p]) == 0:
			return fmt.Errorf("edge %d (%s) has ops but its parent edge %d (%s) is zero; prune it too (TreeCell.Pruned)",
				i, treeEdgeNames[i], p, treeEdgeNames[p])
		case p < 0 && len(ops) > 0 && len(c.Edges[i+1]) == 0 && len(c.Edges[i+2]) == 0:
			return fmt.Errorf("edge %d (%s) has ops but both its leaf edges are zero, so nothing uses it; prune it (TreeCell.Pruned)",
				i, treeEdgeNames[i])
		}
	}
	return nil
}

// PyramidTreeConfig is the proxyless search space: PyramidNet whose every
// bottleneck 3x3 conv is a tree cell (Groups is the root conv's groups).
//
// With Search set the graph is the supernet: every edge carries every op of
// Ops (Cells must be empty), and
//
//	edge = switch * (sum_o w[o] * o(x))
//
// is two wsum nodes, "<edge>.mix" (one weight per op, inputs in Ops order,
// params <edge>.mix.w<i>) and "<edge>.switch" (one input, param
// <edge>.switch.w0): the switch scales the edge OUTPUT (METHOD.md section 1),
// as in the proxy supernet. Edge nodes are named "<block>.cell.<edge name>",
// e.g. "stage2.block0.cell.h1.t0.l1".
//
// Without Search the graph is a derived network: Cells holds one TreeCell per
// stage (SharePerStage) or per block, stage by stage. Pruning keeps the
// function the supernet computes with the pruned variables at zero, where
// BN in training mode makes that exact:
//   - a zero edge and an add node left with no input disappear; an add left
//     with one input is that input;
//   - a half with no edge left loses its branch BN too, and the cell output
//     is the other half's BN alone (the root conv still computes both halves;
//     the dead half's channels are sliced away). The supernet adds the BN of
//     a zero map there, a per-channel constant, which the block's bn3 removes
//     in training mode (it subtracts the batch mean);
//   - a cell with no edge left removes the block's whole residual branch: the
//     block is its shortcut. The supernet adds a constant there (bn4 of a
//     constant map), which the next BN removes in training mode.
//
// In eval mode the derived network differs from the supernet only by those
// constants (the running means of the BNs after them).
type PyramidTreeConfig struct {
	PyramidNetConfig
	Search        bool       `json:"search"`
	Ops           []string   `json:"ops,omitempty"` // supernet candidates; empty = TreeOps
	SharePerStage bool       `json:"share_per_stage"`
	Cells         []TreeCell `json:"cells,omitempty"`
}

// PyramidTreeDefault is the small Fashion-MNIST supernet, cells per block:
// depth 20, widths 10..20, 0.20 M parameters, 48 M multiply-adds per image.
// Its training step at batch 64 (BenchmarkTrainStepPyramidTreeDefault) takes
// about 2.7 s on two loaded cores (BENCHMARKS.md): depthwise convs at 28x28
// dominate. `stem_stride: 2` quarters that (maps 14, 7, 4, the 7x7 map's
// shortcut pooled in ceil mode); the default keeps stride 1, the setting
// BENCHMARKS.md's tree numbers were measured with.
func PyramidTreeDefault() PyramidTreeConfig {
	return PyramidTreeConfig{PyramidNetConfig: PyramidNetConfig{BlocksPerStage: 2, Alpha: 12, Groups: 2,
		StemChannels: 8, Input: [3]int{1, 28, 28}, Classes: 10}, Search: true}
}

// PyramidTreeCIFAR10 is the paper's setting (ProxylessNAS, BayesNAS's
// proxyless result): N=18, alpha=84, groups 2, 3x32x32, a cell per block.
func PyramidTreeCIFAR10() PyramidTreeConfig {
	return PyramidTreeConfig{PyramidNetConfig: PyramidNetCIFAR10(), Search: true}
}

// TreeSpace describes where the architecture variables of a tree supernet
// are: one TreeSpaceCell per block, in block order.
type TreeSpace struct {
	Ops   []string        `json:"ops"`
	Cells []TreeSpaceCell `json:"cells"`
}

// TreeSpaceCell is the tree cell of one block. Cell names the architecture
// it belongs to: the block itself ("stage1.block0") or, with
// SharePerStage, its stage ("stage1"); the variables of blocks with the same
// Cell play the same role and share a prior variance (METHOD.md section 2).
type TreeSpaceCell struct {
	Block string          `json:"block"`
	Cell  string          `json:"cell"`
	Edges []TreeSpaceEdge `json:"edges"`
}

// TreeSpaceEdge names the parameters of one edge: OpWeights[i] scales op
// Ops[i] of the space; Switch scales the edge output. Parent is the index of
// the edge above it on the path from the root (-1 for a top edge): the HARD
// dependency, a pruned parent prunes its children.
type TreeSpaceEdge struct {
	Index     int      `json:"index"`
	Name      string   `json:"name"` // within the cell, e.g. "h0.t1.l0"
	Parent    int      `json:"parent"`
	Node      string   `json:"node"` // the edge's mix node
	Switch    string   `json:"switch"`
	OpWeights []string `json:"op_weights"`
}

func (cfg PyramidTreeConfig) validate() error {
	for _, op := range cfg.Ops {
		if !slices.Contains(TreeOps, op) {
			return fmt.Errorf("pyramid-tree: ops: unknown op %q (want one of %v)", op, TreeOps)
		}
	}
	if cfg.Search {
		if len(cfg.Cells) > 0 {
			return fmt.Errorf("pyramid-tree: a search supernet has every edge; cells must be empty")
		}
		return nil
	}
	want, what := 3*cfg.BlocksPerStage, "one per block"
	if cfg.SharePerStage {
		want, what = 3, "one per stage (share_per_stage)"
	}
	if len(cfg.Cells) != want {
		return fmt.Errorf("pyramid-tree: %d cells, want %d (%s)", len(cfg.Cells), want, what)
	}
	for i, c := range cfg.Cells {
		if err := c.check(); err != nil {
			return fmt.Errorf("pyramid-tree: cells[%d]: %w", i, err)
		}
	}
	return nil
}

// PyramidTreeNetwork builds the graph (supernet or derived network) and,
// for a supernet, the map of its architecture variables.
func PyramidTreeNetwork(cfg PyramidTreeConfig) (*Graph, *TreeSpace, error) {
	if err := cfg.validate(); err != nil {
		return nil, nil, err
	}
	ops := cfg.Ops
	if len(ops) == 0 {
		ops = TreeOps
	}
	params, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("pyramid-tree: %w", err)
	}
	var space *TreeSpace
	if cfg.Search {
		space = &TreeSpace{Ops: ops}
	}
	block := 0
	// PyramidNetWith calls the middle op once per block, stage by stage, so a
	// counter tells which block (and stage) is being built.
	middle := func(b *GraphBuilder, prefix, input string, planes, stride int) string {
		stage, cellName := block/cfg.BlocksPerStage, prefix
		if cfg.SharePerStage {
			cellName = fmt.Sprintf("stage%d", stage+1)
		}
		tc := treeCell{b: b, name: prefix + ".cell", planes: planes, search: cfg.Search, ops: ops}
		var out string
		if cfg.Search {
			var sc TreeSpaceCell
			out, sc = tc.supernet(input, stride, cfg.Groups)
			sc.Block, sc.Cell = prefix, cellName
			space.Cells = append(space.Cells, sc)
		} else {
			i := block
			if cfg.SharePerStage {
				i = stage
			}
			c := cfg.Cells[i]
			out = tc.derived(input, stride, cfg.Groups, c)
		}
		block++
		return out
	}
	g, err := PyramidNetWith(cfg.PyramidNetConfig, middle, "pyramid-tree")
	if err != nil {
		return nil, nil, fmt.Errorf("pyramid-tree: %w", err)
	}
	kind := "derived"
	if cfg.Search {
		kind = "supernet"
	}
	g.Name = fmt.Sprintf("pyramidtree_%s%d_a%g_g%d", kind, 9*cfg.BlocksPerStage+2, cfg.Alpha, cfg.Groups)
	g.Builder = &BuilderInfo{Name: "pyramid-tree", Params: params}
	return g, space, nil
}

type treeCell struct {
	b      *GraphBuilder
	name   string
	planes int
	search bool
	ops    []string
}

// root appends the root conv (planes -> 2*planes, grouped, strided) with its
// channel shuffle; half slices it.
func (t *treeCell) root(input string, stride, groups int) string {
	x := t.b.Conv(t.name+".root.conv", input, 2*t.planes, 3, stride, groups)
	if groups > 1 {
		x = t.b.Node(t.name+".root.shuffle", OpShuffle, Attrs{Groups: groups}, x)
	}
	return x
}

// half appends the slice of the root's output that half h reads.
func (t *treeCell) half(root string, h int) string {
	return t.b.Node(fmt.Sprintf("%s.h%d.in", t.name, h), OpSlice, Attrs{Start: h * t.planes, End: (h + 1) * t.planes}, root)
}

// sum adds the live terms: no node for none (""), the term itself for one.
func (t *treeCell) sum(name string, terms []string) string {
	switch len(terms) {
	case 0:
		return ""
	case 1:
		return terms[0]
	}
	return t.b.Node(name, OpAdd, Attrs{}, terms...)
}

// supernet appends a cell with every op on every edge.
func (t *treeCell) supernet(input string, stride, groups int) (string, TreeSpaceCell) {
	var sc TreeSpaceCell
	root := t.root(input, stride, groups)
	edge := func(i int, in string) string {
		name := t.name + "." + treeEdgeNames[i]
		outs := make([]string, len(t.ops))
		for k, op := range t.ops {
			outs[k] = t.op(name, op, in)
		}
		mix := t.b.Node(name+".mix", OpWSum, Attrs{}, outs...)
		sw := t.b.Node(name+".switch", OpWSum, Attrs{}, mix)
		se := TreeSpaceEdge{Index: i, Name: treeEdgeNames[i], Parent: TreeEdgeParent(i), Node: mix, Switch: sw + ".w0"}
		for k := range outs {
			se.OpWeights = append(se.OpWeights, fmt.Sprintf("%s.w%d", mix, k))
		}
		sc.Edges = append(sc.Edges, se)
		return sw
	}
	var outs [2]string
	for h := range 2 {
		in := t.half(root, h)
		var tops []string
		for top := 3 * 2 * h; top < 3*2*(h+1); top += 3 {
			x := edge(top, in)
			leaves := []string{edge(top+1, x), edge(top+2, x)}
			tops = append(tops, t.sum(t.name+"."+treeEdgeNames[top]+".out", leaves))
		}
		s := t.sum(fmt.Sprintf("%s.h%d.sum", t.name, h), tops)
		outs[h] = t.b.BN(fmt.Sprintf("%s.h%d.bn", t.name, h), s)
	}
	return t.b.Node(t.name+".out", OpAdd, Attrs{}, outs[0], outs[1]), sc
}

// derived appends a cell with the kept ops of c (valid, see check); "" when
// the cell is dead.
func (t *treeCell) derived(input string, stride, groups int, c TreeCell) string {
	if c.Dead() {
		return ""
	}
	root := t.root(input, stride, groups)
	edge := func(i int, in string) string {
		name := t.name + "." + treeEdgeNames[i]
		var outs []string
		for _, op := range c.Edges[i] {
			outs = append(outs, t.op(name, op, in))
		}
		return t.sum(name+".ops", outs)
	}
	var outs []string
	for h := range 2 {
		var tops []string
		in := ""
		for top := 3 * 2 * h; top < 3*2*(h+1); top += 3 {
			if len(c.Edges[top]) == 0 {
				continue
			}
			if in == "" {
				in = t.half(root, h)
			}
			x := edge(top, in)
			var leaves []string
			for leaf := top + 1; leaf < top+3; leaf++ {
				if len(c.Edges[leaf]) > 0 {
					leaves = append(leaves, edge(leaf, x))
				}
			}
			tops = append(tops, t.sum(t.name+"."+treeEdgeNames[top]+".out", leaves))
		}
		if s := t.sum(fmt.Sprintf("%s.h%d.sum", t.name, h), tops); s != "" {
			outs = append(outs, t.b.BN(fmt.Sprintf("%s.h%d.bn", t.name, h), s))
		}
	}
	return t.sum(t.name+".out", outs)
}

// op appends one candidate op on edge and returns its output node.
func (t *treeCell) op(edge, op, in string) string {
	b, c := t.b, t.planes
	name := edge + "." + op
	dwpw := func(k, dil int) string {
		x := b.BN(name+".bn", in)
		x = b.ReLU(name+".relu", x)
		x = b.Node(name+".dw", OpConv, Attrs{OutChannels: c, Kernel: k, Stride: 1, Pad: dil * (k / 2), Dilation: dil, Groups: c}, x)
		return b.Node(name+".pw", OpConv, Attrs{OutChannels: c, Kernel: 1, Stride: 1, Pad: 0, Dilation: 1, Groups: 1}, x)
	}
	switch op {
	case TreeSep3:
		return dwpw(3, 1)
	case TreeSep5:
		return dwpw(5, 1)
	case TreeSep7:
		return dwpw(7, 1)
	case TreeDil3:
		return dwpw(3, 2)
	case TreeMax3:
		return b.Node(name+".pool", OpMaxPool, Attrs{Kernel: 3, Stride: 1, Pad: 1}, in)
	case TreeAvg3:
		return b.Node(name+".pool", OpAvgPool, Attrs{Kernel: 3, Stride: 1, Pad: 1}, in)
	default: // TreeIdentity, checked by validate
		return in
	}
}

// buildPyramidTree decodes params over PyramidTreeDefault; unknown fields
// are errors. A "preset" of "cifar10" starts from PyramidTreeCIFAR10.
func buildPyramidTree(params json.RawMessage) (*Graph, error) {
	cfg := PyramidTreeDefault()
	if len(bytes.TrimSpace(params)) > 0 {
		var preset struct {
			Preset string `json:"preset"`
		}
		if err := json.Unmarshal(params, &preset); err != nil {
			return nil, fmt.Errorf("pyramid-tree params: %w", err)
		}
		switch preset.Preset {
		case "", "default":
		case "cifar10":
			cfg = PyramidTreeCIFAR10()
		default:
			return nil, fmt.Errorf("pyramid-tree params: unknown preset %q (want default or cifar10)", preset.Preset)
		}
		var withPreset struct {
			Preset string `json:"preset"`
			*PyramidTreeConfig
		}
		withPreset.PyramidTreeConfig = &cfg
		if err := decodeStrict(params, &withPreset); err != nil {
			return nil, fmt.Errorf("pyramid-tree params: %w", err)
		}
	}
	g, _, err := PyramidTreeNetwork(cfg)
	return g, err
}

func init() { Builders["pyramid-tree"] = buildPyramidTree }
