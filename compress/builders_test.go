package compress

import (
	"math/rand/v2"
	"testing"

	"bayesnas/internal/fixtures"
	"bayesnas/models"
)

// The networks every test runs on: one per builder.

func pyramidNet(t testing.TB) *models.Graph {
	t.Helper()
	g, err := models.PyramidNet(models.PyramidNetDefault())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// proxyNet is a derived proxy-cell network with every op somewhere, skips
// from both cell inputs (stride-2 skips in the reduction cell) and a dropped
// node's worth of concat inputs.
func proxyNet(t testing.TB) *models.Graph {
	t.Helper()
	cfg := models.ProxySupernetDefault()
	cfg.Search = false
	cfg.Normal = []models.ProxyEdge{
		{From: 0, To: 2, Ops: []string{models.ProxySep3}}, {From: 1, To: 2, Ops: []string{models.ProxySkip}},
		{From: 0, To: 3, Ops: []string{models.ProxyDil3}}, {From: 2, To: 3, Ops: []string{models.ProxyMax3, models.ProxySep5}},
		{From: 1, To: 4, Ops: []string{models.ProxyAvg3}}, {From: 3, To: 4, Ops: []string{models.ProxyDil5}},
		{From: 2, To: 5, Ops: []string{models.ProxySkip}}, {From: 4, To: 5, Ops: []string{models.ProxySep3}},
	}
	cfg.Reduce = []models.ProxyEdge{
		{From: 0, To: 2, Ops: []string{models.ProxySkip}}, {From: 1, To: 2, Ops: []string{models.ProxyMax3}},
		{From: 1, To: 3, Ops: []string{models.ProxySep3}}, {From: 2, To: 3, Ops: []string{models.ProxySkip}},
		{From: 0, To: 4, Ops: []string{models.ProxyAvg3}}, {From: 3, To: 4, Ops: []string{models.ProxyDil3}},
		{From: 1, To: 5, Ops: []string{models.ProxySkip}}, {From: 4, To: 5, Ops: []string{models.ProxySep5}},
	}
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// treeNet is a derived tree-cell network (the fast search's stack: stem
// stride 2) with cells drawn as hwprofile.Sample draws them, the first with
// a dead half, the second with an identity path through both halves.
func treeNet(t testing.TB) *models.Graph {
	t.Helper()
	cfg := models.PyramidTreeDefault()
	cfg.StemStride = 2
	cfg.Search = false
	r := rand.New(rand.NewPCG(7, 1))
	half := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
	half.Edges[0] = []string{models.TreeSep3}
	half.Edges[1] = []string{models.TreeIdentity}
	half.Edges[2] = []string{models.TreeAvg3, models.TreeDil3}
	ident := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
	for _, top := range []int{0, 6} {
		ident.Edges[top] = []string{models.TreeIdentity}
		ident.Edges[top+1] = []string{models.TreeSep3}
		ident.Edges[top+2] = []string{models.TreeIdentity}
	}
	cfg.Cells = append(cfg.Cells, half, ident)
	for len(cfg.Cells) < 3*cfg.BlocksPerStage {
		cfg.Cells = append(cfg.Cells, randomTreeCell(r))
	}
	g, _, err := models.PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// randomTreeCell is hwprofile's: each edge kept with probability 2/3 with
// one or two ops, then the connectivity rules; a dead cell is redrawn.
func randomTreeCell(r *rand.Rand) models.TreeCell {
	for {
		c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
		for e := range c.Edges {
			if r.IntN(3) == 0 {
				continue
			}
			perm := r.Perm(len(models.TreeOps))
			for _, j := range perm[:1+r.IntN(2)] {
				c.Edges[e] = append(c.Edges[e], models.TreeOps[j])
			}
		}
		if p := c.Pruned(); !p.Dead() {
			return p
		}
	}
}

func proxylessNet(t testing.TB) *models.Graph {
	t.Helper()
	g, err := models.ReadProxylessNAS(fixtures.MustPath(t, "proxylessnas_cifar10_net.config"))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

var builders = []struct {
	name  string
	build func(testing.TB) *models.Graph
}{
	{"pyramidnet", pyramidNet},
	{"proxy", proxyNet},
	{"tree", treeNet},
	{"proxyless", proxylessNet},
}
