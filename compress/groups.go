// Package compress finds the channels of an IR graph that must be pruned
// together (coupled channel groups) and removes them for real: a smaller
// graph and parameter tensors sliced to match, with the constants that
// switched-off channels still carry after their BatchNorm folded into the
// layers that read them (METHOD.md section 6, FIELD.md "Structured pruning").
//
// Channels are handled as slots: every value of the graph (its input and each
// node's output) with C channels has C slots. Ops tie slots together
// (union-find); a class of tied slots is a Group, the unit of removal.
package compress

import (
	"fmt"
	"slices"

	"bayesnas/models"
)

// Role says how a group member touches its channel.
type Role string

const (
	// RoleChannel: channel Index of the value named Node (the graph input or
	// a node's output).
	RoleChannel Role = "channel"
	// RoleProduce: Node computes channel Index of its output with its own
	// weight row (a conv's output channel, a linear's output feature).
	RoleProduce Role = "produce"
	// RoleRead: Node reads channel Index of its input through weights (a
	// conv's input column, the features of channel Index of a linear's input).
	RoleRead Role = "read"
	// RoleZero: Node (a padch) writes zeros into channel Index.
	RoleZero Role = "zero"
)

// Member is one (node, role, index) of a group.
type Member struct {
	Node  string `json:"node"`
	Role  Role   `json:"role"`
	Index int    `json:"index"`
}

// Group is one class of coupled channels. Index is its position in
// ChannelGroups' result, which depends only on the graph (not on the
// options), so Prune can take indices.
type Group struct {
	Index    int      `json:"index"`
	Members  []Member `json:"members"`
	Prunable bool     `json:"prunable"`
	// Protected says why the group may not be removed ("" when Prunable).
	Protected string `json:"protected,omitempty"`
}

// Channels returns the group's RoleChannel members of the value named v
// (its channel indices there, ascending).
func (gr Group) Channels(v string) []int {
	var out []int
	for _, m := range gr.Members {
		if m.Role == RoleChannel && m.Node == v {
			out = append(out, m.Index)
		}
	}
	return out
}

// Has reports whether the group has the member (node, role, index).
func (gr Group) Has(node string, role Role, index int) bool {
	return slices.Contains(gr.Members, Member{Node: node, Role: role, Index: index})
}

// GroupOptions selects which groups are protected beyond those that can
// never be removed (graph input and output channels, and groups that hold
// every channel of some value). The zero value protects nothing more; use
// DefaultGroupOptions for the defaults.
type GroupOptions struct {
	// ProtectStem keeps the output channels of the stem, the first conv
	// reading the graph input.
	ProtectStem bool
	// ProtectClassifier keeps the channels the classifier (the last linear)
	// reads.
	ProtectClassifier bool
	// Protect names nodes whose channels (output, or read or produced by
	// them) are kept.
	Protect []string
}

// DefaultGroupOptions protects the stem and the classifier's inputs.
func DefaultGroupOptions() GroupOptions {
	return GroupOptions{ProtectStem: true, ProtectClassifier: true}
}

// analysis is the slot structure of one graph.
type analysis struct {
	g      *models.Graph
	shapes map[string][]int
	values []string       // the input, then every node, in graph order
	base   map[string]int // first slot of each value
	slots  int
	parent []int
	extra  []slotMember // produce/read/zero members, with their slot
	class  []int        // slot -> group index (after finish)
	groups [][]int      // group index -> slots, ascending
}

type slotMember struct {
	slot int
	m    Member
}

// channels is the number of channel slots of a value: the first dimension of
// its per-sample shape ((C,H,W), (C,1,1) after gap, (Out) after linear).
func (a *analysis) channels(v string) int { return a.shapes[v][0] }

func (a *analysis) find(x int) int {
	for a.parent[x] != x {
		a.parent[x] = a.parent[a.parent[x]]
		x = a.parent[x]
	}
	return x
}

func (a *analysis) union(x, y int) {
	x, y = a.find(x), a.find(y)
	if x == y {
		return
	}
	// The smaller slot is the root, so a class's root is its first slot.
	if y < x {
		x, y = y, x
	}
	a.parent[y] = x
}

