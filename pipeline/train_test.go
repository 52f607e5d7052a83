package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"bayesnas/dataset"
	"bayesnas/internal/fixtures"
	"bayesnas/internal/runlock"
	"bayesnas/internal/testenv"
	"bayesnas/models"
	"bayesnas/onnxrt"
)

// tinyConfig trains a very small PyramidNet on the synthetic set: seconds, not minutes.
func tinyConfig(dir string) Config {
	cfg := Config{RunDir: dir, Seed: 3, Threads: 2}
	cfg.Data = Data{Name: "synthetic", ValCount: 64, Augment: Augment{CropPad: 1, Flip: true, Cutout: 4}, Limit: 256}
	cfg.Model = Model{Builder: "pyramidnet", Params: map[string]any{
		"blocks_per_stage": 1, "alpha": 12, "groups": 2, "stem_channels": 8,
	}}
	cfg.Train = Training{Epochs: 2, Batch: 32, Optimizer: "sgd", LR: 0.05, Momentum: 0.9, Nesterov: true,
		WeightDecay: 5e-4, Schedule: "cosine", EvalBatch: 100}
	return cfg
}

// writeArch writes g as arch.json into a fresh temporary directory and
// returns both paths.
func writeArch(t *testing.T, g *models.Graph) (dir, arch string) {
	t.Helper()
	dir = t.TempDir()
	arch = filepath.Join(dir, "arch.json")
	if err := g.WriteGraph(arch); err != nil {
		t.Fatal(err)
	}
	return dir, arch
}

// countdown is a context whose Err turns to Canceled after n checks, so a
// test interrupts training at an exact batch.
type countdown struct {
	context.Context
	n int
}

func (c *countdown) Err() error {
	c.n--
	if c.n < 0 {
		return context.Canceled
	}
	return nil
}

