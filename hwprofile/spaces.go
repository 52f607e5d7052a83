package hwprofile

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"bayesnas/models"
)

// Spaces are the network families a profile is measured for and checked on.
var Spaces = []string{"proxy", "tree", "pyramidnet"}

// Base returns the network of a space whose kernels a profile of it must
// price: for the proxy and tree spaces the derived network of the bundled
// search's stack (configs/search-proxy.yaml, configs/search-tree-fast.yaml)
// with every op on every edge, so that every op at every position is a
// kernel; for pyramidnet the default PyramidNet (whose widths compression
// changes: a plan adds channel grids around it).
func Base(space string) (*models.Graph, error) {
	switch space {
	case "proxy":
		cfg := models.ProxySupernetDefault()
		cfg.Search = false
		for to := 2; to < cfg.Nodes+2; to++ {
			for from := range to {
				cfg.Normal = append(cfg.Normal, models.ProxyEdge{From: from, To: to, Ops: models.ProxyOps})
			}
		}
		cfg.Reduce = cfg.Normal
		g, _, err := models.ProxyNetwork(cfg)
		return g, err
	case "tree":
		cfg := treeConfig()
		cfg.Search = false
		all := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
		for e := range all.Edges {
			all.Edges[e] = models.TreeOps
		}
		for range 3 * cfg.BlocksPerStage {
			cfg.Cells = append(cfg.Cells, all)
		}
		g, _, err := models.PyramidTreeNetwork(cfg)
		return g, err
	case "pyramidnet":
		return models.PyramidNet(models.PyramidNetDefault())
	}
	return nil, fmt.Errorf("space %q: want one of %s", space, strings.Join(Spaces, ", "))
}

// SpaceOf names the space a network belongs to by the builder that made
// it ("" for a network of no known space, such as an imported one): which
// of a profile's calibrations prices it.
func SpaceOf(g *models.Graph) string {
	if g.Builder == nil {
		return ""
	}
	switch g.Builder.Name {
	case "proxy":
		return "proxy"
	case "pyramid-tree":
		return "tree"
	case "pyramidnet":
		return "pyramidnet"
	}
	return ""
}

func treeConfig() models.PyramidTreeConfig {
	cfg := models.PyramidTreeDefault()
	cfg.StemStride = 2 // configs/search-tree-fast.yaml
	return cfg
}

// Sample returns n networks of a space drawn at random with seed: proxy and
// tree networks with random derived cells (the stacks of the bundled search
// configs), PyramidNets with the bottleneck width of every block drawn as
// compression would leave it (a multiple of 8, at most the default width
// rounded up to 8). Network i depends only on (seed, i).
func Sample(space string, n int, seed uint64) ([]*models.Graph, error) {
	var out []*models.Graph
	for i := range n {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		var g *models.Graph
		var err error
		switch space {
		case "proxy":
			cfg := models.ProxySupernetDefault()
			cfg.Search = false
			cfg.Normal, cfg.Reduce = randomProxyCell(r, cfg.Nodes), randomProxyCell(r, cfg.Nodes)
			g, _, err = models.ProxyNetwork(cfg)
		case "tree":
			cfg := treeConfig()
			cfg.Search = false
			for range 3 * cfg.BlocksPerStage {
				cfg.Cells = append(cfg.Cells, randomTreeCell(r))
			}
			g, _, err = models.PyramidTreeNetwork(cfg)
		case "pyramidnet":
			g, err = randomWidths(r)
		default:
			return nil, fmt.Errorf("space %q: want one of %s", space, strings.Join(Spaces, ", "))
		}
		if err != nil {
			return nil, fmt.Errorf("%s network %d: %w", space, i, err)
		}
		g.Name = fmt.Sprintf("%s-%d-%d", space, seed, i)
		out = append(out, g)
	}
	return out, nil
}

// randomProxyCell draws a DARTS-shaped cell: every intermediate node has two
// in-edges from distinct earlier nodes (the two cell inputs are nodes 0 and
// 1), one op each, all uniform.
func randomProxyCell(r *rand.Rand, nodes int) []models.ProxyEdge {
	var edges []models.ProxyEdge
	for to := 2; to < nodes+2; to++ {
		a := r.IntN(to)
		b := r.IntN(to - 1)
		if b >= a {
			b++
		}
		for _, from := range []int{min(a, b), max(a, b)} {
			edges = append(edges, models.ProxyEdge{From: from, To: to, Ops: []string{models.ProxyOps[r.IntN(len(models.ProxyOps))]}})
		}
	}
	return edges
}

// randomTreeCell keeps each edge with probability 2/3, with one or two
// uniform ops, then applies the connectivity rules; a cell left dead is
// redrawn.
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

// randomWidths rewrites the default PyramidNet's bottleneck widths: in
// every block, conv1's output channels and the grouped conv2 that maps them
// to themselves (the coupled channels compression prunes together).
func randomWidths(r *rand.Rand) (*models.Graph, error) {
	g, err := models.PyramidNet(models.PyramidNetDefault())
	if err != nil {
		return nil, err
	}
	width := map[string]int{}
	for _, n := range g.Nodes {
		if n.Op != models.OpConv {
			continue
		}
		block, conv, ok := cutLast(n.Name)
		if !ok || !strings.HasPrefix(block, "stage") {
			continue
		}
		switch conv {
		case "conv1":
			top := (n.Attrs.OutChannels + 7) / 8
			w := 8 * (1 + r.IntN(top))
			width[block] = w
			n.Attrs.OutChannels = w
		case "conv2":
			n.Attrs.OutChannels = width[block]
		}
	}
	return g, g.Validate()
}

func cutLast(name string) (string, string, bool) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}