func (a *analysis) add(slot int, node string, role Role, index int) {
	a.extra = append(a.extra, slotMember{slot, Member{Node: node, Role: role, Index: index}})
}

// isDepthwise: every output channel is computed from its own input channel.
func isDepthwise(n *models.Node, cin int) bool {
	return n.Attrs.Groups > 1 && n.Attrs.Groups == cin && n.Attrs.Groups == n.Attrs.OutChannels
}

// analyze validates g and builds its slot classes.
func analyze(g *models.Graph) (*analysis, error) {
	shapes, err := g.InferShapes()
	if err != nil {
		return nil, err
	}
	a := &analysis{g: g, shapes: shapes, base: map[string]int{}}
	a.values = append(a.values, g.Input.Name)
	for _, n := range g.Nodes {
		a.values = append(a.values, n.Name)
	}
	for _, v := range a.values {
		a.base[v] = a.slots
		a.slots += a.channels(v)
	}
	a.parent = make([]int, a.slots)
	for i := range a.parent {
		a.parent[i] = i
	}
	for _, n := range g.Nodes {
		if err := a.node(n); err != nil {
			return nil, &models.NodeError{Node: n.Name, Op: n.Op, Err: err}
		}
	}
	a.finish()
	return a, nil
}

// node applies one op's rule.
func (a *analysis) node(n *models.Node) error {
	out, c := a.base[n.Name], a.channels(n.Name)
	in, cin := a.base[n.Inputs[0]], a.channels(n.Inputs[0])
	switch n.Op {
	case models.OpConv:
		groups := n.Attrs.Groups
		switch {
		case groups == 1:
			// Output channels are new sources; input columns are reads.
			for j := range c {
				a.add(out+j, n.Name, RoleProduce, j)
			}
			for i := range cin {
				a.add(in+i, n.Name, RoleRead, i)
			}
		case isDepthwise(n, cin):
			// Channel i only ever meets channel i: one class through the conv.
			for i := range c {
				a.union(in+i, out+i)
				a.add(out+i, n.Name, RoleProduce, i)
				a.add(in+i, n.Name, RoleRead, i)
			}
		default:
			// Grouped: every group must keep the same width, so the channel at
			// offset i of one group goes with offset i of every other group, on
			// both sides. Outputs are still new sources.
			perIn, perOut := cin/groups, c/groups
			for i := range cin {
				a.union(in+i, in+i%perIn)
				a.add(in+i, n.Name, RoleRead, i)
			}
			for j := range c {
				a.union(out+j, out+j%perOut)
				a.add(out+j, n.Name, RoleProduce, j)
			}
		}
	case models.OpBN, models.OpReLU, models.OpMaxPool, models.OpAvgPool, models.OpGAP,
		models.OpDropout, models.OpDropPath:
		for i := range c {
			a.union(in+i, out+i)
		}
	case models.OpAdd, models.OpWSum:
		// A sum ties channel i of every input: residual additions couple the
		// channels of every block they join.
		for _, x := range n.Inputs {
			for i := range c {
				a.union(a.base[x]+i, out+i)
			}
		}
	case models.OpConcat:
		off := 0
		for _, x := range n.Inputs {
			for i := range a.channels(x) {
				a.union(a.base[x]+i, out+off+i)
			}
			off += a.channels(x)
		}
	case models.OpSlice:
		for i := range c {
			a.union(in+n.Attrs.Start+i, out+i)
		}
	case models.OpShuffle:
		// nn.ChannelShuffle: output j*groups+i is input i*per+j. The pruned
		// shuffle is the same permutation of fewer channels only if every
		// group of the input keeps the same offsets, so offsets are tied
		// across groups (in the tree cell the grouped root conv ties them
		// already).
		groups := n.Attrs.Groups
		per := cin / groups
		for j := range per {
			for i := range groups {
				a.union(out+j*groups+i, in+i*per+j)
				a.union(in+i*per+j, in+j)
			}
		}
	case models.OpPadCh:
		for i := range cin {
			a.union(in+i, out+i)
		}
		for j := cin; j < c; j++ {
			a.add(out+j, n.Name, RoleZero, j)
		}
	case models.OpLinear:
		// A linear on a flattened (C,H,W) map reads H*W features per channel;
		// they all go with the channel. Its outputs are new sources.
		for i := range cin {
			a.add(in+i, n.Name, RoleRead, i)
		}
		for j := range c {
			a.add(out+j, n.Name, RoleProduce, j)
		}
	default:
		return fmt.Errorf("no channel rule for op %q", n.Op)
	}
	return nil
}

