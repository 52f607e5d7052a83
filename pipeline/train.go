package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"bayesnas/dataset"
	"bayesnas/internal/atomicfile"
	"bayesnas/internal/runlock"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/nn/backends"
)

// Files of a run directory.
const (
	ConfigFile     = "config.json"
	SplitFile      = "split.json"
	ArchFile       = "arch.json"
	WeightsFile    = "weights.safetensors"
	CheckpointFile = "checkpoint.safetensors"
	MetricsFile    = "metrics.jsonl"
	SummaryFile    = "summary.json"
)

// EpochMetrics is one line of metrics.jsonl.
type EpochMetrics struct {
	Epoch        int     `json:"epoch"`
	Step         int     `json:"step"`
	LR           float64 `json:"lr"`
	TrainLoss    float64 `json:"train_loss"`
	TrainAcc     float64 `json:"train_acc"`
	ValLoss      float64 `json:"val_loss,omitempty"`
	ValAcc       float64 `json:"val_acc,omitempty"`
	Seconds      float64 `json:"seconds"`
	ImagesPerSec float64 `json:"images_per_sec"`
}

// Summary is summary.json, written when training finishes.
type Summary struct {
	TestAcc      float64 `json:"test_acc"`
	TestLoss     float64 `json:"test_loss"`
	ValAcc       float64 `json:"val_acc,omitempty"`
	Params       int64   `json:"params"`
	MACs         int64   `json:"macs"`
	Epochs       int     `json:"epochs"`
	TrainSeconds float64 `json:"train_seconds"`
	Kernels      string  `json:"kernels"`
	Threads      int     `json:"threads"`
	GoVersion    string  `json:"go_version"`
	// The input normalisation the network was trained with and the class
	// labels: export stamps them into the ONNX metadata.
	InputMean []float32 `json:"input_mean"`
	InputStd  []float32 `json:"input_std"`
	Classes   []string  `json:"classes,omitempty"`
}

// Options are the per-invocation settings that are not part of the
// configuration (they do not change the result).
type Options struct {
	Resume   bool
	Progress io.Writer // where the progress bar or lines go; nil: none
	TTY      bool      // Progress is a terminal: redraw one line
	Log      *slog.Logger

	// locked: the caller already holds the run directory's lock (compress
	// fine-tunes in the directory it locked); taking it again on another
	// open file would fail against ourselves.
	locked bool
}

// lockRun takes dir's run lock unless the caller holds it; release is never nil.
func lockRun(dir string, held bool) (release func(), err error) {
	if held {
		return func() {}, nil
	}
	l, err := runlock.Acquire(dir)
	if err != nil {
		return nil, err
	}
	return func() { l.Release() }, nil
}

