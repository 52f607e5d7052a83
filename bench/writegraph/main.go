// Command writegraph writes a graph JSON file from a registered builder, for
// bench/trainstep.sh and bench/torch_twin.py.
//
//	writegraph -o graph.json [-builder pyramidnet] [-params '{"preset":"cifar10"}']
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"bayesnas/models"
)

func main() {
	out := flag.String("o", "graph.json", "output file")
	builder := flag.String("builder", "pyramidnet", "builder name (a key of models.Builders)")
	params := flag.String("params", "", "builder parameters as JSON (empty: the builder's defaults)")
	flag.Parse()
	if err := run(*out, *builder, *params); err != nil {
		fmt.Fprintln(os.Stderr, "writegraph:", err)
		os.Exit(1)
	}
}

func run(out, builder, params string) error {
	build, ok := models.Builders[builder]
	if !ok {
		return fmt.Errorf("unknown builder %q", builder)
	}
	g, err := build(json.RawMessage(params))
	if err != nil {
		return err
	}
	if err := g.WriteGraph(out); err != nil {
		return err
	}
	c, err := g.Count()
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s, %d nodes, %d parameters, %.1f M MACs per sample\n", out, g.Name, len(g.Nodes), c.Params, float64(c.MACs)/1e6)
	return nil
}
