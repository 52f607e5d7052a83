package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"bayesnas/hwprofile"
	"bayesnas/internal/atomicfile"
	"bayesnas/pipeline"
)

func newProfileCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "profile",
		Short: "Device latency profiles: measure, predict, check",
		Long: `A profile prices every kernel of a network as one runtime executes it on one
device (after its fusions: a conv with its folded BN and its ReLU is one kernel),
so that a network's latency is predicted without running it. Profiles are plain
YAML (schema ` + hwprofile.Schema + `), measured with the built-in ONNX Runtime or a device
plug-in (PLUGINS.md).`,
	}
	cmd.AddCommand(newProfileMeasureCmd(), newProfilePredictCmd(), newProfileCheckCmd())
	return cmd
}

func addDeviceFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("plugin", "", "device plug-in command (e.g. \"node plugins/ort-wasm/plugin.mjs --threads 1\"); default: the profile's (check), else the built-in ONNX Runtime")
	f.Float64("plugin-timeout", 120, "seconds a plug-in may take for one request")
	f.Int("threads", 0, "intra-op threads of the built-in ONNX Runtime (0: the profile's for check, 1 for measure)")
	f.String("graph-optimization", "", "graph optimisation level of the built-in ONNX Runtime: all, extended, basic, disabled (default: the profile's for check, else all)")
	f.String("onnxruntime-lib", "", "path to libonnxruntime.so.1 (default: $ONNXRUNTIME_LIB, then the set-up cache)")
	f.Int("batch", 1, "batch size of every timed inference")
	f.Int("warmup", 10, "untimed runs before timing")
	f.Int("repeats", 100, "timed runs of a round; its median is kept")
	f.Int("sessions", 6, "rounds of each whole network (calibration, check; each a fresh load timed with --repeats), in turn with the others; the quietest is kept")
}

func deviceFlags(cmd *cobra.Command) (pipeline.DeviceSpec, hwprofile.Protocol) {
	f := cmd.Flags()
	var spec pipeline.DeviceSpec
	plugin, _ := f.GetString("plugin")
	spec.Plugin = strings.Fields(plugin)
	spec.TimeoutSeconds, _ = f.GetFloat64("plugin-timeout")
	spec.Threads, _ = f.GetInt("threads")
	spec.Library, _ = f.GetString("onnxruntime-lib")
	spec.Optimization, _ = f.GetString("graph-optimization")
	var p hwprofile.Protocol
	p.Batch, _ = f.GetInt("batch")
	p.Warmup, _ = f.GetInt("warmup")
	p.Repeats, _ = f.GetInt("repeats")
	return spec, p
}

func newProfileMeasureCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "measure",
		Short: "Time every kernel the given networks need on the device and write a profile",
		Long: `Builds one micro ONNX model per kernel configuration the networks need (a search
space's, architecture files', trained runs'), with channel grids (multiples of
--grid-step up to the widest seen) for the kernels whose widths compression
changes, times each on the device and writes the profile. The file is saved as
the measurement goes; after Ctrl-C, run the same command with --missing-only to
time only what it lacks (also how an existing profile is extended).`,
		Example: `  bayesnas profile measure --space pyramidnet --space proxy --space tree --out profiles/native-1t.yaml
  bayesnas profile measure --search-config configs/search-tree.yaml --out profiles/tree-full.yaml
  bayesnas profile measure --space tree --threads 2 --out profiles/native-2t.yaml
  bayesnas profile measure --space pyramidnet --plugin "node plugins/ort-wasm/plugin.mjs" --out profiles/wasm.yaml
  bayesnas profile measure --run runs/demo --out profiles/native-1t.yaml --missing-only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			f := cmd.Flags()
			var opt pipeline.ProfileMeasureOptions
			if err := checkDeviceFlags(cmd); err != nil {
				return err
			}
			opt.Device, opt.Protocol = deviceFlags(cmd)
			opt.Out, _ = f.GetString("out")
			if opt.Out == "" {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("profile measure: give the profile to write (--out)"))
			}
			names, _ := f.GetStringArray("space")
			if opt.Networks.Spaces, err = pipeline.NamedSpaces(names); err != nil {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--space: %w", err))
			}
			if n, _ := f.GetStringArray("search-config"); len(names)+len(n) == 0 && !f.Changed("arch") && !f.Changed("run") {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("profile measure: no networks: give --space, --search-config, --arch or --run"))
			}
			configs, _ := f.GetStringArray("search-config")
			for _, path := range configs {
				sp, err := searchConfigSpace(path)
				if err != nil {
					return err
				}
				opt.Networks.Spaces = append(opt.Networks.Spaces, sp)
			}
			opt.Networks.Archs, _ = f.GetStringArray("arch")
			opt.Networks.Runs, _ = f.GetStringArray("run")
			opt.Networks.Samples, _ = f.GetInt("samples")
			opt.Networks.SampleSeed, _ = f.GetUint64("sample-seed")
			opt.GridStep, _ = f.GetInt("grid-step")
			opt.MissingOnly, _ = f.GetBool("missing-only")
			opt.Calibrate, _ = f.GetInt("calibrate")
			opt.Sessions, _ = f.GetInt("sessions")
			opt.Rounds, _ = f.GetInt("rounds")
			opt.ToolVersion = versionString()
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			out := cmd.ErrOrStderr()
			opt.Log, opt.Progress, opt.TTY = log, out, isTerminal(out)
			p, err := pipeline.MeasureProfile(cmd.Context(), opt)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d entries, overhead %.4f ms (%s %s, %s, %d threads)\n", opt.Out,
				len(p.Entries), p.OverheadMs, p.Runtime.Name, p.Runtime.Version, p.Runtime.ExecutionProvider, p.Runtime.IntraOpThreads)
			return nil
		},
	}
	addDeviceFlags(cmd)
	f := cmd.Flags()
	f.String("out", "", "profile file to write (YAML)")
	f.StringArray("space", nil, "a search space whose networks the profile must price: "+strings.Join(hwprofile.Spaces, ", ")+" (repeatable)")
	f.StringArray("search-config", nil, "a search config (configs/search-*.yaml): the derived networks of its space (repeatable)")
	f.StringArray("arch", nil, "an architecture file to profile (repeatable)")
	f.StringArray("run", nil, "a trained run directory to profile (repeatable)")
	f.Int("samples", pipeline.DefaultProfileSamples, "random networks per space besides its base network")
	f.Uint64("sample-seed", pipeline.DefaultProfileSampleSeed, "seed of those networks (profile check uses another)")
	f.Int("grid-step", pipeline.DefaultProfileGridStep, "channel grid step for the kernels compression resizes, 0 = no grids")
	f.Int("rounds", 3, "rounds of each kernel (each timed with --repeats), in turn with 500 others; the quietest is kept")
	f.Bool("missing-only", false, "extend an existing --out: time only the kernels it lacks")
	f.Int("calibrate", pipeline.DefaultProfileCalibrate, "whole networks per --space (seed --sample-seed+1) measured to calibrate kernel sums to network latency; 0 = none")
	return cmd
}

// searchConfigSpace reads a search config as `bayesnas search --config`
// does (YAML < BAYESNAS_SEARCH_* variables) and returns its space.
func searchConfigSpace(path string) (hwprofile.Space, error) {
	c := &cobra.Command{}
	c.Flags().String("config", path, "")
	cfg, err := loadSearchConfig(c)
	if err != nil {
		return hwprofile.Space{}, err
	}
	return pipeline.SearchSpace(cfg.Search), nil
}

func newProfilePredictCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "predict",
		Short:   "Predict a network's latency from a profile: total and a per-node table",
		Example: `  bayesnas profile predict --profile profiles/native-1t.yaml --arch runs/demo/arch.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			path, _ := f.GetString("profile")
			arch, _ := f.GetString("arch")
			weights, _ := f.GetString("weights")
			asJSON, _ := f.GetBool("json")
			if path == "" || arch == "" {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give --profile and --arch"))
			}
			prof, err := hwprofile.Read(path)
			if err != nil {
				return err
			}
			pr, err := pipeline.PredictArch(prof, arch, weights)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(pr)
			}
			return predictionTable(cmd.OutOrStdout(), prof, pr)
		},
	}
	f := cmd.Flags()
	f.String("profile", "", "profile file")
	f.String("arch", "", "architecture file")
	f.String("weights", "", "its weights (optional: they decide a few folds of the export)")
	f.Bool("json", false, "print the prediction as JSON")
	return cmd
}

func predictionTable(w io.Writer, prof *hwprofile.Profile, pr *hwprofile.Prediction) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\tkernel\tms\tshare\thow\t")
	for _, n := range pr.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%.4f\t%.1f%%\t%s\t\n", n.Node, n.Key, n.Ms, 100*n.Ms/pr.KernelsMs, n.How)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "predicted %.4f ms per inference (batch %d) on %s / %s %s (%s, %d threads): kernels %.4f ms, overhead %.4f ms, %d kernels, %.1f M MACs\n",
		pr.TotalMs, prof.Protocol.Batch, prof.Device.CPU, prof.Runtime.Name, prof.Runtime.Version, prof.Runtime.ExecutionProvider,
		prof.Runtime.IntraOpThreads, pr.KernelsMs, pr.OverheadMs, len(pr.Nodes), float64(pr.MACs)/1e6)
	return err
}

func newProfileCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Predicted against measured latency on random networks of each space",
		Long: `Samples networks (random cells of each search space, random widths of the default
PyramidNet as compression would leave them), predicts each with the profile,
measures each whole on the device twice, and reports the fraction of predictions
within 10 % of the measured median, RMSE and rank correlation, next to a
MACs-only predictor fitted on the same measurements and next to the device's
own noise (the second measurement taken as a prediction of the first).`,
		Example: `  bayesnas profile check --profile profiles/native-1t.yaml --space proxy --space tree --space pyramidnet --out check.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			var opt pipeline.ProfileCheckOptions
			if err := checkDeviceFlags(cmd); err != nil {
				return err
			}
			opt.Device, opt.Protocol = deviceFlags(cmd)
			opt.Profile, _ = f.GetString("profile")
			names, _ := f.GetStringArray("space")
			var err error
			if opt.Spaces, err = pipeline.NamedSpaces(names); err != nil {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--space: %w", err))
			}
			opt.N, _ = f.GetInt("n")
			opt.Seed, _ = f.GetUint64("seed")
			opt.Sessions, _ = f.GetInt("sessions")
			out, _ := f.GetString("out")
			if opt.Profile == "" || len(opt.Spaces) == 0 {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give --profile and at least one --space"))
			}
			opt.Progress = cmd.ErrOrStderr()
			opt.TTY = isTerminal(opt.Progress)
			rep, err := pipeline.CheckProfile(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if out != "" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				if err := atomicfile.Write(out, append(b, '\n')); err != nil {
					return err
				}
			}
			return checkTable(cmd.OutOrStdout(), rep)
		},
	}
	addDeviceFlags(cmd)
	f := cmd.Flags()
	f.String("profile", "", "profile file")
	f.StringArray("space", nil, "space to sample networks from: "+strings.Join(hwprofile.Spaces, ", ")+" (repeatable)")
	f.Int("n", 30, "networks per space")
	f.Uint64("seed", 1, "seed of the networks (keep it apart from the profile's --sample-seed)")
	f.String("out", "", "write the full report (every network) as JSON here")
	return cmd
}

func checkTable(w io.Writer, rep *hwprofile.CheckReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "space\tnetwork\tMMACs\tpredicted ms\tmeasured ms\tagain ms\terror\tMACs-fit ms\t")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.4f\t%.4f\t%.4f\t%+.1f%%\t%.4f\t\n", r.Space, r.Name, float64(r.MACs)/1e6,
			r.PredictedMs, r.MeasuredMs, r.RepeatMs, 100*(r.PredictedMs-r.MeasuredMs)/r.MeasuredMs, r.MACsFitMs)
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t")
	fmt.Fprintln(tw, "networks\tpredictor\twithin 10%\tRMSE ms\tRMSE %\tSpearman\t\t\t")
	all := hwprofile.SpaceAccuracy{Space: "all", Networks: len(rep.Rows), ProfileAcc: rep.ProfileAcc, AtSpeedAcc: rep.AtSpeedAcc,
		MACsAcc: rep.MACsAcc, NoiseAcc: rep.NoiseAcc}
	for _, sa := range append(rep.BySpace, all) {
		for _, a := range []struct {
			name string
			acc  hwprofile.Accuracy
		}{{"profile", sa.ProfileAcc}, {"profile at the current speed", sa.AtSpeedAcc}, {"MACs only (fitted here)", sa.MACsAcc}, {"noise (2nd measurement)", sa.NoiseAcc}} {
			fmt.Fprintf(tw, "%s (%d)\t%s\t%.1f%%\t%.4f\t%.1f\t%.3f\t\t\t\n", sa.Space, sa.Networks, a.name, 100*a.acc.Within10, a.acc.RMSEMs, a.acc.RMSEPct, a.acc.Spearman)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.SpeedVsProfile == 0 {
		_, err := fmt.Fprintf(w, "reference network: %.4f ms now; the profile has no reference latency\n", rep.ReferenceMs)
		return err
	}
	_, err := fmt.Fprintf(w, "reference network: %.4f ms now, %.4f ms when the profile was measured (ratio %.3f)\n",
		rep.ReferenceMs, rep.ReferenceMs/rep.SpeedVsProfile, rep.SpeedVsProfile)
	return err
}
