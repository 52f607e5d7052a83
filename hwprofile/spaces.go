package hwprofile

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"bayesnas/models"
)

// Spaces are the named network families a profile is measured for and
// checked on, with the bundled configs' settings.
var Spaces = []string{"proxy", "tree", "pyramidnet"}

// Space is a family of networks: the derived networks of a proxy-cell or
// tree-cell search space (the stack of a search config), or the default
// PyramidNet at the widths compression leaves. Name ("proxy", "tree",
// "pyramidnet") says which calibration of a profile prices them.
type Space struct {
	Name  string
	Proxy models.ProxyConfig       // for "proxy": the supernet's stack
	Tree  models.PyramidTreeConfig // for "tree"
}

// NamedSpace returns a space of Spaces with the settings of the bundled
// configs: configs/search-proxy.yaml, configs/search-tree-fast.yaml, the
// default PyramidNet.
func NamedSpace(name string) (Space, error) {
	switch name {
	case "proxy":
		return Space{Name: name, Proxy: models.ProxySupernetDefault()}, nil
	case "tree":
		cfg := models.PyramidTreeDefault()
		cfg.StemStride = 2 // configs/search-tree-fast.yaml
		return Space{Name: name, Tree: cfg}, nil
	case "pyramidnet":
		return Space{Name: name}, nil
	}
	return Space{}, fmt.Errorf("space %q: want one of %s", name, strings.Join(Spaces, ", "))
}

// Base returns the network of a space whose kernels a profile of it must
// price: for proxy and tree spaces the derived network of the stack with
// every op on every edge, so that every op at every position is a kernel;
// for pyramidnet the default PyramidNet (whose widths compression changes:
// a plan adds channel grids around it).
func (sp Space) Base() (*models.Graph, error) {
	switch sp.Name {
	case "proxy":
		cfg, ops := sp.derivedProxy()
		for to := 2; to < cfg.Nodes+2; to++ {
			for from := range to {
				cfg.Normal = append(cfg.Normal, models.ProxyEdge{From: from, To: to, Ops: ops})
			}
		}
		cfg.Reduce = cfg.Normal
		g, _, err := models.ProxyNetwork(cfg)
		return g, err
	case "tree":
		cfg, ops := sp.derivedTree()
		all := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
		for e := range all.Edges {
			all.Edges[e] = ops
		}
		for range sp.treeCells() {
			cfg.Cells = append(cfg.Cells, all)
		}
		g, _, err := models.PyramidTreeNetwork(cfg)
		return g, err
	case "pyramidnet":
		return models.PyramidNet(models.PyramidNetDefault())
	}
	return nil, fmt.Errorf("space %q: want one of %s", sp.Name, strings.Join(Spaces, ", "))
}

// derivedProxy is the space's stack as a derived network with no cells
// yet, and the candidate ops its cells draw from.
func (sp Space) derivedProxy() (models.ProxyConfig, []string) {
	cfg := sp.Proxy
	cfg.Search, cfg.Normal, cfg.Reduce = false, nil, nil
	if len(cfg.Ops) == 0 {
		return cfg, models.ProxyOps
	}
	return cfg, cfg.Ops
}

// derivedTree is derivedProxy for the tree space.
func (sp Space) derivedTree() (models.PyramidTreeConfig, []string) {
	cfg := sp.Tree
	cfg.Search, cfg.Cells = false, nil
	if len(cfg.Ops) == 0 {
		return cfg, models.TreeOps
	}
	return cfg, cfg.Ops
}

// treeCells is how many cells a derived tree network of the space has.
func (sp Space) treeCells() int {
	if sp.Tree.SharePerStage {
		return 3
	}
	return 3 * sp.Tree.BlocksPerStage
}

// Base is NamedSpace(name).Base().
func Base(name string) (*models.Graph, error) {
	sp, err := NamedSpace(name)
	if err != nil {
		return nil, err
	}
	return sp.Base()
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

// Sample returns n networks of the space drawn at random with seed: proxy
// and tree networks with random derived cells from the space's ops, and
// PyramidNets with the bottleneck width of every block drawn as
// compression would leave it (a multiple of 8, at most the default width
// rounded up to 8). Network i depends only on (seed, i).
func (sp Space) Sample(n int, seed uint64) ([]*models.Graph, error) {
	var out []*models.Graph
	for i := range n {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		var g *models.Graph
		var err error
		switch sp.Name {
		case "proxy":
			cfg, ops := sp.derivedProxy()
			cfg.Normal, cfg.Reduce = models.RandomDARTSCell(r, cfg.Nodes, ops), models.RandomDARTSCell(r, cfg.Nodes, ops)
			g, _, err = models.ProxyNetwork(cfg)
		case "tree":
			cfg, ops := sp.derivedTree()
			for range sp.treeCells() {
				cfg.Cells = append(cfg.Cells, randomTreeCell(r, ops))
			}
			g, _, err = models.PyramidTreeNetwork(cfg)
		case "pyramidnet":
			g, err = randomWidths(r)
		default:
			return nil, fmt.Errorf("space %q: want one of %s", sp.Name, strings.Join(Spaces, ", "))
		}
		if err != nil {
			return nil, fmt.Errorf("%s network %d: %w", sp.Name, i, err)
		}
		g.Name = fmt.Sprintf("%s-%d-%d", sp.Name, seed, i)
		out = append(out, g)
	}
	return out, nil
}

// Sample is NamedSpace(name).Sample(n, seed).
func Sample(name string, n int, seed uint64) ([]*models.Graph, error) {
	sp, err := NamedSpace(name)
	if err != nil {
		return nil, err
	}
	return sp.Sample(n, seed)
}

// randomTreeCell keeps each edge with probability 2/3, with one or two
// uniform ops, then applies the connectivity rules; a cell left dead is
// redrawn.
func randomTreeCell(r *rand.Rand, ops []string) models.TreeCell {
	for {
		c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
		for e := range c.Edges {
			if r.IntN(3) == 0 {
				continue
			}
			perm := r.Perm(len(ops))
			for _, j := range perm[:min(1+r.IntN(2), len(ops))] {
				c.Edges[e] = append(c.Edges[e], ops[j])
			}
		}
		if p := c.Pruned(); !p.Dead() {
			return p
		}
	}
}

// randomWidths rewrites the default PyramidNet's bottleneck widths: in
// every block, conv1's output channels and the grouped conv2 that maps them
// to themselves (the coupled channels compression prunes together). A
// network keeps a fraction f of the widths, uniform in [0.1, 1], and each
// block about f of its width (times a factor uniform in [0.6, 1.4]): the
// range compression leaves from the tightest budget to none, with blocks
// pruned unevenly. Uniform widths per block instead bunch every network
// around half the default's latency, and a calibration fitted there missed
// the pruned networks compression produces.
func randomWidths(r *rand.Rand) (*models.Graph, error) {
	g, err := models.PyramidNet(models.PyramidNetDefault())
	if err != nil {
		return nil, err
	}
	f := 0.1 + 0.9*r.Float64()
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
			k := int(math.Round(f * (0.6 + 0.8*r.Float64()) * float64(top)))
			w := 8 * min(max(k, 1), top)
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
