package compress

import (
	"fmt"
	"strings"
	"testing"

	"bayesnas/models"
)

// groupOf returns the group holding channel i of value v.
func groupOf(t *testing.T, groups []Group, v string, i int) Group {
	t.Helper()
	for _, gr := range groups {
		if gr.Has(v, RoleChannel, i) {
			return gr
		}
	}
	t.Fatalf("no group holds channel %d of %q", i, v)
	return Group{}
}

// Every slot is in exactly one group, and every group has a channel.
func checkPartition(t *testing.T, g *models.Graph, groups []Group) {
	t.Helper()
	shapes, err := g.InferShapes()
	if err != nil {
		t.Fatal(err)
	}
	want := shapes[g.Input.Name][0]
	for _, n := range g.Nodes {
		want += shapes[n.Name][0]
	}
	got := 0
	for i, gr := range groups {
		if gr.Index != i {
			t.Fatalf("group %d has Index %d", i, gr.Index)
		}
		c := 0
		for _, m := range gr.Members {
			if m.Role == RoleChannel {
				c++
			}
		}
		if c == 0 {
			t.Errorf("group %d has no channel", i)
		}
		if gr.Prunable != (gr.Protected == "") {
			t.Errorf("group %d: prunable %v, protected %q", i, gr.Prunable, gr.Protected)
		}
		got += c
	}
	if got != want {
		t.Errorf("groups hold %d channel slots, the graph has %d", got, want)
	}
}

func TestGroupsPyramidNet(t *testing.T) {
	g := pyramidNet(t)
	groups, err := ChannelGroups(g, DefaultGroupOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, g, groups)
	widths := models.PyramidWidths(3, 48, 16, 2)
	for s, ws := range widths {
		for b, planes := range ws {
			p := fmt.Sprintf("stage%d.block%d", s+1, b)
			for j := range planes {
				gr := groupOf(t, groups, p+".conv1", j)
				// conv1's channel j is bn2's, relu2's and conv2's input column
				// j; conv2 has 2 groups, so offset j of the other group too.
				other := (j + planes/2) % planes
				for _, m := range []Member{{p + ".conv1", RoleProduce, j}, {p + ".bn2", RoleChannel, j},
					{p + ".relu2", RoleChannel, j}, {p + ".conv2", RoleRead, j}, {p + ".conv2", RoleRead, other}, {p + ".conv1", RoleProduce, other}} {
					if !gr.Has(m.Node, m.Role, m.Index) {
						t.Fatalf("%s.conv1 channel %d: group %d lacks %+v", p, j, gr.Index, m)
					}
				}
				if len(gr.Channels(p+".conv1")) != 2 || !gr.Prunable {
					t.Fatalf("%s.conv1 channel %d: group %d has conv1 channels %v, prunable %v", p, j, gr.Index, gr.Channels(p+".conv1"), gr.Prunable)
				}
			}
		}
	}
	// The residual stream: channel j of every add of a stage is one group,
	// with the first block's pad zero channel as its source (j >= the
	// previous width) or the previous stage's stream / the stem's channel.
	prevC := 16 // the stem's
	for s, ws := range widths {
		last := fmt.Sprintf("stage%d.block%d.add", s+1, len(ws)-1)
		for j := range 4 * ws[len(ws)-1] {
			gr := groupOf(t, groups, last, j)
			from := prevC // block b's pad adds zero channels [from, 4*ws[b])
			for b := range ws {
				p := fmt.Sprintf("stage%d.block%d", s+1, b)
				if j < 4*ws[b] && (!gr.Has(p+".add", RoleChannel, j) || !gr.Has(p+".conv3", RoleProduce, j)) {
					t.Fatalf("stage %d channel %d: group %d lacks %s.add or conv3's row", s+1, j, gr.Index, p)
				}
				zero := gr.Has(p+".pad", RoleZero, j)
				if want := j >= from && j < 4*ws[b]; zero != want {
					t.Fatalf("stage %d channel %d: zero source in %s.pad %v, want %v", s+1, j, p, zero, want)
				}
				from = 4 * ws[b]
			}
			switch {
			case j < 16: // the stem's channels run through every stage
				if gr.Prunable || !strings.Contains(gr.Protected, "stem") || !gr.Has("stem.conv", RoleProduce, j) {
					t.Fatalf("stage %d channel %d: group %d should be the stem's, protected: %q", s+1, j, gr.Index, gr.Protected)
				}
			default:
				if gr.Prunable || !strings.Contains(gr.Protected, "classifier") {
					t.Fatalf("stage %d channel %d: group %d: protected %q, want the classifier's", s+1, j, gr.Index, gr.Protected)
				}
			}
		}
		prevC = 4 * ws[len(ws)-1]
	}
	// Without the classifier's protection, the stream is prunable (except the stem's part).
	open, err := ChannelGroups(g, GroupOptions{ProtectStem: true})
	if err != nil {
		t.Fatal(err)
	}
	if gr := groupOf(t, open, "stage3.block2.add", 4*widths[2][2]-1); !gr.Prunable {
		t.Errorf("last stream channel: protected %q without ProtectClassifier", gr.Protected)
	}
	if gr := groupOf(t, open, "head.fc", 0); gr.Prunable {
		t.Errorf("a logit is prunable")
	}
	if gr := groupOf(t, open, "input", 0); gr.Prunable {
		t.Errorf("the input channel is prunable")
	}
	// Protect by node name.
	named, err := ChannelGroups(g, GroupOptions{Protect: []string{"stage2.block1.conv1"}})
	if err != nil {
		t.Fatal(err)
	}
	if gr := groupOf(t, named, "stage2.block1.bn2", 3); gr.Prunable || !strings.Contains(gr.Protected, "stage2.block1.conv1") {
		t.Errorf("protected by name: %q", gr.Protected)
	}
}

