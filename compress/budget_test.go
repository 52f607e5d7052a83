package compress

import (
	"strings"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
)

func TestParseBudget(t *testing.T) {
	for in, want := range map[string]Budget{"2.5ms": {Ms: 2.5}, " 0.5x": {Fraction: 0.5}, "1x": {Fraction: 1}} {
		b, err := ParseBudget(in)
		if err != nil || b != want {
			t.Errorf("%q: %+v %v, want %+v", in, b, err, want)
		}
	}
	for _, bad := range []string{"", "2.5", "-1ms", "0x", "1.5x", "NaNms", "fastms"} {
		if _, err := ParseBudget(bad); err == nil || !strings.Contains(err.Error(), "budget") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
	if b, _ := ParseBudget("0.3x"); b.Of(10) != 3 {
		t.Errorf("0.3x of 10 ms: %v", b.Of(10))
	}
}

// macsLatency prices a network by its multiply-adds plus a cost per node:
// a stand-in device for the selection logic.
type macsLatency struct{}

func (macsLatency) LatencyMs(g *models.Graph, _ []*nn.Param) (float64, error) {
	c, err := g.Count()
	if err != nil {
		return 0, err
	}
	return float64(c.MACs)/1e7 + 0.001*float64(len(g.Nodes)), nil
}

// Both selections bring the default PyramidNet under half its latency,
// the pruned network is valid, and the widths they cut are multiples of 8
// wherever the layer allows.
func TestSelectionsMeetBudget(t *testing.T) {
	g, err := models.PyramidNet(models.PyramidNetDefault())
	if err != nil {
		t.Fatal(err)
	}
	params := randomParams(t, g, 3)
	base, _ := macsLatency{}.LatencyMs(g, params)
	for _, method := range []string{"uniform", "l1"} {
		opt := BudgetOptions{Latency: macsLatency{}, BudgetMs: 0.5 * base, Groups: DefaultGroupOptions()}
		var sel *Selection
		if method == "uniform" {
			sel, err = Uniform(g, params, opt)
		} else {
			sel, err = Greedy(g, params, nil, "l1", opt)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !sel.MetBudget || sel.PrunedMs > 0.5*base || sel.BaseMs != base || len(sel.Removed) == 0 {
			t.Fatalf("%s: %+v (base %v)", method, sel, base)
		}
		pg, _, _, err := PruneWith(g, params, sel.Removed, DefaultGroupOptions())
		if err != nil {
			t.Fatal(err)
		}
		if ms, _ := (macsLatency{}).LatencyMs(pg, nil); ms != sel.PrunedMs {
			t.Fatalf("%s: the selection says %v ms, its pruned network prices at %v", method, sel.PrunedMs, ms)
		}
		before := map[string]int{}
		for _, n := range g.Nodes {
			before[n.Name] = n.Attrs.OutChannels
		}
		cut := 0
		for _, n := range pg.Nodes {
			if n.Op != models.OpConv || n.Attrs.OutChannels == before[n.Name] {
				continue
			}
			cut++
			if n.Attrs.OutChannels%8 != 0 {
				t.Errorf("%s: %s cut from %d to %d channels, not a multiple of 8", method, n.Name, before[n.Name], n.Attrs.OutChannels)
			}
		}
		if cut == 0 {
			t.Fatalf("%s: no conv was cut", method)
		}
		t.Logf("%s: %.3f -> %.3f ms (budget %.3f), %d groups removed, %d convs cut, %d predictions", method, base, sel.PrunedMs, opt.BudgetMs, len(sel.Removed), cut, sel.Steps)
	}
}
