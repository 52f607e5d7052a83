package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"bayesnas/export"
	"bayesnas/nn/backends"
	"bayesnas/onnxrt"
	"bayesnas/pipeline"
)

// backendFlagHelp is the help of --backend where it sets the config key
// backend (train, search, pipeline).
const backendFlagHelp = "network backend: auto, cpu, reference (plain loops, slow: for checking), cuda (not built in) (backend)"

func addValidationFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("run", "", "run directory of a finished `bayesnas train`")
	f.String("onnxruntime-lib", "", "path to libonnxruntime.so.1 (default: onnxruntime.lib in --config, $ONNXRUNTIME_LIB, then the cache that `go tool task setup` fills)")
	f.String("config", "", "YAML configuration file (only onnxruntime.lib is read here)")
	f.Int("threads", 0, "threads for ONNX Runtime and our engine alike, 0 = one per core")
	f.Int("batch", 64, "second timed batch size (the first is 1)")
	f.Int("repeats", 30, "timed repeats per batch size (after 5 warm-up runs)")
	f.Int("test-images", 0, "test images to compare, 0 = the whole test set")
	f.String("backend", "", "our engine's backend in the comparison: auto, cpu, reference (plain loops, slow: for checking), cuda (not built in)")
}

func exportOptions(cmd *cobra.Command) (pipeline.ExportOptions, error) {
	f := cmd.Flags()
	if err := checkIntFlags(cmd, intBound{"batch", 1}, intBound{"repeats", 1}, intBound{"test-images", 0}, intBound{"opset", 0}); err != nil {
		return pipeline.ExportOptions{}, err
	}
	if o, err := f.GetInt("opset"); err == nil && o != 0 && (o < export.DefaultOpset || o > export.MaxOpset) {
		return pipeline.ExportOptions{}, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--opset %d: want %d..%d (0: %d)", o, export.DefaultOpset, export.MaxOpset, export.DefaultOpset))
	}
	lib, _ := f.GetString("onnxruntime-lib")
	if path, _ := f.GetString("config"); lib == "" && path != "" {
		v := viper.New()
		if err := readConfigFile(v, path); err != nil {
			return pipeline.ExportOptions{}, pipeline.Mark(pipeline.ErrUsage, err)
		}
		lib = v.GetString("onnxruntime.lib")
	}
	be, _ := f.GetString("backend")
	if err := backends.Check("--backend", be); err != nil {
		return pipeline.ExportOptions{}, pipeline.Mark(pipeline.ErrUsage, err)
	}
	threads, _ := f.GetInt("threads")
	batch, _ := f.GetInt("batch")
	repeats, _ := f.GetInt("repeats")
	n, _ := f.GetInt("test-images")
	return pipeline.ExportOptions{
		ToolVersion: versionString(), TestImages: n,
		Validation: onnxrt.ValidateOptions{Library: lib, Threads: threads, Batch: batch, Repeats: repeats, Backend: be, Context: cmd.Context()},
	}, nil
}

// checkNormalisation refuses --mean/--std values no deployment could use
// (export.CheckNormalisation), naming the flag, before anything is read.
func checkNormalisation(mean, std []float32) error {
	if b := export.CheckNormalisation(mean, std); b != nil {
		flag := "--mean"
		if b.Std {
			flag = "--std"
		}
		return fmt.Errorf("%s value %d is %g: %s", flag, b.Index+1, b.Value, b.Want())
	}
	if len(mean) != len(std) {
		return fmt.Errorf("--mean has %d values but --std has %d: give one of each per input channel", len(mean), len(std))
	}
	return nil
}

func printReport(cmd *cobra.Command, rep *onnxrt.Report, err error) error {
	if rep != nil {
		if terr := rep.Table(cmd.OutOrStdout()); terr != nil {
			return terr
		}
	}
	return err
}

func newExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the ONNX model of a trained run (and validate it in ONNX Runtime)",
		Long: `Write <run>/model.onnx (IR version 8, opset 13 unless --opset): evaluation mode,
batch normalisation folded into convolutions where exact, a symbolic batch dimension,
and metadata with the input normalisation, class labels and content hashes.
With --validate the model runs in ONNX Runtime next to our engine on the run's
test images and random inputs; the report (errors, agreement, accuracy, latency)
goes to <run>/validation.json, and the command fails beyond rtol 1e-3, atol 1e-5
(a failing report goes to validation.failed.json instead when validation.json holds
a passing one, which is kept).`,
		Example: `  bayesnas export --run runs/demo --validate
  bayesnas export --arch arch.json --weights weights.safetensors --out model.onnx --mean 0.286 --std 0.353`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			dir, _ := f.GetString("run")
			arch, _ := f.GetString("arch")
			weights, _ := f.GetString("weights")
			opt, err := exportOptions(cmd)
			if err != nil {
				return err
			}
			opt.Out, _ = f.GetString("out")
			opt.Opset, _ = f.GetInt("opset")
			opt.Softmax, _ = f.GetBool("softmax")
			opt.Validate, _ = f.GetBool("validate")
			var path string
			var rep *onnxrt.Report
			switch {
			case dir != "" && arch == "" && weights == "":
				if f.Changed("mean") || f.Changed("std") {
					return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--mean and --std go with --arch: a run's normalisation is its summary.json's"))
				}
				path, rep, err = pipeline.Export(dir, opt)
			case dir == "" && arch != "" && weights != "":
				mean, _ := f.GetFloat32Slice("mean")
				std, _ := f.GetFloat32Slice("std")
				if err := checkNormalisation(mean, std); err != nil {
					return pipeline.Mark(pipeline.ErrUsage, err)
				}
				if opt.Out == "" {
					return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give --out with --arch and --weights"))
				}
				path, rep, err = pipeline.ExportFiles(arch, weights, mean, std, opt)
			default:
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give either --run DIR, or --arch FILE with --weights FILE (and --out)"))
			}
			// Written means the model is there: a failed validation keeps
			// it (with its report), a failed export leaves nothing.
			if path != "" && (err == nil || rep != nil) {
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", path)
			}
			return printReport(cmd, rep, err)
		},
	}
	addValidationFlags(cmd)
	f := cmd.Flags()
	f.String("out", "", "model path (default <run>/model.onnx)")
	f.Int("opset", 0, "default-domain opset (default 13)")
	f.Bool("softmax", false, "append a Softmax: the model outputs probabilities")
	f.Bool("validate", false, "validate and time the model in ONNX Runtime")
	f.String("arch", "", "architecture JSON to export instead of a run directory (with --weights, --out)")
	f.String("weights", "", "weights (safetensors) for --arch")
	f.Float32Slice("mean", nil, "with --arch: per-channel input mean to record, e.g. 0.286")
	f.Float32Slice("std", nil, "with --arch: per-channel input std to record, e.g. 0.353")
	return cmd
}

func newValidateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate MODEL.onnx",
		Short: "Check an ONNX model against our engine in ONNX Runtime and time both",
		Long: `Run MODEL.onnx in ONNX Runtime next to our engine with the network of --run on
the run's test images and random inputs, and time both. A model whose metadata
(hash.arch, hash.weights) says it was exported from another network is refused
before anything runs. The report goes to <run>/validation.json; a failing one goes
to <run>/validation.failed.json instead when validation.json holds a passing report,
which is kept. The command fails beyond rtol 1e-3, atol 1e-5.`,
		Example: `  bayesnas validate runs/demo/model.onnx --run runs/demo`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, _ := cmd.Flags().GetString("run")
			if dir == "" {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give --run, the run directory the model was exported from"))
			}
			opt, err := exportOptions(cmd)
			if err != nil {
				return err
			}
			rep, err := pipeline.ValidateModel(args[0], dir, opt)
			return printReport(cmd, rep, err)
		},
	}
	addValidationFlags(cmd)
	return cmd
}
