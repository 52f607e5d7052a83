package compress

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/nn"
)

func backend() nn.Backend { return nn.NewCPU(nn.DefaultGemm(), 1) }

// randomParams compiles g and fills its parameters with export's random
// values (non-zero BN shifts and running means).
func randomParams(t testing.TB, g *models.Graph, seed uint64) []*nn.Param {
	t.Helper()
	net, err := models.Compile(g, backend(), 1)
	if err != nil {
		t.Fatal(err)
	}
	export.RandomizeParams(net.Params, seed)
	return net.Params
}

// compileWith compiles g and copies params in by name.
func compileWith(t testing.TB, g *models.Graph, params []*nn.Param, batch int) *nn.Network {
	t.Helper()
	net, err := models.Compile(g, backend(), batch)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*nn.Param{}
	for _, p := range params {
		byName[p.Name] = p
	}
	for _, p := range net.Params {
		src := byName[p.Name]
		if src == nil || len(src.Data) != len(p.Data) {
			t.Fatalf("parameter %s: missing or of another size", p.Name)
		}
		copy(p.Data, src.Data)
	}
	return net
}

func evalOutput(net *nn.Network, x []float32) []float32 {
	copy(net.Input.Data, x)
	net.Forward(false)
	return slices.Clone(net.Output.Data)
}

// masked returns copies of params with the rows and biases of every conv
// producing a channel of the removed groups zeroed: the network compression
// switches those channels off in.
func masked(params []*nn.Param, groups []Group, remove []int, g *models.Graph) []*nn.Param {
	byName := map[string]*nn.Param{}
	var out []*nn.Param
	for _, p := range params {
		c := *p
		c.Data = slices.Clone(p.Data)
		byName[p.Name] = &c
		out = append(out, &c)
	}
	for _, gi := range remove {
		for _, m := range groups[gi].Members {
			if m.Role != RoleProduce || g.Node(m.Node).Op != models.OpConv {
				continue
			}
			w := byName[m.Node+".weight"]
			row := len(w.Data) / w.Shape[0]
			clear(w.Data[m.Index*row : (m.Index+1)*row])
			if b := byName[m.Node+".bias"]; b != nil {
				b.Data[m.Index] = 0
			}
		}
	}
	return out
}

// randomRemoval picks each prunable group with probability prob in a
// seeded order, skipping any that would empty a value. (Removing whole
// groups keeps grouped convs and shuffles balanced by construction.)
func randomRemoval(t testing.TB, g *models.Graph, opt GroupOptions, prob float64, seed uint64) []int {
	t.Helper()
	a, err := analyze(g)
	if err != nil {
		t.Fatal(err)
	}
	reasons := a.protection(opt)
	left := map[string]int{} // channels still kept per value
	for _, v := range a.values {
		left[v] = a.channels(v)
	}
	perValue := func(gi int) map[string]int {
		m := map[string]int{}
		for _, s := range a.groups[gi] {
			v, _ := a.valueOf(s)
			m[v]++
		}
		return m
	}
	r := rand.New(rand.NewPCG(seed, 99))
	var remove []int
	for _, gi := range r.Perm(len(a.groups)) {
		if reasons[gi] != "" || r.Float64() >= prob {
			continue
		}
		m := perValue(gi)
		ok := true
		for v, k := range m {
			ok = ok && left[v] > k
		}
		if !ok {
			continue
		}
		for v, k := range m {
			left[v] -= k
		}
		remove = append(remove, gi)
	}
	return remove
}