// Train runs (or resumes) a training run described by cfg and returns its summary.
// Cancelling ctx stops at the next step boundary after saving a checkpoint, so
// `--resume` continues exactly where it stopped.
func Train(ctx context.Context, cfg Config, opt Options) (*Summary, error) {
	log := opt.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The architecture file is read before the run directory is written:
	// a bad one leaves nothing behind.
	if cfg.Model.Arch != "" {
		g, err := models.ReadGraph(cfg.Model.Arch)
		if err != nil {
			return nil, err
		}
		if len(cfg.Model.Params) == 0 {
			if err := models.CheckMemory(g, max(cfg.Train.Batch, cfg.Train.EvalBatch)); err != nil {
				return nil, fmt.Errorf("%s: %w", cfg.Model.Arch, err)
			}
		}
	} else if _, ok := models.Builders[cfg.Model.Builder]; !ok {
		return nil, Mark(ErrUsage, fmt.Errorf("config: model.builder %q is not known (known: %v)", cfg.Model.Builder, builderNames()))
	}
	dir := cfg.RunDir
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); opt.Resume && err != nil {
		return nil, Mark(ErrUsage, fmt.Errorf("resume: %s holds no run to resume (%w)", dir, err))
	}
	// A fresh run into a directory it creates removes it again if it fails
	// before training starts (bad data, a bad model): a directory holding
	// only a configuration and a split would say a run is there.
	_, statErr := os.Stat(dir)
	created, started := errors.Is(statErr, fs.ErrNotExist) && !opt.Resume, false
	defer func() {
		if created && !started {
			os.RemoveAll(dir)
		}
	}()
	release, err := lockRun(dir, opt.locked)
	if err != nil {
		return nil, err
	}
	defer release()
	ckptPath := filepath.Join(dir, CheckpointFile)
	if opt.Resume {
		saved, err := readConfig(filepath.Join(dir, ConfigFile))
		if err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if err := checkResumeConfig(filepath.Join(dir, ConfigFile), saved, cfg); err != nil {
			return nil, err
		}
		// A kill during a checkpoint write leaves its temporary file.
		if err := atomicfile.RemoveStale(ckptPath); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
	} else if _, err := os.Stat(ckptPath); err == nil {
		return nil, Mark(ErrUsage, fmt.Errorf("%s already holds a checkpoint: use --resume to continue it, or choose another run directory", dir))
	}
	if err := writeJSON(filepath.Join(dir, ConfigFile), cfg); err != nil {
		return nil, err
	}

	// Data.
	d, err := prepareData(dir, cfg.Data, cfg.Seed, cfg.Seed, cfg.Train.Batch, cfg.Train.EvalBatch)
	if err != nil {
		return nil, err
	}
	train, trainB, valB, testB := d.train, d.trainB, d.valB, d.testB
	mean, std := d.norm.Mean, d.norm.Std
	log.Info("data", "name", train.Name, "train", d.trainCount, "val", len(d.split.Val), "test", d.test.N,
		"split_hash", d.split.Hash)

	// Model.
	g, err := buildGraph(cfg, train)
	if err != nil {
		return nil, err
	}
	counts, err := g.Count()
	if err != nil {
		return nil, err
	}
	if err := g.WriteGraph(filepath.Join(dir, ArchFile)); err != nil {
		return nil, err
	}
	be, err := backends.New(cfg.Backend, cfg.Threads)
	if err != nil {
		return nil, Mark(ErrUsage, fmt.Errorf("config: %w", err))
	}
	batch := max(cfg.Train.Batch, cfg.Train.EvalBatch)
	net, err := models.Compile(g, be, batch)
	if err != nil {
		return nil, err
	}
	if err := models.InitParams(net, g, cfg.Seed); err != nil {
		return nil, err
	}
	if cfg.Model.Weights != "" {
		if err := models.LoadWeights(cfg.Model.Weights, net.Params); err != nil {
			return nil, fmt.Errorf("model.weights: %w", err)
		}
	}
	log.Info("model", "name", g.Name, "params", counts.Params, "macs", counts.MACs, "kernels", be.Name())

	stepsPerEpoch := trainB.Batches()
	totalSteps := stepsPerEpoch * cfg.Train.Epochs
	sched, err := makeSchedule(cfg, stepsPerEpoch, totalSteps)
	if err != nil {
		return nil, err
	}
	optim, err := makeOptimizer(cfg, net.Backend, net.Params)
	if err != nil {
		return nil, err
	}
	loss := &nn.SoftmaxCrossEntropy{Smoothing: float32(cfg.Train.LabelSmoothing)}
	var tch *teacher
	if cfg.Train.Distill.On() {
		if tch, err = loadTeacher(cfg.Train.Distill, cfg.Train.LabelSmoothing, be, cfg.Train.Batch, d.norm, net); err != nil {
			return nil, err
		}
		log.Info("distillation", "teacher", cfg.Train.Distill.Teacher, "alpha", cfg.Train.Distill.Alpha, "temperature", cfg.Train.Distill.T())
	}
	started = true // from here the run checkpoints, even when stopped

	// Resume point.
	st := trainState{}
	if opt.Resume {
		if st, err = loadCheckpoint(ckptPath, net.Params, optim); err != nil {
			return nil, err
		}
		if err := st.check(ckptPath, cfg.Train.Epochs, stepsPerEpoch, cfg.Train.Batch); err != nil {
			return nil, err
		}
		// Dropout and drop-path masks are functions of the step: continue the count.
		for _, l := range net.Layers {
			if s, ok := l.(nn.Stochastic); ok {
				s.SetStep(uint64(st.Step))
			}
		}
		log.Info("resumed", "epoch", st.Epoch, "batch", st.Batch, "step", st.Step)
	}

	x := make([]float32, cfg.Train.Batch*train.C*train.H*train.W)
	labels := make([]int32, cfg.Train.Batch)
	start := time.Now()
	prog := newProgress(opt.Progress, opt.TTY)
	var finalVal float64
	var haveVal bool
	for epoch := st.Epoch; epoch < cfg.Train.Epochs; epoch++ {
		trainB.StartEpoch(epoch)
		if st.Batch > 0 {
			trainB.Skip(st.Batch)
		}
		t0 := time.Now()
		images := 0
		for b := st.Batch; b < stepsPerEpoch; b++ {
			if ctx.Err() != nil {
				st.Epoch, st.Batch = epoch, b
				if err := saveCheckpoint(ckptPath, net.Params, optim, st); err != nil {
					return nil, err
				}
				return nil, fmt.Errorf("interrupted at epoch %d batch %d; checkpoint saved, continue with --resume: %w", epoch+1, b, ctx.Err())
			}
			n, ok := trainB.Next(x, labels)
			if !ok {
				return nil, fmt.Errorf("internal: batcher ran out at batch %d of %d", b, stepsPerEpoch)
			}
			lr := sched.LR(st.Step)
			l, correct, err := trainStep(net, loss, tch, optim, x[:n*train.C*train.H*train.W], labels[:n], float32(lr))
			if err != nil {
				return nil, err
			}
			if math.IsNaN(l) || math.IsInf(l, 0) {
				return nil, fmt.Errorf("epoch %d step %d: loss is %v (learning rate %g too high?)", epoch+1, st.Step, l, lr)
			}
			st.Step++
			st.LossSum += l * float64(n)
			st.Correct += correct
			st.Seen += n
			images += n
			prog.update(progressStep{Phase: "epoch", I: epoch + 1, N: cfg.Train.Epochs, Batch: b + 1, Batches: stepsPerEpoch,
				HasLoss: true, Loss: st.LossSum / float64(st.Seen), Acc: float64(st.Correct) / float64(st.Seen),
				Done: epoch*stepsPerEpoch + b + 1, Total: totalSteps})
		}
		secs := time.Since(t0).Seconds()
		m := EpochMetrics{
			Epoch: epoch + 1, Step: st.Step, LR: sched.LR(max(st.Step-1, 0)),
			TrainLoss: st.LossSum / float64(st.Seen), TrainAcc: float64(st.Correct) / float64(st.Seen),
			Seconds: secs, ImagesPerSec: float64(images) / secs,
		}
		if valB != nil {
			m.ValLoss, m.ValAcc, err = nn.Evaluate(net, loss, valB)
			finalVal, haveVal = m.ValAcc, true
			if err != nil {
				return nil, err
			}
		}
		prog.done()
		log.Info("epoch", "epoch", m.Epoch, "train_loss", round4(m.TrainLoss), "train_acc", round4(m.TrainAcc),
			"val_acc", round4(m.ValAcc), "seconds", round4(secs), "images_per_sec", math.Round(m.ImagesPerSec))
		if err := appendJSONLine(filepath.Join(dir, MetricsFile), m, epoch); err != nil {
			return nil, err
		}
		st = trainState{Epoch: epoch + 1, Step: st.Step}
		if err := saveCheckpoint(ckptPath, net.Params, optim, st); err != nil {
			return nil, err
		}
	}
	trainSecs := time.Since(start).Seconds()

	testLoss, testAcc, err := nn.Evaluate(net, loss, testB)
	if err != nil {
		return nil, err
	}
	sum := &Summary{
		TestAcc: testAcc, TestLoss: testLoss, Params: counts.Params, MACs: counts.MACs,
		Epochs: cfg.Train.Epochs, TrainSeconds: trainSecs, Kernels: be.Name(),
		Threads: workersOf(be), GoVersion: runtime.Version(),
		InputMean: mean, InputStd: std, Classes: train.ClassNames,
	}
	// The last epoch already measured the final weights on the validation
	// set; only a run resumed after its last epoch has to measure them here.
	sum.ValAcc = finalVal
	if valB != nil && !haveVal {
		if _, sum.ValAcc, err = nn.Evaluate(net, loss, valB); err != nil {
			return nil, err
		}
	}
	meta := map[string]string{"arch": ArchFile, "format": "bayesnas.weights/v1"}
	if err := models.SaveWeights(filepath.Join(dir, WeightsFile), net.Params, meta); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(dir, SummaryFile), sum); err != nil {
		return nil, err
	}
	return sum, nil
}

