// Command proxycells prepares the random-cell baseline of issue 4: it reads
// the derived architecture of a proxy-space search, optionally restacks it
// deeper or wider, and writes it next to n networks whose cells are sampled
// at random from the same space at about the same parameter count, so that
// bench/retrain.sh can retrain them all with the same budget and seed.
//
//	proxycells -arch RUN/arch.json -n 5 -seed 1 -tolerance 0.1 [-cells C -channels W] [-sample auto|darts|matched] -out DIR
//
// Two ways of sampling a cell (-sample):
//
//   - darts: every intermediate node gets 2 in-edges from distinct earlier
//     nodes, one op each, all uniform (the DARTS genotype space, and what the
//     random baselines of the DARTS and BayesNAS papers sample).
//   - matched: the cell has as many edges as the derived cell of the same
//     type, and its edges carry the derived cell's per-edge op counts in a
//     random order. The edge set is uniform over the sets of that size in
//     which every edge leaves a node that some edge reaches (the validity
//     rule of models.ProxyConfig), and the ops of an edge are a uniform
//     subset of the space. A BayesNAS derivation keeps several ops per edge
//     and a variable number of edges per node, so this is the baseline of the
//     same shape; a DARTS-shaped random cell would be several times smaller.
//
// auto (the default) takes darts when both derived cells are DARTS-shaped
// and matched otherwise. A sample is redrawn until the parameter count of its
// network (models.Count) is within the tolerance of the derived network's and
// it differs from the derived network and from every earlier sample: the
// result is uniform over those networks. Random network i draws from its own
// stream seeded by (seed, i), so -n 10 begins with the networks of -n 5.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"bayesnas/models"
)

func main() {
	var o options
	flag.StringVar(&o.arch, "arch", "", "derived architecture (a search's arch.json, built by the proxy builder)")
	flag.IntVar(&o.n, "n", 5, "number of random networks")
	flag.Uint64Var(&o.seed, "seed", 1, "random seed")
	flag.Float64Var(&o.tolerance, "tolerance", 0.1, "largest relative difference of a random network's parameter count from the derived network's")
	flag.IntVar(&o.cells, "cells", 0, "cells of the restacked networks (0: as in -arch)")
	flag.IntVar(&o.channels, "channels", 0, "channels of the first cells (0: as in -arch)")
	flag.StringVar(&o.sample, "sample", "auto", "how random cells are drawn: darts, matched or auto")
	flag.IntVar(&o.maxTries, "max-tries", 20000, "samples drawn per random network before giving up")
	flag.StringVar(&o.out, "out", "", "output directory (derived.json, random1.json, ...)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "proxycells: unexpected arguments %v\n", flag.Args())
		os.Exit(2)
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "proxycells:", err)
		os.Exit(1)
	}
}

type options struct {
	arch      string
	n         int
	seed      uint64
	tolerance float64
	cells     int
	channels  int
	sample    string
	maxTries  int
	out       string
}

// network is one written network and its counts.
type network struct {
	name   string
	cfg    models.ProxyConfig
	params int64
	macs   int64
	tries  int
}

func (o options) check() error {
	switch {
	case o.arch == "":
		return errors.New("-arch is required")
	case o.out == "":
		return errors.New("-out is required")
	case o.n < 1:
		return fmt.Errorf("-n = %d, want >= 1", o.n)
	case !(o.tolerance >= 0) || math.IsInf(o.tolerance, 0):
		return fmt.Errorf("-tolerance = %g, want a finite value >= 0", o.tolerance)
	case o.cells < 0:
		return fmt.Errorf("-cells = %d, want >= 1 (0: as in -arch)", o.cells)
	case o.channels < 0:
		return fmt.Errorf("-channels = %d, want >= 1 (0: as in -arch)", o.channels)
	case o.maxTries < 1:
		return fmt.Errorf("-max-tries = %d, want >= 1", o.maxTries)
	}
	switch o.sample {
	case "auto", "darts", "matched":
	default:
		return fmt.Errorf("-sample = %q, want auto, darts or matched", o.sample)
	}
	return nil
}