func TestGroupsProxy(t *testing.T) {
	g := proxyNet(t)
	groups, err := ChannelGroups(g, DefaultGroupOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, g, groups)
	for j := range 8 {
		// A skip edge ties the cell input's preprocessing with the node it
		// adds into, and a depthwise conv ties its input and output.
		gr := groupOf(t, groups, "cell0.pre1.bn", j)
		for _, m := range []Member{{"cell0.pre1.conv", RoleProduce, j}, {"cell0.e0_2.sep_conv_3x3.b.pw", RoleProduce, j},
			{"cell0.n2", RoleChannel, j}, {"cell0.e2_3.sep_conv_5x5.a.dw", RoleChannel, j}, {"cell0.relu2", RoleChannel, j}} {
			if !gr.Has(m.Node, m.Role, m.Index) {
				t.Fatalf("cell0.pre1 channel %d: group %d lacks %+v", j, gr.Index, m)
			}
		}
		if !gr.Prunable {
			t.Errorf("cell0.pre1 channel %d: protected %q", j, gr.Protected)
		}
		// The concat places node k's channels at (k-2)*8.
		if !gr.Has("cell0.out", RoleChannel, j) {
			t.Errorf("cell0.out channel %d not with n2's", j)
		}
	}
	// The last cell's output is what the classifier reads.
	last := g.Node("head.gap").Inputs[0]
	if gr := groupOf(t, groups, last, 0); gr.Prunable {
		t.Errorf("%s channel 0 prunable", last)
	}
}

// The tree cell's root conv (2 groups) and shuffle: root channel j always
// goes with j+planes (equal widths per group). Where an identity path runs
// through both halves to the cell output (block 1's cell), the add of the
// halves ties shuffle channel m with m+planes, so root channels j,
// j+planes/2, j+planes, j+3*planes/2 are one group holding cell-output
// channels 2j and 2j+1. Where a half is dead (block 0's cell), its root
// channels form groups nothing reads (free to remove).
func TestGroupsTree(t *testing.T) {
	g := treeNet(t)
	groups, err := ChannelGroups(g, DefaultGroupOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, g, groups)
	widths := models.PyramidWidths(2, 12, 8, 2)
	for s, ws := range widths {
		for b, planes := range ws {
			p := fmt.Sprintf("stage%d.block%d.cell", s+1, b)
			root := p + ".root.conv"
			if g.Node(root) == nil {
				continue
			}
			for j := range 2 * planes {
				gr := groupOf(t, groups, root, j)
				if !gr.Has(root, RoleChannel, (j+planes)%(2*planes)) || !gr.Prunable {
					t.Fatalf("%s channel %d: group %d holds root channels %v, prunable %v", p, j, gr.Index, gr.Channels(root), gr.Prunable)
				}
			}
		}
	}
	planes := widths[0][1]
	for j := range planes / 2 {
		p := "stage1.block1.cell"
		gr := groupOf(t, groups, p+".root.conv", j)
		want := fmt.Sprint([]int{j, j + planes/2, j + planes, j + 3*planes/2})
		if got := fmt.Sprint(gr.Channels(p + ".root.conv")); got != want {
			t.Fatalf("%s channel %d: root channels %s, want %s", p, j, got, want)
		}
		if got := fmt.Sprint(gr.Channels(p + ".out")); got != fmt.Sprint([]int{2 * j, 2*j + 1}) {
			t.Fatalf("%s channel %d: output channels %s, want %d and %d", p, j, got, 2*j, 2*j+1)
		}
	}
	// Block 0's cell has only half 1... or half 0: the other half's root
	// channels reach nothing but the shuffle.
	p := "stage1.block0.cell"
	dead := 0
	for _, gr := range groups {
		if len(gr.Channels(p+".root.conv")) > 0 && len(gr.Channels(p+".out")) == 0 {
			dead++
		}
	}
	if want := widths[0][0]; dead != want {
		t.Errorf("%s: %d groups of root channels read by nothing, want %d (one half)", p, dead, want)
	}
}

func TestGroupsProxyless(t *testing.T) {
	g := proxylessNet(t)
	groups, err := ChannelGroups(g, DefaultGroupOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, g, groups)
	prunable := 0
	for _, gr := range groups {
		if gr.Prunable {
			prunable++
		}
	}
	// Every groups-1 conv's rows are sources of some group, and the stem's
	// are protected.
	var stem string
	for _, n := range g.Nodes {
		if n.Op == models.OpConv && n.Inputs[0] == g.Input.Name {
			stem = n.Name
			break
		}
	}
	if gr := groupOf(t, groups, stem, 0); gr.Prunable {
		t.Errorf("stem %s channel 0 prunable", stem)
	}
	if prunable < len(groups)/2 {
		t.Errorf("%d of %d groups prunable", prunable, len(groups))
	}
	t.Logf("%d nodes, %d groups, %d prunable", len(g.Nodes), len(groups), prunable)
}