// trainStep runs forward, loss, backward and an optimizer step on one batch;
// with a teacher the loss is the distillation loss against its outputs.
func trainStep(net *nn.Network, loss *nn.SoftmaxCrossEntropy, tch *teacher, optim nn.Optimizer, x []float32, labels []int32, lr float32) (float64, int, error) {
	net.SetBatch(len(labels))
	net.Input.SetHost(x)
	net.ZeroGrad()
	net.Forward(true)
	var l float64
	var correct int
	var err error
	if tch != nil {
		l, correct, err = tch.step(net.Output, x, labels)
	} else {
		l, correct, err = net.Loss(*loss, labels)
	}
	if err != nil {
		return 0, 0, err
	}
	net.Backward()
	optim.Step(lr)
	return l, correct, nil
}

// rebuildWith rebuilds an architecture file's graph by the builder recorded
// in it with model.params laid over the recorded parameters: a searched
// network is retrained with, say, drop_path, which the search itself did not
// use.
func rebuildWith(g *models.Graph, cfg Config) (*models.Graph, error) {
	if g.Builder == nil {
		return nil, fmt.Errorf("model.params given with model.arch %s, whose graph records no builder to rebuild it with", cfg.Model.Arch)
	}
	build, ok := models.Builders[g.Builder.Name]
	if !ok {
		return nil, fmt.Errorf("model.arch %s: builder %q is not known (known: %v)", cfg.Model.Arch, g.Builder.Name, builderNames())
	}
	p := map[string]any{}
	if len(g.Builder.Params) > 0 {
		if err := json.Unmarshal(g.Builder.Params, &p); err != nil {
			return nil, fmt.Errorf("model.arch %s: builder params: %w", cfg.Model.Arch, err)
		}
	}
	maps.Copy(p, cfg.Model.Params)
	params, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("model.params: %w", err)
	}
	out, err := build(params)
	if err != nil {
		return nil, fmt.Errorf("model.arch %s rebuilt with model.params: %w", cfg.Model.Arch, err)
	}
	return out, nil
}

