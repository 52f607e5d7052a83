package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"bayesnas/models"
	"bayesnas/pipeline"
)

func newImportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Convert a published network into an architecture JSON",
		Long: `Convert a network published in another tool's format into our graph IR, so
that it can be described, trained (bayesnas train --arch) and exported like a
derived network.`,
		// Without these cobra prints the help and succeeds on a mistyped
		// format; a script must see the failure.
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("import: give the source format (proxylessnas)"))
		},
	}
	px := &cobra.Command{
		Use:   "proxylessnas FILE",
		Short: "Import ProxylessNAS's PyramidTreeNet net.config (its released CIFAR-10 network)",
		Long: `Import a ProxylessNAS net.config JSON describing a PyramidTreeNet (tree cells
in a PyramidNet, as its released CIFAR-10 network) and write it as an
architecture JSON. The input is 3x32x32 (CIFAR-10): the file records channels,
not the image size. Unknown layers or fields are errors naming the block.`,
		Example: `  bayesnas import proxylessnas internal/fixtures/testdata/proxylessnas_cifar10_net.config --out arch.json
  bayesnas train --arch arch.json --data cifar10 --data-dir data/cifar-10-batches-bin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, _ := cmd.Flags().GetString("out")
			g, err := models.ReadProxylessNAS(args[0])
			if err != nil {
				return err
			}
			c, err := g.Count()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: input %v, %d nodes\n", g.Name, g.Input.Shape, len(g.Nodes))
			fmt.Fprintf(w, "parameters: %d (%.3f M), buffers: %d\n", c.Params, float64(c.Params)/1e6, c.Buffers)
			fmt.Fprintf(w, "multiply-adds per image: %d (%.1f M)\n", c.MACs, float64(c.MACs)/1e6)
			if err := g.WriteGraph(out); err != nil {
				return err
			}
			fmt.Fprintf(w, "wrote %s\n", out)
			return nil
		},
	}
	px.Flags().String("out", "arch.json", "write the architecture JSON here")
	cmd.AddCommand(px)
	return cmd
}