func TestTrainWritesRunDirectory(t *testing.T) {
	dir := t.TempDir()
	sum, err := Train(context.Background(), tinyConfig(dir), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ConfigFile, SplitFile, ArchFile, WeightsFile, CheckpointFile, MetricsFile, SummaryFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("run directory lacks %s: %v", f, err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
	if n := strings.Count(string(b), "\n"); n != 2 {
		t.Errorf("metrics.jsonl has %d lines, want one per epoch (2)", n)
	}
	if sum.TestAcc <= 0 || sum.TestAcc > 1 || sum.Params <= 0 {
		t.Errorf("implausible summary %+v", sum)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var last EpochMetrics
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if sum.ValAcc != last.ValAcc || sum.ValAcc == 0 {
		t.Errorf("summary val_acc %v, last epoch's %v: want the same measurement of the final weights", sum.ValAcc, last.ValAcc)
	}
	// A second plain run into the same directory must refuse, not overwrite.
	if _, err := Train(context.Background(), tinyConfig(dir), Options{}); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("second run into a used directory: err = %v, want a hint to use --resume", err)
	}
}

// An interrupted run, resumed, must end with exactly the weights of an
// uninterrupted one: interrupt mid-epoch and at an epoch boundary.
func TestResumeGivesSameResult(t *testing.T) {
	ref := t.TempDir()
	if _, err := Train(context.Background(), tinyConfig(ref), Options{}); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(ref, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	// 8 batches per epoch (256 images / 32): stop mid-epoch and at the boundary.
	for _, stopAfter := range []int{3, 8} {
		dir := t.TempDir()
		_, err := Train(&countdown{Context: context.Background(), n: stopAfter}, tinyConfig(dir), Options{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stop after %d: err = %v, want an interruption", stopAfter, err)
		}
		if _, err := os.Stat(filepath.Join(dir, WeightsFile)); err == nil {
			t.Fatalf("interrupted run wrote final weights")
		}
		if _, err := Train(context.Background(), tinyConfig(dir), Options{Resume: true}); err != nil {
			t.Fatalf("resume after %d batches: %v", stopAfter, err)
		}
		got, err := os.ReadFile(filepath.Join(dir, WeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("stopped after %d batches and resumed: weights differ from the uninterrupted run", stopAfter)
		}
		mref, _ := os.ReadFile(filepath.Join(ref, MetricsFile))
		mgot, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
		if strings.Count(string(mgot), "\n") != strings.Count(string(mref), "\n") {
			t.Errorf("metrics.jsonl has %q, want as many lines as %q", mgot, mref)
		}
	}
}

func TestResumeRefusesChangedConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := Train(&countdown{Context: context.Background(), n: 2}, tinyConfig(dir), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	cfg := tinyConfig(dir)
	cfg.Train.LR = 0.2
	if _, err := Train(context.Background(), cfg, Options{Resume: true}); err == nil || !strings.Contains(err.Error(), "train.lr") {
		t.Fatalf("resume with another lr: err = %v, want a refusal", err)
	}
}

func TestConfigValidateNamesKey(t *testing.T) {
	cfg := tinyConfig(t.TempDir())
	cfg.Train.Optimizer = "rmsprop"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "train.optimizer") {
		t.Errorf("err = %v, want it to name train.optimizer", err)
	}
	cfg = tinyConfig(t.TempDir())
	cfg.Train.Batch = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "train.batch") {
		t.Errorf("err = %v, want it to name train.batch", err)
	}
}

// A trained run exports, and the model agrees with our engine in ONNX Runtime.
func TestExportTrainedRun(t *testing.T) {
	dir := t.TempDir()
	if _, err := Train(context.Background(), tinyConfig(dir), Options{}); err != nil {
		t.Fatal(err)
	}
	opt := ExportOptions{TestImages: 64}
	path, rep, err := Export(dir, opt)
	if err != nil || rep != nil {
		t.Fatalf("export without validation: %v, report %v", err, rep)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if _, err := onnxrt.LibraryPath(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	opt.Validate = true
	opt.Validation.Repeats = 2
	opt.Validation.Threads = 1
	_, rep, err = Export(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || rep.Real == nil || rep.Real.Inputs != 64 || rep.Real.Top1Agreement != 1 {
		t.Errorf("validation report: passed %v, real %+v", rep.Passed, rep.Real)
	}
	if _, err := os.Stat(filepath.Join(dir, onnxrt.ReportFile)); err != nil {
		t.Error(err)
	}
}

// model.params over model.arch rebuild the architecture by its recorded
// builder: a searched tree network retrains with drop-path.
func TestArchRebuiltWithParams(t *testing.T) {
	tree := models.PyramidTreeConfig{PyramidNetConfig: models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
		StemChannels: 4, Input: [3]int{1, 28, 28}, Classes: 10}}
	for i := 0; i < 3; i++ {
		c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
		for e := range c.Edges {
			c.Edges[e] = []string{models.TreeOps[(i+e)%len(models.TreeOps)]}
		}
		tree.Cells = append(tree.Cells, c)
	}
	g, _, err := models.PyramidTreeNetwork(tree)
	if err != nil {
		t.Fatal(err)
	}
	dir, arch := writeArch(t, g)
	cfg := tinyConfig(filepath.Join(dir, "run"))
	cfg.Train.Epochs = 1
	cfg.Model = Model{Arch: arch, Params: map[string]any{"drop_path": 0.2}}
	if _, err := Train(context.Background(), cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := models.ReadGraph(filepath.Join(cfg.RunDir, ArchFile))
	if err != nil {
		t.Fatal(err)
	}
	drops := 0
	for _, n := range got.Nodes {
		if n.Op == models.OpDropPath {
			drops++
		}
	}
	if drops != 3 || len(got.Nodes) != len(g.Nodes)+3 {
		t.Errorf("rebuilt network has %d drop-path nodes and %d nodes (arch %d), want one per block", drops, len(got.Nodes), len(g.Nodes))
	}
	cfg.RunDir = filepath.Join(dir, "run2")
	cfg.Model.Params = map[string]any{"drop_pth": 0.2}
	if _, err := Train(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "drop_pth") {
		t.Errorf("misspelt param: err = %v, want it named", err)
	}
}

// The proxy protocol's deeper stack: model.params {cells, channels} over a
// searched proxy network's arch.json rebuild it with more, wider cells.
func TestArchRebuiltDeeper(t *testing.T) {
	cell := []models.ProxyEdge{{From: 0, To: 2, Ops: []string{models.ProxySep3}}, {From: 1, To: 3, Ops: []string{models.ProxyMax3}}}
	g, _, err := models.ProxyNetwork(models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 3, Channels: 4, Cells: 3, Nodes: 2,
		StemMultiplier: 1, StemStride: 1, Normal: cell, Reduce: cell})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Model: Model{Arch: "arch.json", Params: map[string]any{"cells": 6, "channels": 8}}}
	deep, err := rebuildWith(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hasCell := func(g *models.Graph, prefix string) bool {
		for _, n := range g.Nodes {
			if strings.HasPrefix(n.Name, prefix) {
				return true
			}
		}
		return false
	}
	if !hasCell(deep, "cell5.") || hasCell(g, "cell3.") {
		t.Errorf("rebuilt with cells 6: cell5 present %v; original has cell3 %v", hasCell(deep, "cell5."), hasCell(g, "cell3."))
	}
	gc, _ := g.Count()
	dc, _ := deep.Count()
	if dc.Params <= 2*gc.Params {
		t.Errorf("deeper and wider network has %d parameters, the searched one %d", dc.Params, gc.Params)
	}
}

// ProxylessNAS's published CIFAR-10 network, imported, trains and exports
// like any derived network: one step on 16 generated CIFAR-10 records
// through `train --arch`, then export validated in ONNX Runtime.
func TestImportedProxylessTrainsAndExports(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the 5.7 M-parameter network on 16 images")
	}
	g, err := models.ReadProxylessNAS(fixtures.MustPath(t, "proxylessnas_cifar10_net.config"))
	if err != nil {
		t.Fatal(err)
	}
	dir, arch := writeArch(t, g)
	// Generated records in CIFAR-10's binary format: label byte, then
	// 3x32x32 pixels.
	data := filepath.Join(dir, "cifar")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	records := func(n, first int) []byte {
		var out []byte
		for i := first; i < first+n; i++ {
			out = append(out, byte(i%10))
			for p := 0; p < 3*32*32; p++ {
				out = append(out, byte(i*31+p*7+(i%10)*40))
			}
		}
		return out
	}
	for b := 1; b <= 5; b++ {
		if err := os.WriteFile(filepath.Join(data, fmt.Sprintf("data_batch_%d.bin", b)), records(8, (b-1)*8), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "test_batch.bin"), records(8, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	cfg := Config{RunDir: run, Seed: 1, Threads: 2}
	cfg.Data = Data{Name: "cifar10", Dir: data, ValCount: 8, Limit: 16, Augment: Augment{CropPad: 2, Flip: true, Cutout: 8}}
	cfg.Model = Model{Arch: arch}
	cfg.Train = Training{Epochs: 1, Batch: 16, Optimizer: "sgd", LR: 0.001, Momentum: 0.9, Nesterov: true,
		WeightDecay: 5e-4, Schedule: "cosine", EvalBatch: 8}
	t0 := time.Now()
	sum, err := Train(context.Background(), cfg, Options{})
	t.Logf("trained in %v", time.Since(t0))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Params < 5_660_000 || sum.Params > 5_780_000 {
		t.Errorf("trained network has %d parameters, want the published 5.72 M within 1 %%", sum.Params)
	}
	if _, err := onnxrt.LibraryPath(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	opt := ExportOptions{TestImages: 8, Validate: true}
	opt.Validation.Batch, opt.Validation.RandomInputs, opt.Validation.SkipTiming = 8, 8, true
	t0 = time.Now()
	_, rep, err := Export(run, opt)
	t.Logf("exported and validated in %v", time.Since(t0))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || rep.Real == nil || rep.Real.Inputs != 8 || rep.Real.Top1Agreement != 1 {
		t.Errorf("validation report: passed %v, real %+v", rep.Passed, rep.Real)
	}
}

// A second writer into a run directory fails at once naming the holder,
// whatever the stage; the lock goes with the writer.
func TestRunDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	l, err := runlock.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("run directory %s is in use by pid %d", dir, os.Getpid())
	if _, err := Train(context.Background(), tinyConfig(dir), Options{}); !errors.Is(err, runlock.ErrLocked) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("train into a locked directory: %v", err)
	}
	if _, err := Search(context.Background(), tinySearchConfig(dir), Options{}); !errors.Is(err, runlock.ErrLocked) {
		t.Fatalf("search into a locked directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		t.Fatal("a refused writer wrote config.json")
	}
	l.Release()
}

// A checkpoint whose position training cannot have reached is refused,
// naming the field, instead of resuming to no training or half an epoch.
func TestCheckpointStateChecked(t *testing.T) {
	const epochs, steps, batch = 4, 8, 32
	ok := trainState{Epoch: 1, Batch: 3, Step: 11, LossSum: 2.5, Correct: 40, Seen: 96}
	if err := ok.check("ckpt", epochs, steps, batch); err != nil {
		t.Fatalf("a reachable state: %v", err)
	}
	if err := (trainState{Epoch: epochs, Step: epochs * steps}).check("ckpt", epochs, steps, batch); err != nil {
		t.Fatalf("a finished run: %v", err)
	}
	for field, st := range map[string]trainState{
		"epoch":    {Epoch: 9, Step: 72},
		"batch":    {Epoch: 1, Batch: 8, Step: 16},
		"step":     {Epoch: 1, Batch: 3, Step: 5},
		"seen":     {Epoch: 1, Batch: 3, Step: 11, Seen: 97},
		"correct":  {Epoch: 1, Batch: 3, Step: 11, Seen: 96, Correct: 97},
		"loss_sum": {Epoch: 1, Batch: 3, Step: 11, Seen: 96, LossSum: -1},
	} {
		err := st.check("ckpt", epochs, steps, batch)
		if err == nil || !strings.Contains(err.Error(), "metadata "+field) {
			t.Errorf("state %+v: err = %v, want it to name %s", st, err, field)
		}
	}
}

// A split.json made for another validation size (left by a run that failed
// in this directory) is refused, not silently reused.
func TestStaleSplitRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := Train(&countdown{Context: context.Background(), n: 1}, tinyConfig(dir), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, SplitFile)); err != nil {
		t.Fatalf("the interrupted run left no split: %v", err)
	}
	for _, name := range []string{CheckpointFile, ConfigFile} {
		os.Remove(filepath.Join(dir, name)) // as if it had failed before its first checkpoint
	}
	cfg := tinyConfig(dir)
	cfg.Data.ValCount = 32
	if _, err := Train(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "data.val_count 32") {
		t.Fatalf("err = %v, want the stale split refused", err)
	}
}

// A split.json made with another seed (or for another data set) but the
// same validation size is refused too; one written before split.json
// recorded what made it is read as it is; compression's copy of its trained
// run's split is used under the fine-tuning's seed, and a copy of another
// run's split in its output directory is refused.
func TestStaleSplitSeedRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := Train(&countdown{Context: context.Background(), n: 1}, tinyConfig(dir), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	for _, name := range []string{CheckpointFile, ConfigFile} {
		os.Remove(filepath.Join(dir, name)) // as if it had failed before its first checkpoint
	}
	cfg := tinyConfig(dir)
	cfg.Seed = 4
	want := filepath.Join(dir, SplitFile) + " was made with seed 3, the config says seed 4: it was made for another configuration"
	if _, err := Train(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}

	path := filepath.Join(dir, SplitFile)
	var split dataset.Split
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &split)
	}
	if err != nil {
		t.Fatal(err)
	}
	if m := split.MadeBy; m == nil || *m != (dataset.SplitOrigin{Data: "synthetic-train", ValCount: 64, Seed: 3}) {
		t.Fatalf("split.json records made_by %+v", m)
	}
	train, _, err := dataset.Load("synthetic", "")
	if err != nil {
		t.Fatal(err)
	}
	other := *train
	other.Name = "mnist-train"
	if _, err := loadOrMakeSplit(path, &other, 64, 3); err == nil || !strings.Contains(err.Error(), "was made for the data set synthetic-train, this run's is mnist-train") {
		t.Errorf("another data set of the same size: err = %v", err)
	}

	// A split.json from before made_by: unknown, not refused.
	old := split
	old.MadeBy = nil
	if err := writeJSON(path, old); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrMakeSplit(path, train, 64, 4); err != nil {
		t.Errorf("a split.json without made_by: %v", err)
	}

	// Compression's fine-tuning: the trained run's split, copied and marked,
	// read under another seed; another run's split in its place is refused.
	if err := writeJSON(path, split); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := copySplit(dir, out); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrMakeSplit(filepath.Join(out, SplitFile), train, 64, 4); err != nil {
		t.Errorf("the trained run's split under the fine-tuning's seed: %v", err)
	}
	if err := copySplit(dir, out); err != nil {
		t.Errorf("copying the same split again (a resumed fine-tuning): %v", err)
	}
	otherRun := t.TempDir()
	s5, err := dataset.SplitTrainVal(train, 64, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(otherRun, SplitFile), s5); err != nil {
		t.Fatal(err)
	}
	if err := copySplit(otherRun, out); err == nil || !strings.Contains(err.Error(), "is not the split of the trained run") {
		t.Errorf("another run's split left in the output directory: err = %v", err)
	}
}

// The backend setting reaches the training: a run on the reference
// backend says so in its summary and trains to the CPU backend's loss
// within float32 rounding; an unknown or absent backend is a usage error
// before anything is written.
func TestTrainOnBackend(t *testing.T) {
	runs := map[string]*Summary{}
	for _, be := range []string{"", "reference"} {
		cfg := tinyConfig(filepath.Join(t.TempDir(), "run"))
		// Smaller still: the reference backend is some 40x slower.
		cfg.Data.Limit, cfg.Data.ValCount, cfg.Train.Epochs = 64, 16, 1
		cfg.Model.Params = map[string]any{"blocks_per_stage": 1, "alpha": 4, "groups": 2, "stem_channels": 4, "stem_stride": 2}
		cfg.Backend = be
		sum, err := Train(context.Background(), cfg, Options{})
		if err != nil {
			t.Fatalf("backend %q: %v", be, err)
		}
		runs[be] = sum
	}
	t.Logf("test loss: cpu %.7f, reference %.7f", runs[""].TestLoss, runs["reference"].TestLoss)
	if runs["reference"].Kernels != "reference" || runs[""].Kernels == "reference" {
		t.Errorf("kernels: %q on the reference backend, %q by default", runs["reference"].Kernels, runs[""].Kernels)
	}
	if d := math.Abs(runs["reference"].TestLoss - runs[""].TestLoss); d > 1e-3 {
		t.Errorf("test loss %g on the reference backend, %g on the CPU's: differ by %g", runs["reference"].TestLoss, runs[""].TestLoss, d)
	}
	for _, be := range []string{"cuda", "tpu"} {
		cfg := tinyConfig(filepath.Join(t.TempDir(), "run"))
		cfg.Backend = be
		_, err := Train(context.Background(), cfg, Options{})
		if err == nil || !strings.Contains(err.Error(), "config: backend") {
			t.Errorf("backend %q: %v, want an error naming the backend setting", be, err)
		}
		if _, serr := os.Stat(cfg.RunDir); serr == nil {
			t.Errorf("backend %q: %s was created", be, cfg.RunDir)
		}
	}
}