func buildGraph(cfg Config, train *dataset.Set) (*models.Graph, error) {
	var g *models.Graph
	var err error
	if cfg.Model.Arch != "" {
		g, err = models.ReadGraph(cfg.Model.Arch)
		if err != nil {
			return nil, err
		}
		if len(cfg.Model.Params) > 0 {
			if g, err = rebuildWith(g, cfg); err != nil {
				return nil, err
			}
		}
	} else {
		build, ok := models.Builders[cfg.Model.Builder]
		if !ok {
			return nil, fmt.Errorf("config: model.builder %q is not known (known: %v)", cfg.Model.Builder, builderNames())
		}
		params, err := cfg.modelParamsJSON()
		if err != nil {
			return nil, err
		}
		// The data decides the input shape and class count unless the user set them.
		var p map[string]any
		json.Unmarshal(params, &p)
		if p == nil {
			p = map[string]any{}
		}
		if _, ok := p["input"]; !ok {
			p["input"] = []int{train.C, train.H, train.W}
		}
		if _, ok := p["classes"]; !ok {
			p["classes"] = train.Classes
		}
		params, _ = json.Marshal(p)
		g, err = build(params)
		if err != nil {
			return nil, fmt.Errorf("model.builder %s: %w", cfg.Model.Builder, err)
		}
	}
	shape := g.Input.Shape
	if len(shape) != 3 || shape[0] != train.C || shape[1] != train.H || shape[2] != train.W {
		return nil, fmt.Errorf("model input shape %v does not match the data (%d x %d x %d)", shape, train.C, train.H, train.W)
	}
	return g, nil
}

