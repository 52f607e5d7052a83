package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"bayesnas/hwprofile"
	"bayesnas/pipeline"
)

func newPipelineCmd(blasNote string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pipeline",
		Short: "Search, compress to a device latency budget and export, over one run directory (resumable, cached)",
		Long: `Run the pipeline's stages over one run directory (--run, run_dir):

  search    supernet search and derivation (RUN/search, arch.json), then the
            derived network retrained from scratch (RUN/train)
  compress  RUN/train pruned to the latency budget on the device profile and
            fine-tuned (RUN/compress, compression.json)
  export    RUN/compress to ONNX (RUN/export/model.onnx), validated in ONNX
            Runtime (validation.json), and timed on the device through the
            profile's runtime or plug-in (latency.json: measured against budget)

Each stage reads only the previous stage's outputs. RUN/pipeline.json records
per stage its status, the SHA-256 of its inputs, settings and outputs, the tool
version and timings: a stage whose inputs and settings are unchanged and whose
outputs are intact is skipped, an interrupted one resumes, a changed one runs
again with those after it. --stages runs some of them (the ones before must be
done and current): go tool task search compress export runs one per task.

Exit codes: 1 error, 2 usage or configuration, 3 validation failed, 4 latency
budget missed, 5 stage inputs missing or stale, 6 run directory in use.`,
		Example: `  bayesnas pipeline --run runs/pipeline --config configs/pipeline.yaml
  bayesnas pipeline --run runs/pipeline --config configs/pipeline.yaml --stages compress
  BAYESNAS_BUDGET=0.4x bayesnas pipeline --run runs/pipeline --config configs/pipeline.yaml --profile profiles/wasm-1t.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadPipelineConfig(cmd)
			if err != nil {
				return err
			}
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			stages, _ := cmd.Flags().GetStringSlice("stages")
			log.Info("bayesnas pipeline", "version", versionString(), "blas", blasNote, "run_dir", cfg.RunDir, "stages", stages)
			// Progress to stderr: stdout keeps the results a CI job reads.
			prog := cmd.ErrOrStderr()
			man, err := pipeline.RunPipeline(cmd.Context(), cfg, pipeline.PipelineOptions{
				Stages: stages, ToolVersion: versionString(), Progress: prog, TTY: isTerminal(prog), Log: log,
			})
			if man != nil {
				for _, s := range man.Stages {
					fmt.Fprintf(cmd.OutOrStdout(), "%-8s %-7s %6.1f s\n", s.Name, s.Status, s.Seconds)
				}
			}
			if b, rerr := os.ReadFile(filepath.Join(cfg.RunDir, pipeline.ExportDir, hwprofile.LatencyFile)); rerr == nil && man != nil && man.Stage("export") != nil {
				var lat hwprofile.LatencyReport
				if json.Unmarshal(b, &lat) == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "latency on %s: measured %.4f ms (p90 %.4f), predicted %.4f ms, budget %.4f ms: %s\n",
						lat.Device, lat.MeasuredMs, lat.P90Ms, lat.PredictedMs, lat.BudgetMs, lat.Verdict)
				}
			}
			if b, rerr := os.ReadFile(filepath.Join(cfg.RunDir, pipeline.CompressDir, pipeline.SummaryFile)); rerr == nil && man != nil {
				var sum pipeline.Summary
				if json.Unmarshal(b, &sum) == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "compressed network: test accuracy %.2f %%, %d params, %.1f M multiply-adds\n",
						100*sum.TestAcc, sum.Params, float64(sum.MACs)/1e6)
				}
			}
			if man != nil && man.Report != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "report: %s\n", man.Report)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.String("config", "", "YAML configuration file (configs/pipeline.yaml)")
	f.String("run", "", "run directory (run_dir)")
	f.StringSlice("stages", nil, "stages to run, comma-separated: search, compress, export (default all)")
	f.Uint64("seed", 0, "random seed (seed)")
	f.Int("threads", 0, "worker goroutines, 0 = one per core (threads)")
	f.String("backend", "", backendFlagHelp)
	f.String("data", "", "dataset (data.name)")
	f.String("data-dir", "", "dataset directory (data.dir)")
	f.Int("limit", 0, "use at most this many training images (data.limit)")
	f.String("profile", "", "device latency profile (device.profile)")
	f.String("plugin", "", "device plug-in command line for the latency measurement (device.plugin)")
	f.String("budget", "", "latency budget: 2.5ms, or 0.5x of the unpruned network (budget)")
	f.String("method", "", "compression method: bayes, uniform, l1 (compress.method)")
	return cmd
}

var pipelineBinds = []flagKey{
	{"run", "run_dir"}, {"seed", "seed"}, {"threads", "threads"}, {"backend", "backend"}, {"data", "data.name"}, {"data-dir", "data.dir"},
	{"limit", "data.limit"}, {"profile", "device.profile"}, {"plugin", "device.plugin"}, {"budget", "budget"},
	{"method", "compress.method"},
}

// loadPipelineConfig resolves defaults < YAML < BAYESNAS_* < flags, the
// search: section as `bayesnas search` reads it.
func loadPipelineConfig(cmd *cobra.Command) (pipeline.PipelineConfig, error) {
	var cfg pipeline.PipelineConfig
	known := pipeline.PipelineDefaults()
	v, err := newViper(cmd, known, pipelineBinds)
	if err != nil {
		return cfg, err
	}
	if err := v.Unmarshal(&cfg); err != nil {
		return cfg, pipeline.Mark(pipeline.ErrUsage, decodeError(err))
	}
	if cfg.Search, err = searchSection(v); err != nil {
		return cfg, err
	}
	var unknown []string
	for _, k := range v.AllKeys() {
		if _, ok := known[k]; ok || strings.HasPrefix(k, "search.") || strings.HasPrefix(k, "retrain.params.") {
			continue
		}
		unknown = append(unknown, k)
	}
	if len(unknown) > 0 {
		return cfg, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: unknown keys %s (see configs/pipeline.yaml for the known ones)", strings.Join(unknown, ", ")))
	}
	return cfg, cfg.Validate()
}