func randomInput(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 5))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// compare prunes the masked network and returns the max abs difference of
// the eval-mode outputs, the largest output magnitude, and the report.
func compare(t *testing.T, g *models.Graph, opt GroupOptions, remove []int, seed uint64) (float64, float64, *Report) {
	t.Helper()
	groups, err := ChannelGroups(g, opt)
	if err != nil {
		t.Fatal(err)
	}
	params := masked(randomParams(t, g, seed), groups, remove, g)
	pg, pp, rep, err := PruneWith(g, params, remove, opt)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 3
	orig := compileWith(t, g, params, batch)
	pruned := compileWith(t, pg, pp, batch)
	x := randomInput(len(orig.Input.Data), seed)
	want, got := evalOutput(orig, x), evalOutput(pruned, x)
	worst, scale := 0.0, 0.0
	for i := range want {
		worst = max(worst, math.Abs(float64(want[i]-got[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	return worst, scale, rep
}

// handGraph: conv3x3 -> bn -> relu -> {conv1x1 -> bn, conv1x1(bias)} -> add
// -> relu -> conv1x1 (no bias, read by an add: a bias is created) -> add
// -> gap -> linear; every reader of a removed constant has kernel 1.
func handGraph(t testing.TB) *models.Graph {
	t.Helper()
	b := models.NewGraphBuilder("hand", "input", [3]int{3, 6, 6})
	conv1 := func(name, in string, out int, bias bool) string {
		return b.Node(name, models.OpConv, models.Attrs{OutChannels: out, Kernel: 1, Stride: 1, Dilation: 1, Groups: 1, Bias: bias}, in)
	}
	x := b.Conv("a", "input", 8, 3, 1, 1)
	x = b.BN("a.bn", x)
	x = b.ReLU("a.relu", x)
	y := b.BN("b.bn", conv1("b", x, 6, false))
	z := conv1("c", x, 6, true)
	s := b.Node("s", models.OpAdd, models.Attrs{}, y, z)
	s = b.ReLU("s.relu", s)
	d := conv1("d", s, 6, false)
	s2 := b.Node("s2", models.OpAdd, models.Attrs{}, d, s)
	x = b.Node("gap", models.OpGAP, models.Attrs{}, s2)
	x = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 4, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestPrunedEqualsMaskedExact(t *testing.T) {
	open := GroupOptions{ProtectStem: false, ProtectClassifier: false}
	g := handGraph(t)
	groups, err := ChannelGroups(g, open)
	if err != nil {
		t.Fatal(err)
	}
	// a's channels 1, 4 (constants into b's bn mean and c's bias) and the
	// sum's channel 2 (a constant into d's new bias and the linear's bias).
	remove := []int{groupOf(t, groups, "a", 1).Index, groupOf(t, groups, "a", 4).Index, groupOf(t, groups, "s", 2).Index}
	worst, scale, rep := compare(t, g, open, remove, 1)
	t.Logf("hand graph: max abs error %.3g (outputs up to %.3g), %d folds", worst, scale, len(rep.Folds))
	if worst > 1e-5 {
		t.Errorf("hand graph: max abs error %.3g", worst)
	}
	into := map[string]bool{}
	for _, f := range rep.Folds {
		if !f.Exact {
			t.Errorf("fold %+v not exact", f)
		}
		into[f.Node+" "+f.Into] = true
	}
	for _, want := range []string{"b running_mean of b.bn", "c bias", "d bias", "fc bias"} {
		if !into[want] {
			t.Errorf("no fold %q in %v", want, into)
		}
	}
	// PyramidNet's residual stream (conv3 rows and pad zeros; read by the
	// next blocks' bn1 -> conv1x1 and the head's bn -> relu -> gap -> fc).
	pg := pyramidNet(t)
	pgroups, err := ChannelGroups(pg, GroupOptions{ProtectStem: true})
	if err != nil {
		t.Fatal(err)
	}
	var stream []int
	for j := 16; j < 4*models.PyramidWidths(3, 48, 16, 2)[2][2]; j += 5 {
		stream = append(stream, groupOf(t, pgroups, "stage3.block2.add", j).Index)
	}
	worst, scale, rep = compare(t, pg, GroupOptions{ProtectStem: true}, stream, 2)
	t.Logf("pyramidnet stream (%d groups): max abs error %.3g (outputs up to %.3g), %d folds", len(stream), worst, scale, len(rep.Folds))
	// float32 rounding of outputs of this size: 1e-5 relative.
	if worst > 1e-5*max(1, scale) {
		t.Errorf("pyramidnet stream: max abs error %.3g", worst)
	}
	for _, f := range rep.Folds {
		if !f.Exact {
			t.Errorf("fold %+v not exact", f)
		}
	}
}

// Folds through padded kxk convs hold only in the interior: measured, not
// bounded tightly.
func TestPrunedEqualsMaskedInterior(t *testing.T) {
	for _, b := range builders {
		g := b.build(t)
		remove := randomRemoval(t, g, DefaultGroupOptions(), 0.3, 3)
		worst, scale, rep := compare(t, g, DefaultGroupOptions(), remove, 3)
		inexact := 0
		for _, f := range rep.Folds {
			if !f.Exact {
				inexact++
			}
		}
		t.Logf("%s: %d groups removed, %d folds (%d interior-only), %d lost, max abs error %.3g (outputs up to %.3g)",
			b.name, len(remove), len(rep.Folds), inexact, len(rep.Lost), worst, scale)
		if len(rep.Lost) > 0 {
			t.Errorf("%s: %d removed channels not constant in the masked network: %v", b.name, len(rep.Lost), rep.Lost[0])
		}
		if inexact == 0 && worst > 1e-5*max(1, scale) {
			t.Errorf("%s: every fold exact but max abs error %.3g", b.name, worst)
		}
		if math.IsNaN(worst) {
			t.Errorf("%s: NaN", b.name)
		}
	}
}

// Random legal removals: the pruned graph validates, compiles, trains a
// step and exports.
func TestPruneProperty(t *testing.T) {
	for _, b := range builders {
		g := b.build(t)
		params := randomParams(t, g, 4)
		for seed := range uint64(2) {
			remove := randomRemoval(t, g, DefaultGroupOptions(), 0.2+0.4*float64(seed), seed)
			pg, pp, rep, err := Prune(g, params, remove)
			if err != nil {
				t.Fatalf("%s seed %d: %v", b.name, seed, err)
			}
			if err := pg.Validate(); err != nil {
				t.Fatalf("%s seed %d: %v", b.name, seed, err)
			}
			before, _ := g.Count()
			after, _ := pg.Count()
			if len(remove) > 0 && after.MACs >= before.MACs {
				t.Errorf("%s seed %d: %d groups removed, MACs %d -> %d", b.name, seed, len(remove), before.MACs, after.MACs)
			}
			net := compileWith(t, pg, pp, 2)
			copy(net.Input.Data, randomInput(len(net.Input.Data), seed))
			net.Forward(true)
			net.ZeroGrad()
			for i := range net.Output.Grad {
				net.Output.Grad[i] = 1
			}
			net.Backward()
			for _, v := range net.Output.Data {
				if math.IsNaN(float64(v)) {
					t.Fatalf("%s seed %d: NaN output", b.name, seed)
				}
			}
			if _, err := export.Build(pg, pp, export.Options{}); err != nil {
				t.Fatalf("%s seed %d: export: %v", b.name, seed, err)
			}
			t.Logf("%s seed %d: %d groups removed, %d folds, MACs %d -> %d, params %d -> %d",
				b.name, seed, len(remove), len(rep.Folds), before.MACs, after.MACs, before.Params, after.Params)
		}
	}
}

func TestPruneBadInput(t *testing.T) {
	g := pyramidNet(t)
	params := randomParams(t, g, 5)
	graphJSON, _ := json.Marshal(g)
	var sums []float32
	for _, p := range params {
		sums = append(sums, p.Data...)
	}
	groups, err := ChannelGroups(g, DefaultGroupOptions())
	if err != nil {
		t.Fatal(err)
	}
	var block []int
	for j := range models.PyramidWidths(3, 48, 16, 2)[1][1] {
		if gi := groupOf(t, groups, "stage2.block1.conv1", j).Index; !slices.Contains(block, gi) {
			block = append(block, gi)
		}
	}
	for _, c := range []struct {
		name   string
		remove []int
		want   []string
	}{
		{"protected", []int{groupOf(t, groups, "stem.conv", 3).Index}, []string{"protected", "stem"}},
		{"negative", []int{-1}, []string{"group -1 out of range"}},
		{"too large", []int{len(groups)}, []string{"out of range"}},
		{"empties a value", block, []string{`"stage2.block1.conv1"`, "no channel"}},
		{"logits", []int{groupOf(t, groups, "head.fc", 0).Index}, []string{"protected", "graph output"}},
	} {
		_, _, _, err := Prune(g, params, c.remove)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
		t.Logf("%s: %v", c.name, err)
	}
	after, _ := json.Marshal(g)
	if string(after) != string(graphJSON) {
		t.Error("the graph changed")
	}
	var now []float32
	for _, p := range params {
		now = append(now, p.Data...)
	}
	if !slices.Equal(now, sums) {
		t.Error("the parameters changed")
	}
	// A successful prune leaves its inputs alone too.
	if _, _, _, err := Prune(g, params, block[1:]); err != nil {
		t.Fatal(err)
	}
	after, _ = json.Marshal(g)
	now = now[:0]
	for _, p := range params {
		now = append(now, p.Data...)
	}
	if string(after) != string(graphJSON) || !slices.Equal(now, sums) {
		t.Error("a prune changed its inputs")
	}
}