func builderNames() []string {
	var s []string
	for k := range models.Builders {
		s = append(s, k)
	}
	return s
}

func makeSchedule(cfg Config, stepsPerEpoch, total int) (nn.Schedule, error) {
	warm := int(math.Round(cfg.Train.WarmupEpochs * float64(stepsPerEpoch)))
	var s nn.Schedule
	var err error
	switch cfg.Train.Schedule {
	case "cosine":
		s, err = nn.NewCosine(cfg.Train.LR, cfg.Train.MinLR, 0, warm, total)
	case "step":
		ms := make([]int, len(cfg.Train.Milestones))
		for i, e := range cfg.Train.Milestones {
			ms[i] = e * stepsPerEpoch
		}
		s, err = nn.NewStepDecay(cfg.Train.LR, cfg.Train.Gamma, 0, ms, warm)
	default:
		s, err = nn.NewStepDecay(cfg.Train.LR, 1, 0, nil, warm)
	}
	if err != nil {
		return nil, fmt.Errorf("config: train.schedule %s: %w", cfg.Train.Schedule, err)
	}
	return s, nil
}

func makeOptimizer(cfg Config, be nn.Backend, params []*nn.Param) (nn.Optimizer, error) {
	var o nn.Optimizer
	var err error
	switch cfg.Train.Optimizer {
	case "adam":
		o, err = nn.NewAdamOn(be, params, nn.AdamConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: float32(cfg.Train.WeightDecay)})
	default:
		o, err = nn.NewSGDOn(be, params, nn.SGDConfig{Momentum: float32(cfg.Train.Momentum), Nesterov: cfg.Train.Nesterov, WeightDecay: float32(cfg.Train.WeightDecay)})
	}
	if err != nil {
		return nil, fmt.Errorf("config: train.optimizer %s: %w", cfg.Train.Optimizer, err)
	}
	return o, nil
}

// runData is a run's data: the sets, the recorded split, the normalisation
// and the batchers over training, validation and test images.
type runData struct {
	train, test         *dataset.Set
	split               dataset.Split
	norm                dataset.Normalize
	trainB, valB, testB *dataset.Batcher // valB is nil without a validation split
	trainCount          int
	trainIdx            []int // the images trained on
}