func run(o options, stdout io.Writer) error {
	if err := o.check(); err != nil {
		return err
	}
	cfg, err := readDerived(o.arch)
	if err != nil {
		return err
	}
	if o.cells > 0 {
		cfg.Cells = o.cells
	}
	if o.channels > 0 {
		cfg.Channels = o.channels
	}
	derived, err := countNetwork("derived", cfg)
	if err != nil {
		return fmt.Errorf("restacking %s (-cells %d -channels %d): %w", o.arch, cfg.Cells, cfg.Channels, err)
	}
	ops := cfg.Ops
	if len(ops) == 0 {
		ops = models.ProxyOps
	}
	mode := o.sample
	if mode == "auto" {
		mode = "matched"
		if dartsShaped(cfg.Normal, cfg.Nodes) && dartsShaped(cfg.Reduce, cfg.Nodes) {
			mode = "darts"
		}
	}
	var normal, reduce func(*rand.Rand) []models.ProxyEdge
	if mode == "darts" {
		normal = func(r *rand.Rand) []models.ProxyEdge { return models.RandomDARTSCell(r, cfg.Nodes, ops) }
		reduce = normal
	} else {
		ns, rs := shapeOf(cfg.Normal), shapeOf(cfg.Reduce)
		for _, s := range []cellShape{ns, rs} {
			if m := slices.Max(s.opCounts); m > len(ops) {
				return fmt.Errorf("%s: an edge keeps %d ops, more than the %d of the space %v", o.arch, m, len(ops), ops)
			}
		}
		normal = func(r *rand.Rand) []models.ProxyEdge { return sampleMatched(r, ns, cfg.Nodes, ops) }
		reduce = func(r *rand.Rand) []models.ProxyEdge { return sampleMatched(r, rs, cfg.Nodes, ops) }
	}

	nets := []network{derived}
	seen := map[string]bool{cellsKey(cfg): true}
	for i := 1; i <= o.n; i++ {
		name := fmt.Sprintf("random%d", i)
		r := rand.New(rand.NewPCG(o.seed, uint64(i)))
		closest := int64(-1)
		var got *network
		for try := 1; try <= o.maxTries && got == nil; try++ {
			c := cfg
			c.Normal, c.Reduce = normal(r), reduce(r)
			if seen[cellsKey(c)] {
				continue
			}
			nw, err := countNetwork(name, c)
			if err != nil {
				return fmt.Errorf("%s: sampled cells do not build (a bug of the sampler): %w", name, err)
			}
			if closest < 0 || absDiff(nw.params, derived.params) < absDiff(closest, derived.params) {
				closest = nw.params
			}
			if float64(absDiff(nw.params, derived.params)) <= o.tolerance*float64(derived.params) {
				nw.tries = try
				got = &nw
			}
		}
		if got == nil {
			return fmt.Errorf("%s: no %s sample within %g of the derived network's %d parameters in %d tries (closest %d): raise -tolerance or -max-tries",
				name, mode, o.tolerance, derived.params, o.maxTries, closest)
		}
		seen[cellsKey(got.cfg)] = true
		nets = append(nets, *got)
	}

	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("creating -out %s: %w", o.out, err)
	}
	for _, nw := range nets {
		g, _, err := models.ProxyNetwork(nw.cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", nw.name, err)
		}
		if err := g.WriteGraph(filepath.Join(o.out, nw.name+".json")); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s: %d cells, %d channels, %d nodes, stem x%d stride %d; random cells: %s, seed %d, tolerance %g\n",
		o.arch, cfg.Cells, cfg.Channels, cfg.Nodes, cfg.StemMultiplier, cfg.StemStride, mode, o.seed, o.tolerance)
	fmt.Fprintf(stdout, "%-10s %10s %8s %10s %6s %6s %6s\n", "name", "params", "vs der.", "M MACs", "ops N", "ops R", "tries")
	for _, nw := range nets {
		fmt.Fprintf(stdout, "%-10s %10d %+7.1f%% %10.2f %6d %6d %6d\n", nw.name, nw.params,
			100*float64(nw.params-derived.params)/float64(derived.params), float64(nw.macs)/1e6,
			opCount(nw.cfg.Normal), opCount(nw.cfg.Reduce), nw.tries)
	}
	fmt.Fprintf(stdout, "wrote %d networks to %s\n", len(nets), o.out)
	return nil
}

