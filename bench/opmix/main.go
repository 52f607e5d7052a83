// Command opmix reports how much of a derived network is parameter-free: of
// the live edges and ops of its cells, how many are skip connections
// (skip_connect, identity) or pooling (max_pool_3x3, avg_pool_3x3). A search
// that drifts to parameter-free ops (the DARTS collapse) shows here.
//
//	go run ./bench/opmix runs/search-proxy/arch.json [more arch.json ...]
//
// It reads the builder parameters recorded in arch.json: the proxy builder's
// normal and reduce cells (counted once per cell of the stack that uses
// them), or the pyramid-tree builder's cells (one per block). A derived cell
// holds live edges only (the builders refuse an edge out of a node nothing
// reaches, and a tree cell must equal its Pruned form); the tree cells are
// pruned again here all the same.
//
// "free by name" counts an op by its name. "free" also counts a proxy
// skip_connect on a stride-2 edge of a reduction cell as parametric, because
// the builder replaces it there with a ReLU-conv1x1-BN (DARTS's
// FactorizedReduce). An edge is parameter-free when every op on it is.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"bayesnas/models"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: opmix ARCH.json [ARCH.json ...] (derived networks of the proxy or pyramid-tree builder)")
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, path := range flag.Args() {
		m, err := read(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "opmix:", err)
			os.Exit(1)
		}
		m.print(os.Stdout, path)
	}
}

// mix counts the live edges and ops of one network's cells.
type mix struct {
	builder                       string
	edges, freeEdges, freeEdgesNm int
	ops, freeOps, freeOpsNm       int
	byOp                          map[string]int
}

// freeByName reports whether op is parameter-free by its name.
func freeByName(op string) bool {
	switch op {
	case models.ProxySkip, models.TreeIdentity, models.ProxyMax3, models.ProxyAvg3:
		return true
	}
	return false
}

// edge adds one live edge; strided says the builder gives a skip parameters.
func (m *mix) edge(ops []string, strided bool) {
	if len(ops) == 0 {
		return
	}
	m.edges++
	allFree, allFreeNm := true, true
	for _, op := range ops {
		m.ops++
		m.byOp[op]++
		nm := freeByName(op)
		free := nm && !(strided && op == models.ProxySkip)
		if nm {
			m.freeOpsNm++
		}
		if free {
			m.freeOps++
		}
		allFree = allFree && free
		allFreeNm = allFreeNm && nm
	}
	if allFree {
		m.freeEdges++
	}
	if allFreeNm {
		m.freeEdgesNm++
	}
}

func read(path string) (*mix, error) {
	g, err := models.ReadGraph(path)
	if err != nil {
		return nil, err
	}
	if g.Builder == nil {
		return nil, fmt.Errorf("%s: no builder recorded", path)
	}
	m := &mix{builder: g.Builder.Name, byOp: map[string]int{}}
	switch g.Builder.Name {
	case "proxy":
		var cfg models.ProxyConfig
		if err := json.Unmarshal(g.Builder.Params, &cfg); err != nil {
			return nil, fmt.Errorf("%s: builder params: %w", path, err)
		}
		if cfg.Search {
			return nil, fmt.Errorf("%s: a supernet, want a derived network", path)
		}
		for _, reduction := range models.ProxyReductions(cfg.Cells) {
			cell := cfg.Normal
			if reduction {
				cell = cfg.Reduce
			}
			for _, e := range cell {
				m.edge(e.Ops, reduction && e.From < 2)
			}
		}
	case "pyramid-tree":
		var cfg models.PyramidTreeConfig
		if err := json.Unmarshal(g.Builder.Params, &cfg); err != nil {
			return nil, fmt.Errorf("%s: builder params: %w", path, err)
		}
		if cfg.Search || len(cfg.Cells) == 0 {
			return nil, fmt.Errorf("%s: a supernet or a network without cells, want a derived network", path)
		}
		for _, c := range cfg.Cells {
			for _, ops := range c.Pruned().Edges {
				m.edge(ops, false)
			}
		}
	default:
		return nil, fmt.Errorf("%s: builder %q, want proxy or pyramid-tree", path, g.Builder.Name)
	}
	if m.edges == 0 {
		return nil, errors.New(path + ": no live edge")
	}
	return m, nil
}

func pct(a, b int) float64 { return 100 * float64(a) / float64(b) }

func (m *mix) print(w io.Writer, path string) {
	fmt.Fprintf(w, "%s (%s)\n", path, m.builder)
	fmt.Fprintf(w, "  ops:   %d live, %d parameter-free (%.1f %%); by name %d (%.1f %%)\n",
		m.ops, m.freeOps, pct(m.freeOps, m.ops), m.freeOpsNm, pct(m.freeOpsNm, m.ops))
	fmt.Fprintf(w, "  edges: %d live, %d parameter-free (%.1f %%); by name %d (%.1f %%)\n",
		m.edges, m.freeEdges, pct(m.freeEdges, m.edges), m.freeEdgesNm, pct(m.freeEdgesNm, m.edges))
	names := make([]string, 0, len(m.byOp))
	for op := range m.byOp {
		names = append(names, op)
	}
	slices.Sort(names)
	fmt.Fprint(w, "  by op:")
	for _, op := range names {
		fmt.Fprintf(w, " %s %d", op, m.byOp[op])
	}
	fmt.Fprintln(w)
}
