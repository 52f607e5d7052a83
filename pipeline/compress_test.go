package pipeline

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"bayesnas/compress"
	"bayesnas/dataset"
	"bayesnas/hwprofile"
	"bayesnas/internal/testenv"
	"bayesnas/models"
	"bayesnas/onnxrt"
)

// A trained run compressed to a budget on a profile measured for it: the
// network written is smaller, predicted at or under the budget, and
// fine-tuned from the pruned weights; budgets it cannot meet, a profile for
// another input and a run without weights are errors that write nothing.
func TestCompressToBudget(t *testing.T) {
	if _, err := onnxrt.InitDefault(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	dir := t.TempDir()
	cfg := tinyConfig(filepath.Join(dir, "trained"))
	cfg.Train.Epochs = 1
	if _, err := Train(context.Background(), cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	prof := filepath.Join(dir, "p.yaml")
	if _, err := MeasureProfile(context.Background(), ProfileMeasureOptions{Out: prof, Networks: ProfileNetworks{Runs: []string{cfg.RunDir}},
		GridStep: 4, Protocol: hwprofile.Protocol{Batch: 1, Warmup: 1, Repeats: 3}, Rounds: 1, ToolVersion: "test", Device: DeviceSpec{Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	half, _ := compress.ParseBudget("0.8x")
	for _, method := range []string{"uniform", "l1", "bayes"} {
		out := filepath.Join(dir, method)
		distill := 0.0
		if method == "l1" {
			distill = 0.5 // fine-tuned against the trained network
		}
		rep, err := Compress(context.Background(), CompressOptions{Run: cfg.RunDir, Out: out, Profile: prof, Budget: half,
			Method: method, Multiple: 4, Epochs: 1, Seed: 9, Distill: distill}) // another seed than the run's: its split is still the run's
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if !(rep.After.PredictedMs <= rep.BudgetMs) || rep.BudgetMs != 0.8*rep.Before.PredictedMs || rep.After.Params >= rep.Before.Params {
			t.Fatalf("%s: %+v before, %+v after, budget %v", method, rep.Before, rep.After, rep.BudgetMs)
		}
		for _, f := range []string{CompressionFile, PrunedArchFile, PrunedWeightsFile, ArchFile, WeightsFile, SummaryFile} {
			if _, err := os.Stat(filepath.Join(out, f)); err != nil {
				t.Fatalf("%s: %v", method, err)
			}
		}
		g, err := models.ReadGraph(filepath.Join(out, ArchFile))
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := g.Count(); c.Params != rep.After.Params {
			t.Fatalf("%s: the fine-tuned network has %d params, the report says %d", method, c.Params, rep.After.Params)
		}
		if rep.FineTune == nil {
			t.Fatalf("%s: no fine-tuning summary", method)
		}
		ftCfg, err := readConfig(filepath.Join(out, ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		if d := ftCfg.Train.Distill; d.On() != (distill > 0) || d.On() && (d.Teacher != cfg.RunDir || d.Alpha != distill || d.T() != 4) {
			t.Fatalf("%s: fine-tuned with distillation %+v, want alpha %g from %s", method, d, distill, cfg.RunDir)
		}
		var splits [2]dataset.Split
		for i, d := range []string{cfg.RunDir, out} {
			b, err := os.ReadFile(filepath.Join(d, SplitFile))
			if err == nil {
				err = json.Unmarshal(b, &splits[i])
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if splits[1].Hash != splits[0].Hash || splits[1].TakenFrom != cfg.RunDir {
			t.Fatalf("%s: the fine-tuning's split (hash %s, taken from %q) is not the trained run's (%s, %s)", method, splits[1].Hash, splits[1].TakenFrom, splits[0].Hash, cfg.RunDir)
		}
		if (rep.Bayes != nil) != (method == "bayes") || method == "bayes" && (len(rep.Bayes.Updates) == 0 || len(rep.Bayes.Groups) == 0) {
			t.Fatalf("%s: sparsity training record %+v", method, rep.Bayes)
		}
		t.Logf("%s: %.4f -> %.4f ms (budget %.4f), params %d -> %d", method, rep.Before.PredictedMs, rep.After.PredictedMs, rep.BudgetMs, rep.Before.Params, rep.After.Params)
	}
	// Bayes pruning the trained weights (the sparsity training only
	// selects): the pruned network's stem conv, which no selection
	// narrows, holds the trained run's weights; the default's holds the
	// sparsity-trained ones.
	ft := filepath.Join(dir, "bayes-from-trained")
	rep, err := Compress(context.Background(), CompressOptions{Run: cfg.RunDir, Out: ft, Profile: prof, Budget: half,
		Method: "bayes", Multiple: 4, Seed: 9, BayesFromTrained: true})
	if err != nil || !rep.BayesFromTrained {
		t.Fatalf("bayes from the trained weights: %v (report says from trained: %v)", err, rep != nil && rep.BayesFromTrained)
	}
	stem := func(d, arch, weights string) []float32 {
		_, ps, err := loadArchWeights(filepath.Join(d, arch), filepath.Join(d, weights))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if strings.HasPrefix(p.Name, "stem.") && strings.HasSuffix(p.Name, "conv.weight") {
				return p.Data
			}
		}
		t.Fatalf("%s: no stem conv weight", d)
		return nil
	}
	trained := stem(cfg.RunDir, ArchFile, WeightsFile)
	if got := stem(ft, PrunedArchFile, PrunedWeightsFile); !slices.Equal(got, trained) {
		t.Fatal("bayes from the trained weights: the pruned stem conv is not the trained one")
	}
	if got := stem(filepath.Join(dir, "bayes"), PrunedArchFile, PrunedWeightsFile); slices.Equal(got, trained) {
		t.Fatal("bayes: the pruned stem conv is the trained one, not the sparsity-trained one")
	}
	tiny, _ := compress.ParseBudget("0.001x")
	out := filepath.Join(dir, "impossible")
	// Timed on the device too: a budget far below the smallest network is
	// not the profile's error, and fails before any training.
	for _, verify := range []*DeviceOptions{nil, {Rounds: 1, Repeats: 5}} {
		for _, method := range []string{"l1", "bayes"} {
			if _, err := Compress(context.Background(), CompressOptions{Run: cfg.RunDir, Out: out, Profile: prof, Budget: tiny, Method: method, Verify: verify}); err == nil ||
				!strings.Contains(err.Error(), "below the smallest network") || ExitCode(err) != ExitBudget {
				t.Fatalf("%s (verify %v), impossible budget: %v (exit %d, want %d)", method, verify != nil, err, ExitCode(err), ExitBudget)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("%s: an impossible budget left %s behind", method, out)
			}
		}
	}
	other, err := hwprofile.Read(prof)
	if err != nil {
		t.Fatal(err)
	}
	other.Protocol.Input = []int{3, 32, 32}
	otherPath := filepath.Join(dir, "other.yaml")
	if err := other.Write(otherPath); err != nil {
		t.Fatal(err)
	}
	if _, err := Compress(context.Background(), CompressOptions{Run: cfg.RunDir, Out: out, Profile: otherPath, Budget: half, Method: "l1"}); err == nil ||
		!strings.Contains(err.Error(), "measured for input") {
		t.Fatalf("profile for another input: %v", err)
	}
	if err := os.Remove(filepath.Join(cfg.RunDir, WeightsFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Compress(context.Background(), CompressOptions{Run: cfg.RunDir, Out: out, Profile: prof, Budget: half, Method: "l1"}); err == nil {
		t.Fatal("a run without weights compressed")
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed compression left %s behind", out)
	}
}