// prepareData loads the data of a run, makes (or re-reads) the split
// recorded in dir, and builds the batchers. Training and search share it.
//
// seed orders the batches; splitSeed is the seed the split of dir was made
// with: the run's own, which is seed, except where compression reads its
// trained run's split under a seed of its own.
func prepareData(dir string, cfg Data, seed, splitSeed uint64, batch, evalBatch int) (*runData, error) {
	d := &runData{}
	var err error
	if d.train, d.test, err = dataset.Load(cfg.Name, cfg.Dir); err != nil {
		return nil, err
	}
	if d.split, err = loadOrMakeSplit(filepath.Join(dir, SplitFile), d.train, cfg.ValCount, splitSeed); err != nil {
		return nil, err
	}
	mean, std := d.train.Stats()
	d.norm = dataset.Normalize{Mean: mean, Std: std}
	aug := dataset.Augment{CropPad: cfg.Augment.CropPad, Flip: cfg.Augment.Flip, Cutout: cfg.Augment.Cutout}
	trainIdx := d.split.Train
	if cfg.Limit > 0 && cfg.Limit < len(trainIdx) {
		// The split stays whole (so it checks against the set); only the
		// images trained on are capped, the same ones every time.
		trainIdx = trainIdx[:cfg.Limit]
	}
	d.trainCount, d.trainIdx = len(trainIdx), trainIdx
	if d.trainB, err = dataset.NewBatcher(d.train, trainIdx, batch, aug, d.norm, seed); err != nil {
		return nil, fmt.Errorf("training data: %w", err)
	}
	if len(d.split.Val) > 0 {
		if d.valB, err = dataset.NewEvalBatcher(d.train, d.split.Val, evalBatch, d.norm); err != nil {
			return nil, fmt.Errorf("validation data: %w", err)
		}
	}
	if d.testB, err = dataset.NewEvalBatcher(d.test, d.test.Indices(), evalBatch, d.norm); err != nil {
		return nil, fmt.Errorf("test data: %w", err)
	}
	return d, nil
}

func loadOrMakeSplit(path string, train *dataset.Set, valCount int, seed uint64) (dataset.Split, error) {
	var s dataset.Split
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &s); err != nil {
			return s, fmt.Errorf("reading %s: %w", path, err)
		}
		if err := s.Check(train); err != nil {
			return s, fmt.Errorf("reading %s: %w", path, err)
		}
		// A split left by another configuration (a run that failed before
		// its first checkpoint, then a new one in the same directory) must
		// not be taken for this one's.
		const other = "it was made for another configuration (use a new run directory, or remove the file)"
		if len(s.Val) != valCount {
			return s, fmt.Errorf("%s holds %d validation images, the config says data.val_count %d: %s", path, len(s.Val), valCount, other)
		}
		// What made it, where recorded (files written before made_by are
		// taken as they are). A copy of another run's split (TakenFrom:
		// compression's fine-tuning) is used under the taker's seed.
		if m := s.MadeBy; m != nil {
			if m.Data != train.Name {
				return s, fmt.Errorf("%s was made for the data set %s, this run's is %s (data.name): %s", path, m.Data, train.Name, other)
			}
			if m.ValCount != valCount {
				return s, fmt.Errorf("%s was made with data.val_count %d, the config says data.val_count %d: %s", path, m.ValCount, valCount, other)
			}
			if s.TakenFrom == "" && m.Seed != seed {
				return s, fmt.Errorf("%s was made with seed %d, the config says seed %d: %s", path, m.Seed, seed, other)
			}
		}
		return s, nil
	}
	s, err := dataset.SplitTrainVal(train, valCount, seed)
	if err != nil {
		return s, Mark(ErrUsage, fmt.Errorf("config data.val_count: %w", err))
	}
	return s, writeJSON(path, s)
}

func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return atomicfile.Write(path, append(b, '\n'))
}

func readConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("reading %s: %w", path, err)
	}
	return c, nil
}

// appendJSONLine rewrites metrics.jsonl with the lines of epochs before
// `epoch` plus m, so a resumed run never duplicates or half-writes a line.
func appendJSONLine(path string, m EpochMetrics, epoch int) error {
	var lines [][]byte
	if b, err := os.ReadFile(path); err == nil {
		for _, ln := range splitLines(b) {
			var e EpochMetrics
			if json.Unmarshal(ln, &e) == nil && e.Epoch <= epoch {
				lines = append(lines, ln)
			}
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	lines = append(lines, b)
	var out []byte
	for _, ln := range lines {
		out = append(append(out, ln...), '\n')
	}
	return atomicfile.Write(path, out)
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			if i > start {
				out = append(out, b[start:i])
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// workersOf is the goroutines a backend computes on: the CPU backend's
// pool, 1 for one without (the reference backend).
func workersOf(be nn.Backend) int {
	if c, ok := be.(*nn.CPU); ok {
		return c.Pool.Workers()
	}
	return 1
}
