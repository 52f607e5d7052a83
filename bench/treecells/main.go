// Command treecells writes the baselines a tree-cell search is compared
// with: the derived network of a pyramid-tree search next to the unsearched
// backbone with every edge of every cell set to one op (identity, and
// depthwise-separable 3x3), same backbone, same stem and head.
//
//	go run ./bench/treecells -arch runs/search-tree/arch.json -out runs/tree-baselines
//
// writes derived.json, identity.json and sep3.json into -out and prints
// their parameters and multiply-adds.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"bayesnas/models"
)

func main() {
	arch := flag.String("arch", "", "derived architecture of a pyramid-tree search (arch.json)")
	out := flag.String("out", "", "output directory")
	flag.Parse()
	if err := run(*arch, *out); err != nil {
		fmt.Fprintln(os.Stderr, "treecells:", err)
		os.Exit(1)
	}
}

func run(arch, out string) error {
	if arch == "" || out == "" {
		return errors.New("-arch and -out are required")
	}
	g, err := models.ReadGraph(arch)
	if err != nil {
		return err
	}
	if g.Builder == nil || g.Builder.Name != "pyramid-tree" {
		return fmt.Errorf("%s: not built by pyramid-tree (builder %+v)", arch, g.Builder)
	}
	var cfg models.PyramidTreeConfig
	if err := json.Unmarshal(g.Builder.Params, &cfg); err != nil {
		return fmt.Errorf("%s: builder params: %w", arch, err)
	}
	if cfg.Search || len(cfg.Cells) == 0 {
		return fmt.Errorf("%s: a supernet or a network without cells, want a derived network", arch)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	nets := []struct {
		name string
		g    *models.Graph
	}{{"derived", g}}
	for _, b := range []struct{ name, op string }{{"identity", models.TreeIdentity}, {"sep3", models.TreeSep3}} {
		base := cfg
		base.Cells = make([]models.TreeCell, len(cfg.Cells))
		for i := range base.Cells {
			base.Cells[i].Edges = make([][]string, models.TreeEdges)
			for e := range base.Cells[i].Edges {
				base.Cells[i].Edges[e] = []string{b.op}
			}
		}
		bg, _, err := models.PyramidTreeNetwork(base)
		if err != nil {
			return fmt.Errorf("%s backbone: %w", b.name, err)
		}
		nets = append(nets, struct {
			name string
			g    *models.Graph
		}{b.name, bg})
	}
	fmt.Printf("%-10s %12s %14s\n", "network", "parameters", "multiply-adds")
	for _, n := range nets {
		c, err := n.g.Count()
		if err != nil {
			return err
		}
		if err := n.g.WriteGraph(filepath.Join(out, n.name+".json")); err != nil {
			return err
		}
		fmt.Printf("%-10s %12d %14d\n", n.name, c.Params, c.MACs)
	}
	return nil
}
