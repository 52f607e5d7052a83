package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"bayesnas/nn"
	"bayesnas/pipeline"
)

func newTrainCmd(blasNote string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a network (a builder or an architecture JSON) and report test accuracy",
		Long: `Train a network built from the IR on a dataset, evaluate it on the test split,
and write the run directory: config.json (resolved settings), split.json,
arch.json, weights.safetensors, metrics.jsonl (one line per epoch),
checkpoint.safetensors (after every epoch, and on Ctrl-C) and summary.json.

An interrupted run continues with --resume and reaches the same result as an
uninterrupted one.`,
		Example: `  bayesnas train --config configs/demo.yaml
  bayesnas train --config configs/demo.yaml --epochs 2 --run-dir runs/quick
  bayesnas train --arch runs/search/arch.json --data fashion-mnist
  bayesnas train --run-dir runs/demo --config configs/demo.yaml --resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, trainBinds)
			if err != nil {
				return err
			}
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			resume, _ := cmd.Flags().GetBool("resume")
			log.Info("bayesnas", "version", versionString(), "blas", blasNote, "blas_kernels", nn.BLASInfo(), "run_dir", cfg.RunDir)
			out := cmd.OutOrStdout()
			sum, err := pipeline.Train(cmd.Context(), cfg, pipeline.Options{
				Resume: resume, Progress: out, TTY: isTerminal(out), Log: log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "test accuracy: %.2f %% (%d params, %.1f M multiply-adds, %.0f s training) -> %s\n",
				100*sum.TestAcc, sum.Params, float64(sum.MACs)/1e6, sum.TrainSeconds, cfg.RunDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.String("config", "", "YAML configuration file")
	f.Bool("resume", false, "continue the run in --run-dir from its checkpoint")
	f.String("run-dir", "", "run directory (run_dir)")
	f.Uint64("seed", 0, "random seed (seed)")
	f.Int("threads", 0, "worker goroutines, 0 = one per core (threads)")
	f.String("backend", "", backendFlagHelp)
	f.String("data", "", "dataset: fashion-mnist, mnist, cifar10, synthetic (data.name)")
	f.String("data-dir", "", "dataset directory (data.dir)")
	f.String("builder", "", "model builder, e.g. pyramidnet (model.builder)")
	f.String("arch", "", "architecture JSON to train instead of a builder (model.arch)")
	f.Int("epochs", 0, "training epochs (train.epochs)")
	f.Int("batch", 0, "batch size (train.batch)")
	f.Float64("lr", 0, "base learning rate (train.lr)")
	f.Int("limit", 0, "use at most this many training images, 0 = all (data.limit)")
	f.Int("val-count", 0, "training images held out for validation (data.val_count)")
	return cmd
}

var trainBinds = []flagKey{
	{"run-dir", "run_dir"}, {"seed", "seed"}, {"threads", "threads"}, {"backend", "backend"},
	{"data", "data.name"}, {"data-dir", "data.dir"}, {"builder", "model.builder"},
	{"arch", "model.arch"}, {"epochs", "train.epochs"}, {"batch", "train.batch"},
	{"lr", "train.lr"}, {"limit", "data.limit"}, {"val-count", "data.val_count"},
}