// finish numbers the classes in the order of their first slot.
func (a *analysis) finish() {
	a.class = make([]int, a.slots)
	index := map[int]int{}
	for s := range a.slots {
		r := a.find(s)
		gi, ok := index[r]
		if !ok {
			gi = len(a.groups)
			index[r] = gi
			a.groups = append(a.groups, nil)
		}
		a.class[s] = gi
		a.groups[gi] = append(a.groups[gi], s)
	}
}

// valueOf returns the value holding slot s and the channel index there.
func (a *analysis) valueOf(s int) (string, int) {
	// Values are laid out in graph order, so their bases ascend.
	i, _ := slices.BinarySearchFunc(a.values, s, func(v string, t int) int {
		b := a.base[v]
		switch {
		case t < b:
			return 1
		case t >= b+a.channels(v):
			return -1
		}
		return 0
	})
	v := a.values[i]
	return v, s - a.base[v]
}

// ChannelGroups returns the coupled channel groups of g (see the package
// comment and the per-op rules in analysis.node), in the order of their
// first channel slot. Protected groups are marked with the reason.
func ChannelGroups(g *models.Graph, opt GroupOptions) ([]Group, error) {
	a, err := analyze(g)
	if err != nil {
		return nil, err
	}
	return a.groupList(opt), nil
}

func (a *analysis) groupList(opt GroupOptions) []Group {
	out := make([]Group, len(a.groups))
	for gi, slots := range a.groups {
		out[gi].Index = gi
		for _, s := range slots {
			v, i := a.valueOf(s)
			out[gi].Members = append(out[gi].Members, Member{Node: v, Role: RoleChannel, Index: i})
		}
	}
	for _, e := range a.extra {
		gi := a.class[e.slot]
		out[gi].Members = append(out[gi].Members, e.m)
	}
	reasons := a.protection(opt)
	for gi := range out {
		out[gi].Protected = reasons[gi]
		out[gi].Prunable = reasons[gi] == ""
	}
	return out
}

// protection returns, per group, why it may not be removed ("" if it may).
// The first reason found wins.
func (a *analysis) protection(opt GroupOptions) []string {
	reasons := make([]string, len(a.groups))
	mark := func(v, why string) {
		for i := range a.channels(v) {
			if gi := a.class[a.base[v]+i]; reasons[gi] == "" {
				reasons[gi] = why
			}
		}
	}
	mark(a.g.Input.Name, fmt.Sprintf("holds channels of the graph input %q", a.g.Input.Name))
	mark(a.g.Output, fmt.Sprintf("holds channels of the graph output %q", a.g.Output))
	// A group holding every channel of a value would empty it on its own.
	for _, v := range a.values {
		first := a.class[a.base[v]]
		whole := true
		for i := 1; i < a.channels(v) && whole; i++ {
			whole = a.class[a.base[v]+i] == first
		}
		if whole && reasons[first] == "" {
			reasons[first] = fmt.Sprintf("holds every channel of %q", v)
		}
	}
	if opt.ProtectStem {
		for _, n := range a.g.Nodes {
			if n.Op == models.OpConv && n.Inputs[0] == a.g.Input.Name {
				mark(n.Name, fmt.Sprintf("output of the stem %q", n.Name))
				break
			}
		}
	}
	if opt.ProtectClassifier {
		for i := len(a.g.Nodes) - 1; i >= 0; i-- {
			if n := a.g.Nodes[i]; n.Op == models.OpLinear {
				mark(n.Inputs[0], fmt.Sprintf("read by the classifier %q", n.Name))
				break
			}
		}
	}
	for _, name := range opt.Protect {
		why := fmt.Sprintf("node %q is protected", name)
		if a.g.Node(name) != nil || name == a.g.Input.Name {
			mark(name, why)
		}
		for _, e := range a.extra {
			if e.m.Node == name && reasons[a.class[e.slot]] == "" {
				reasons[a.class[e.slot]] = why
			}
		}
	}
	return reasons
}
