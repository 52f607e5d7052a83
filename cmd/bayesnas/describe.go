package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"bayesnas/models"
	"bayesnas/pipeline"
)

func newDescribeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe",
		Short: "Build a network from the IR and print its shapes, parameters and multiply-adds",
		Example: `  bayesnas describe --preset pyramidnet-cifar10
  bayesnas describe --builder pyramidnet --params '{"blocks_per_stage":3,"alpha":48}' --out arch.json
  bayesnas describe --arch runs/demo/arch.json --nodes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			preset, _ := f.GetString("preset")
			builder, _ := f.GetString("builder")
			params, _ := f.GetString("params")
			arch, _ := f.GetString("arch")
			out, _ := f.GetString("out")
			showNodes, _ := f.GetBool("nodes")
			var g *models.Graph
			var err error
			given := 0
			for _, name := range []string{"arch", "preset", "builder"} {
				if f.Changed(name) {
					given++
				}
			}
			if given > 1 {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give only one of --preset, --builder or --arch"))
			}
			switch {
			case arch != "":
				g, err = models.ReadGraph(arch)
			case preset != "":
				// "<builder>-<preset>", e.g. pyramidnet-cifar10.
				name, p, _ := strings.Cut(preset, "-")
				b, ok := models.Builders[name]
				if !ok {
					return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--preset %q: builder %q is not known (known: %s)", preset, name, strings.Join(slices.Sorted(maps.Keys(models.Builders)), ", ")))
				}
				g, err = b(json.RawMessage(fmt.Sprintf(`{"preset":%q}`, p)))
			case builder != "":
				b, ok := models.Builders[builder]
				if !ok {
					return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--builder %q is not known (known: %s)", builder, strings.Join(slices.Sorted(maps.Keys(models.Builders)), ", ")))
				}
				if !json.Valid([]byte(params)) {
					return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--params is not valid JSON: %s", params))
				}
				g, err = b(json.RawMessage(params))
			default:
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give one of --preset, --builder or --arch"))
			}
			if err != nil {
				if arch == "" {
					// A builder's parameters are flags: --preset, --params.
					return pipeline.Mark(pipeline.ErrUsage, err)
				}
				return err
			}
			c, err := g.Count()
			if err != nil {
				return err
			}
			shapes, err := g.InferShapes()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: input %v, %d nodes, output %v\n", g.Name, g.Input.Shape, len(g.Nodes), shapes[g.Output])
			fmt.Fprintf(w, "parameters: %d (%.3f M), buffers: %d\n", c.Params, float64(c.Params)/1e6, c.Buffers)
			fmt.Fprintf(w, "multiply-adds per image: %d (%.1f M)\n", c.MACs, float64(c.MACs)/1e6)
			if showNodes {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "node\top\toutput\tparams\tMACs")
				for _, nc := range c.Nodes {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\n", nc.Name, nc.Op, shapes[nc.Name], nc.Params, nc.MACs)
				}
				tw.Flush()
			}
			if out != "" {
				if err := g.WriteGraph(out); err != nil {
					return err
				}
				fmt.Fprintf(w, "wrote %s\n", out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("preset", "", "a named network, e.g. pyramidnet-cifar10, pyramidnet-default")
	f.String("builder", "", "builder name, e.g. pyramidnet")
	f.String("params", "{}", "builder parameters as JSON")
	f.String("arch", "", "architecture JSON file")
	f.String("out", "", "write the architecture JSON here")
	f.Bool("nodes", false, "print every node with its output shape, parameters and multiply-adds")
	return cmd
}
