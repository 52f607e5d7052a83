package compress

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/nn"
)

// sliceBatches serves fixed data in seeded orders: an nn.Batches for tests.
type sliceBatches struct {
	x      []float32
	labels []int32
	per    int
	batch  int
	seed   uint64
	order  []int
	pos    int
}

func (b *sliceBatches) BatchSize() int { return b.batch }
func (b *sliceBatches) StartEpoch(e int) {
	b.order = rand.New(rand.NewPCG(b.seed, uint64(e))).Perm(len(b.labels))
	b.pos = 0
}
func (b *sliceBatches) Next(x []float32, labels []int32) (int, bool) {
	if b.pos >= len(b.order) {
		return 0, false
	}
	n := min(b.batch, len(b.order)-b.pos)
	for i := range n {
		j := b.order[b.pos+i]
		copy(x[i*b.per:(i+1)*b.per], b.x[j*b.per:(j+1)*b.per])
		labels[i] = b.labels[j]
	}
	b.pos += n
	return n, true
}

// twoLayerNet: a protected stem, then layers a and b (16 channels each,
// conv-BN-ReLU), pooling and a classifier.
func twoLayerNet(t *testing.T) *models.Graph {
	t.Helper()
	b := models.NewGraphBuilder("two", "x", [3]int{1, 8, 8})
	x := b.ReLU("stem_relu", b.BN("stem_bn", b.Conv("stem", "x", 8, 3, 1, 1)))
	x = b.ReLU("a_relu", b.BN("a_bn", b.Conv("a", x, 16, 3, 1, 1)))
	x = b.ReLU("b_relu", b.BN("b_bn", b.Conv("b", x, 16, 3, 1, 1)))
	x = b.Node("gap", models.OpGAP, models.Attrs{}, x)
	x = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 3, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// widthLatency prices a network as costA per channel of conv a plus costB
// per channel of conv b: a hand-built device profile.
type widthLatency struct{ costA, costB float64 }

func (w widthLatency) LatencyMs(g *models.Graph, _ []*nn.Param) (float64, error) {
	return w.costA*float64(g.Node("a").Attrs.OutChannels) + w.costB*float64(g.Node("b").Attrs.OutChannels) + 1, nil
}

// teacherData labels random images by which third of the image is
// brightest: something both layers can learn.
func teacherData(n int, seed uint64) *sliceBatches {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := &sliceBatches{per: 64, batch: 20, seed: seed, x: make([]float32, n*64), labels: make([]int32, n)}
	for i := range n {
		var sums [3]float64
		for p := range 64 {
			v := float32(rng.NormFloat64())
			b.x[i*64+p] = v
			sums[(p%8)*3/8] += float64(v)
		}
		best := 0
		for k := range sums {
			if sums[k] > sums[best] {
				best = k
			}
		}
		b.labels[i] = int32(best)
	}
	return b
}

// The latency weighting moves sparsity toward the expensive layer: with a
// channel of a costing 10x one of b, a loses more channels and its gates
// end smaller relative to b's than with the costs swapped; each selection
// meets the budget.
func TestBayesianLatencyWeighting(t *testing.T) {
	g := twoLayerNet(t)
	net, err := models.Compile(g, backend(), 1)
	if err != nil {
		t.Fatal(err)
	}
	export.RandomizeParams(net.Params, 7)
	removedIn := func(res *BayesResult, node string) int {
		groups, err := ChannelGroups(g, GroupOptions{ProtectStem: true})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, gi := range res.Selection.Removed {
			for _, m := range groups[gi].Members {
				if m.Role == RoleProduce && m.Node == node {
					n++
				}
			}
		}
		return n
	}
	gateNorm := func(res *BayesResult, node string) float64 {
		groups, _ := ChannelGroups(g, GroupOptions{ProtectStem: true})
		var s float64
		for _, d := range res.Groups {
			if hasProducer(groups[d.Group], node) {
				s += d.Norm
			}
		}
		return s
	}
	run := func(costA, costB float64) *BayesResult {
		lat := widthLatency{costA, costB}
		base, _ := lat.LatencyMs(g, nil)
		opt := DefaultBayesOptions()
		opt.Budget = BudgetOptions{Latency: lat, BudgetMs: 1 + 0.6*(base-1), Multiple: 2, Groups: GroupOptions{ProtectStem: true}}
		opt.Epochs, opt.UpdateEvery, opt.CurvatureBatches, opt.Batch, opt.LR = 4, 5, 2, 20, 0.05
		opt.BatchesPerEpoch = 10 // 200 images in batches of 20
		res, err := Bayesian(context.Background(), g, net.Params, teacherData(200, 1), teacherData(200, 2), opt)
		if err != nil {
			t.Fatal(err)
		}
		// The pace runs straight from the unpruned latency to the budget,
		// reached after Reach of the 40 batches, and stays there.
		for _, u := range res.Updates {
			want := opt.Budget.BudgetMs
			if f := float64(u.Batches) / (opt.Reach * 40); f < 1 {
				want = base - f*(base-opt.Budget.BudgetMs)
			}
			if math.Abs(u.PaceMs-want) > 1e-9 {
				t.Errorf("update %d after %d batches: pace %g ms, want %g", u.Update, u.Batches, u.PaceMs, want)
			}
		}
		if !res.Selection.MetBudget || res.Selection.PrunedMs > opt.Budget.BudgetMs {
			t.Fatalf("costs %g/%g: budget %g not met: %+v", costA, costB, opt.Budget.BudgetMs, res.Selection)
		}
		return res
	}
	aCostly, bCostly := run(1, 0.1), run(0.1, 1)
	ra1, rb1 := removedIn(aCostly, "a"), removedIn(aCostly, "b")
	ra2, rb2 := removedIn(bCostly, "a"), removedIn(bCostly, "b")
	t.Logf("a costly: removed a %d, b %d; b costly: removed a %d, b %d", ra1, rb1, ra2, rb2)
	if !(ra1 > ra2 && rb2 > rb1) {
		t.Errorf("removals do not follow the cost: a costly removes a %d b %d, b costly removes a %d b %d", ra1, rb1, ra2, rb2)
	}
	r1 := gateNorm(aCostly, "a") / gateNorm(aCostly, "b")
	r2 := gateNorm(bCostly, "a") / gateNorm(bCostly, "b")
	t.Logf("gate norm a/b: a costly %.3f, b costly %.3f", r1, r2)
	if !(r1 < r2) {
		t.Errorf("gates of the costly layer do not end smaller: a/b %.3f (a costly) vs %.3f (b costly)", r1, r2)
	}
	// The input parameters are left as they were; the trained ones are new.
	if &aCostly.Params[0].Data[0] == &net.Params[0].Data[0] {
		t.Errorf("Bayesian trained the caller's parameters in place")
	}
}

func hasProducer(gr Group, node string) bool {
	for _, m := range gr.Members {
		if m.Role == RoleProduce && m.Node == node {
			return true
		}
	}
	return false
}

// A network without batch norms trains with a channel scale as the gate
// of every prunable conv: no group is left ungated, the budget is met,
// and the result holds the input's parameters (the gates folded in).
func TestBayesianGatesConvsWithoutBatchNorm(t *testing.T) {
	b := models.NewGraphBuilder("nogates", "x", [3]int{1, 8, 8})
	x := b.ReLU("r0", b.Conv("stem", "x", 8, 3, 1, 1))
	x = b.ReLU("r1", b.Conv("a", x, 16, 3, 1, 1))
	x = b.ReLU("r2", b.Conv("b", x, 16, 3, 1, 1))
	x = b.Node("gap", models.OpGAP, models.Attrs{}, x)
	x = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 3, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	net, _ := models.Compile(g, backend(), 1)
	export.RandomizeParams(net.Params, 7)
	opt := DefaultBayesOptions()
	opt.Budget = BudgetOptions{Latency: widthLatency{1, 1}, BudgetMs: 20, Multiple: 2, Groups: GroupOptions{ProtectStem: true}}
	res, err := Bayesian(context.Background(), g, net.Params, teacherData(40, 1), teacherData(40, 2), opt)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ungated != 0 || res.Gated != 2 {
		t.Fatalf("%d groups ungated, %d convs gated: want 0 and 2 (a, b)", res.Ungated, res.Gated)
	}
	if !res.Selection.MetBudget {
		t.Fatalf("budget not met: %+v", res.Selection)
	}
	if len(res.Params) != len(net.Params) {
		t.Fatalf("%d parameters back, want the input's %d", len(res.Params), len(net.Params))
	}
	for i, p := range res.Params {
		if p.Name != net.Params[i].Name || len(p.Data) != len(net.Params[i].Data) {
			t.Fatalf("parameter %d: %s[%d], want %s[%d]", i, p.Name, len(p.Data), net.Params[i].Name, len(net.Params[i].Data))
		}
	}
}

// The gated network with any gates computes what the original network
// computes with the gates folded into its convs (weights and bias).
func TestGatesFoldExactly(t *testing.T) {
	b := models.NewGraphBuilder("fold", "x", [3]int{2, 6, 6})
	stem := b.ReLU("r0", b.BN("bn0", b.Conv("stem", "x", 8, 3, 1, 1)))
	p := b.Node("p", models.OpConv, models.Attrs{OutChannels: 8, Kernel: 1, Stride: 1, Dilation: 1, Groups: 1, Bias: true}, stem)
	q := b.Conv("q", stem, 8, 3, 1, 1)
	x := b.Node("sum", models.OpAdd, models.Attrs{}, p, q)
	x = b.ReLU("r1", b.BN("bn1", b.Conv("c", b.ReLU("r", x), 8, 3, 1, 1)))
	x = b.Node("gap", models.OpGAP, models.Attrs{}, x)
	x = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 3, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := ChannelGroups(g, DefaultGroupOptions())
	if err != nil {
		t.Fatal(err)
	}
	ls, err := layers(g, groups)
	if err != nil {
		t.Fatal(err)
	}
	gg, gated := withGates(g, groups, ls)
	if strings.Join(gated, ",") != "p,q" {
		t.Fatalf("gated %v, want p,q (the sum's producers; stem and c have a batch norm)", gated)
	}
	if err := gg.Validate(); err != nil {
		t.Fatal(err)
	}
	gnet, err := models.Compile(gg, backend(), 2)
	if err != nil {
		t.Fatal(err)
	}
	export.RandomizeParams(gnet.Params, 3) // gates included: random, some negative
	in := make([]float32, len(gnet.Input.Data))
	r := rand.New(rand.NewPCG(1, 1))
	for i := range in {
		in[i] = float32(r.NormFloat64())
	}
	copy(gnet.Input.Data, in)
	gnet.Forward(false)
	want := append([]float32(nil), gnet.Output.Data...)
	net, err := models.Compile(g, backend(), 2)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range net.Params {
		names = append(names, p.Name)
	}
	folded, err := foldGates(gnet.Params, names, gated)
	if err != nil {
		t.Fatal(err)
	}
	if err := copyParams(net.Params, folded); err != nil {
		t.Fatal(err)
	}
	copy(net.Input.Data, in)
	net.Forward(false)
	for i, v := range net.Output.Data {
		if math.Abs(float64(v-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("output %d: folded %g, gated %g", i, v, want[i])
		}
	}
}
