package main

import (
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"bayesnas/pipeline"
	"bayesnas/search"
)

func newDeriveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "derive",
		Short: "Derive a finished search's architecture again with another threshold or significance floor",
		Long: `Read a finished search's run directory (its configuration and checkpoint),
threshold its gammas again with the derive settings given here (those not
given keep the search's), and write arch.json, decisions.json and the rest of
a search run directory to --out. Nothing is trained: it takes seconds, so a
user can compare derivations of one search without searching again.`,
		Example: `  bayesnas derive --run runs/search-proxy --out runs/search-proxy-z2 --min-significance 2
  bayesnas derive --run runs/search-tree --out runs/search-tree-t05 --threshold 0.05 --relative=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			run, _ := f.GetString("run")
			out, _ := f.GetString("out")
			if run == "" || out == "" {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("derive: --run and --out are required"))
			}
			for _, name := range []string{"threshold", "min-significance"} {
				v, _ := f.GetFloat64(name)
				if err := checkFloat(name, v, 0, math.Inf(1), false); err != nil {
					return pipeline.Mark(pipeline.ErrUsage, err)
				}
			}
			res, err := pipeline.Rederive(run, out, func(d search.DeriveConfig) search.DeriveConfig {
				if f.Changed("threshold") {
					d.Threshold, _ = f.GetFloat64("threshold")
				}
				if f.Changed("relative") {
					d.Relative, _ = f.GetBool("relative")
				}
				if f.Changed("min-significance") {
					d.MinSignificance, _ = f.GetFloat64("min-significance")
				}
				return d
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if res.Derivation != nil {
				for _, c := range res.Derivation.Table.Cells {
					if c.CopiedFrom == "" {
						fmt.Fprintf(w, "%s cell: %d edges, %d of %d ops kept (tau %.4g)\n", c.Type, c.KeptEdges, c.KeptOps, c.CandidateOp, c.Tau)
					}
				}
			} else if res.TreeDerivation != nil {
				kept, dead := 0, 0
				for _, c := range res.TreeDerivation.Table.Cells {
					kept += c.KeptOps
					if c.Dead {
						dead++
					}
				}
				fmt.Fprintf(w, "%d tree cells: %d ops kept, %d cells dead (the block keeps its shortcut)\n", len(res.TreeDerivation.Table.Cells), kept, dead)
			}
			d := res.Config.Derive
			fmt.Fprintf(w, "derived with threshold %g (relative %v), min significance %g -> %s\n", d.Threshold, d.Relative, d.MinSignificance, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.String("run", "", "a finished search's run directory")
	f.String("out", "", "where the new derivation's run directory goes")
	f.Float64("threshold", 0, "gamma_eff threshold (search.derive.threshold)")
	f.Bool("relative", false, "threshold relative to the largest significant gamma_eff of the cell (search.derive.relative)")
	f.Float64("min-significance", 0, "keep only ops and switches |a|/sqrt(C) >= this (search.derive.min_significance)")
	return cmd
}
