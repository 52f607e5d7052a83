package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"bayesnas/compress"
	"bayesnas/pipeline"
)

func newCompressCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "compress",
		Short: "Prune a trained network to a device latency budget (real channel surgery), then fine-tune it",
		Long: `Prices the trained network of --run on a device profile, removes coupled channel groups
(residual additions, concatenations, splits, shuffles, grouped and depthwise convs pruned
together; the stem and the classifier's outputs kept) until the predicted latency meets --budget, writes the
genuinely smaller network and its weights into --out (constants of switched-off channels
folded forward), fine-tunes it there with the training run's settings, and writes
compression.json (widths per layer before and after, params, MACs, predicted latency, the
budget). Exits non-zero, writing nothing, when the budget cannot be met.

Methods: bayes (the default: BayesNAS's prior on one group of channel gates per coupled group,
trained --sparsity-epochs with the reweighted group l1 weighted by each group's latency on the
device, groups switched off on a pace that meets the budget after --reach of that training), and the baselines uniform (every
layer scaled to the same fraction) and l1 (L1-norm filter pruning over coupled groups,
globally ranked).`,
		Example: `  bayesnas compress --run runs/demo --profile profiles/native-1t.yaml --budget 0.5x --method l1 --out runs/demo-l1-0.5x
  bayesnas compress --run runs/demo --profile profiles/wasm-1t.yaml --budget 2.5ms --method uniform --out runs/demo-u --epochs 0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			var opt pipeline.CompressOptions
			opt.Run, _ = f.GetString("run")
			opt.Out, _ = f.GetString("out")
			opt.Profile, _ = f.GetString("profile")
			opt.Method, _ = f.GetString("method")
			opt.Multiple, _ = f.GetInt("multiple")
			opt.ProtectClassifierInputs, _ = f.GetBool("protect-classifier-inputs")
			opt.Epochs, _ = f.GetInt("epochs")
			opt.LR, _ = f.GetFloat64("lr")
			opt.Distill, _ = f.GetFloat64("distill")
			opt.DistillTemperature, _ = f.GetFloat64("distill-temperature")
			opt.Train.Resume, _ = f.GetBool("resume")
			opt.DataLimit, _ = f.GetInt("data-limit")
			opt.Bayes = compress.DefaultBayesOptions()
			opt.Bayes.Epochs, _ = f.GetInt("sparsity-epochs")
			opt.Bayes.Lambda, _ = f.GetFloat64("lambda")
			opt.Bayes.Reach, _ = f.GetFloat64("reach")
			opt.BayesFromTrained, _ = f.GetBool("from-trained")
			opt.Bayes.LR = 0 // the training run's / 10
			opt.Seed, _ = f.GetUint64("seed")
			if v, _ := f.GetBool("verify"); v {
				d := &pipeline.DeviceOptions{Warmup: 10, Repeats: 100}
				d.Plugin, _ = f.GetString("plugin")
				d.Threads, _ = f.GetInt("threads")
				d.Library, _ = f.GetString("onnxruntime-lib")
				d.Rounds, _ = f.GetInt("rounds")
				opt.Verify = d
				opt.VerifyMargin, _ = f.GetFloat64("verify-margin")
				opt.VerifyTries, _ = f.GetInt("verify-tries")
			}
			budget, _ := f.GetString("budget")
			if opt.Run == "" || opt.Profile == "" || budget == "" || opt.Out == "" {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("give --run, --profile, --budget and --out"))
			}
			if err := checkCompressFlags(opt); err != nil {
				return pipeline.Mark(pipeline.ErrUsage, err)
			}
			var err error
			if opt.Budget, err = compress.ParseBudget(budget); err != nil {
				return pipeline.Mark(pipeline.ErrUsage, err)
			}
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			out := cmd.ErrOrStderr()
			opt.Train.Log, opt.Train.Progress, opt.Train.TTY = log, out, isTerminal(out)
			rep, err := pipeline.Compress(cmd.Context(), opt)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "\tparams\tMMACs\tpredicted ms\n")
			fmt.Fprintf(w, "before\t%d\t%.1f\t%.4f\n", rep.Before.Params, float64(rep.Before.MACs)/1e6, rep.Before.PredictedMs)
			fmt.Fprintf(w, "after\t%d\t%.1f\t%.4f\n", rep.After.Params, float64(rep.After.MACs)/1e6, rep.After.PredictedMs)
			if err := w.Flush(); err != nil {
				return err
			}
			if v := rep.Verification; v != nil {
				t := v.Tries[v.Chosen]
				fmt.Fprintf(cmd.OutOrStdout(), "budget %s = %.4f ms on %s (unpruned measured %.4f ms, predicted %.4f ms): measured %.4f ms after %d timed selections, met (%s)\n",
					rep.Budget, rep.BudgetMs, v.Device, v.BaseMeasuredMs, v.BasePredictedMs, t.MeasuredMs, len(v.Tries), opt.Method)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "budget %s = %.4f ms predicted on %s: met (%s)\n", rep.Budget, rep.BudgetMs, rep.Device, opt.Method)
			}
			if rep.FineTune != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "fine-tuned %d epochs: validation accuracy %.2f %%, test accuracy %.2f %%\n", opt.Epochs, 100*rep.FineTune.ValAcc, 100*rep.FineTune.TestAcc)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("run", "", "a finished training run directory")
	f.String("out", "", "the compressed run directory to write")
	f.String("profile", "", "device profile that prices the networks")
	f.String("budget", "", "latency budget: milliseconds (2.5ms) or a fraction of the unpruned network's (0.5x)")
	f.String("method", "bayes", "bayes, or the baselines uniform and l1")
	f.Int("sparsity-epochs", compress.DefaultBayesOptions().Epochs, "bayes: epochs of sparsity training before the surgery")
	f.Float64("lambda", compress.DefaultBayesOptions().Lambda, "bayes: weight of the reweighted group l1 penalty (the prior's pull, scaled per group by its latency; the pace to the budget does the selection)")
	f.Float64("reach", compress.DefaultBayesOptions().Reach, "bayes: fraction of the sparsity training after which the switched-off channels should meet the budget")
	f.Bool("from-trained", false, "bayes: prune the trained network's weights by the selection, not the sparsity-trained ones (the sparsity training only selects)")
	f.Uint64("seed", 0, "seed of sparsity training and fine-tuning (0: the training run's); the validation split stays the run's")
	f.Int("data-limit", 0, "cap the training images of sparsity training and fine-tuning (0: the training run's)")
	f.Bool("protect-classifier-inputs", false, "keep every channel the classifier reads (in a residual network: the last stage's stream)")
	f.Int("multiple", 8, "round every pruned layer's width to a multiple of this")
	f.Int("epochs", 1, "fine-tuning epochs (0: none)")
	f.Float64("lr", 0, "fine-tuning learning rate (0: the training run's / 10)")
	f.Float64("distill", 0, "fine-tune against the trained network's softened outputs with this weight in (0, 1] beside the labels' (knowledge distillation; 0: labels only)")
	f.Float64("distill-temperature", 4, "temperature of --distill")
	f.Bool("resume", false, "continue an interrupted fine-tuning in --out")
	f.Bool("verify", true, "time the unpruned network and each selection on the profile's device (a fraction budget is of the measured latency) and re-select until one measures under the budget; false: the profile's predictions alone")
	f.Float64("verify-margin", 0.05, "fraction of the budget a verified selection leaves free for the device's noise")
	f.Int("verify-tries", 6, "selections timed at most when verifying")
	f.Int("rounds", 7, "verifying: loads of each network timed, interleaved (10 warm-up and at least 100 timed inferences each)")
	f.String("plugin", "", "a device plug-in command line instead of the profile's own")
	f.Int("threads", 0, "built-in ONNX Runtime threads (0: the profile's)")
	f.String("onnxruntime-lib", "", "libonnxruntime.so.1 (\"\": $ONNXRUNTIME_LIB, then the set-up cache)")
	return cmd
}