// readDerived reads the proxy configuration a derived network was built
// from, and checks that it rebuilds the graph in the file: the cells written
// next to it are only comparable if the record is the network.
func readDerived(path string) (models.ProxyConfig, error) {
	var cfg models.ProxyConfig
	g, err := models.ReadGraph(path)
	if err != nil {
		return cfg, err
	}
	switch {
	case g.Builder == nil:
		return cfg, fmt.Errorf("%s: no builder field: the proxy configuration of the cells is not recorded", path)
	case g.Builder.Name != "proxy":
		return cfg, fmt.Errorf("%s: builder.name = %q, want \"proxy\" (a network derived by bayesnas search)", path, g.Builder.Name)
	}
	dec := json.NewDecoder(bytes.NewReader(g.Builder.Params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("%s: builder.params: %w", path, err)
	}
	if cfg.Search {
		return cfg, fmt.Errorf("%s: builder.params.search is true: this is the supernet, not a derived network", path)
	}
	rebuilt, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		return cfg, fmt.Errorf("%s: builder.params: %w", path, err)
	}
	a, err := json.Marshal(g.Nodes)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	b, err := json.Marshal(rebuilt.Nodes)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	if !bytes.Equal(a, b) {
		return cfg, fmt.Errorf("%s: builder.params do not rebuild the nodes of the file (edited by hand?)", path)
	}
	return cfg, nil
}

func countNetwork(name string, cfg models.ProxyConfig) (network, error) {
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		return network{}, err
	}
	c, err := g.Count()
	if err != nil {
		return network{}, err
	}
	return network{name: name, cfg: cfg, params: c.Params, macs: c.MACs}, nil
}

// dartsShaped says whether every intermediate node has two in-edges of one op each.
func dartsShaped(edges []models.ProxyEdge, nodes int) bool {
	in := make([]int, nodes+2)
	for _, e := range edges {
		if len(e.Ops) != 1 {
			return false
		}
		in[e.To]++
	}
	for k := 2; k < nodes+2; k++ {
		if in[k] != 2 {
			return false
		}
	}
	return true
}

// cellShape is what matched sampling keeps of a derived cell.
type cellShape struct {
	edges    int
	opCounts []int // per edge, in the derived cell's order
}

func shapeOf(edges []models.ProxyEdge) cellShape {
	s := cellShape{edges: len(edges)}
	for _, e := range edges {
		s.opCounts = append(s.opCounts, len(e.Ops))
	}
	return s
}

// sampleMatched draws a cell of shape s: a uniform valid edge set of s.edges
// edges (by rejection), the op counts of s in a uniform order, and a uniform
// subset of ops of that size on each edge. Edges are sorted by (to, from) and
// ops in the space's order, so equal cells compare equal.
func sampleMatched(r *rand.Rand, s cellShape, nodes int, ops []string) []models.ProxyEdge {
	var all [][2]int
	for k := 2; k < nodes+2; k++ {
		for j := range k {
			all = append(all, [2]int{j, k})
		}
	}
	var pick [][2]int
	for {
		r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		pick = slices.Clone(all[:s.edges])
		if validEdgeSet(pick, nodes) {
			break
		}
	}
	slices.SortFunc(pick, func(a, b [2]int) int {
		if a[1] != b[1] {
			return a[1] - b[1]
		}
		return a[0] - b[0]
	})
	counts := slices.Clone(s.opCounts)
	r.Shuffle(len(counts), func(i, j int) { counts[i], counts[j] = counts[j], counts[i] })
	edges := make([]models.ProxyEdge, len(pick))
	for i, p := range pick {
		idx := r.Perm(len(ops))[:counts[i]]
		slices.Sort(idx)
		e := models.ProxyEdge{From: p[0], To: p[1]}
		for _, o := range idx {
			e.Ops = append(e.Ops, ops[o])
		}
		edges[i] = e
	}
	return edges
}

// validEdgeSet: every edge leaves a cell input or a node some edge reaches.
func validEdgeSet(edges [][2]int, nodes int) bool {
	reached := make([]bool, nodes+2)
	reached[0], reached[1] = true, true
	for _, e := range edges {
		reached[e[1]] = true
	}
	for _, e := range edges {
		if !reached[e[0]] {
			return false
		}
	}
	return true
}

// cellsKey identifies a network's cells up to edge order and op order.
func cellsKey(cfg models.ProxyConfig) string {
	canon := func(edges []models.ProxyEdge) []models.ProxyEdge {
		out := make([]models.ProxyEdge, len(edges))
		for i, e := range edges {
			out[i] = models.ProxyEdge{From: e.From, To: e.To, Ops: slices.Sorted(slices.Values(e.Ops))}
		}
		slices.SortFunc(out, func(a, b models.ProxyEdge) int {
			if a.To != b.To {
				return a.To - b.To
			}
			return a.From - b.From
		})
		return out
	}
	b, _ := json.Marshal([2][]models.ProxyEdge{canon(cfg.Normal), canon(cfg.Reduce)}) // plain structs: cannot fail
	return string(b)
}

func opCount(edges []models.ProxyEdge) int {
	n := 0
	for _, e := range edges {
		n += len(e.Ops)
	}
	return n
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}
