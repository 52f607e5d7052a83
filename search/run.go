package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"bayesnas/internal/atomicfile"
	"bayesnas/models"
	"bayesnas/nn"
)

// Config is one search. Curvature is the per-sample mean over the batches
// used (the curvature of the mean cross-entropy), so the lambdas are on the
// scale of the mean loss and do not change meaning with the data set size.
type Config struct {
	Space models.ProxyConfig `json:"space"` // Search is forced on
	Seed  uint64             `json:"seed"`
	Batch int                `json:"batch"`

	WarmupEpochs       int `json:"warmup_epochs"`        // network weights only
	Iterations         int `json:"iterations"`           // T
	EpochsPerIteration int `json:"epochs_per_iteration"` // E (the paper: 1)

	// Network weights: SGD with momentum and weight decay at a constant rate.
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum"`
	WeightDecay float64 `json:"weight_decay"`
	// GradClip caps the global norm of the network weights' gradient (DARTS
	// clips at 5): with architecture weights starting at 1 the supernet sums
	// every op of every edge, and its first steps are large. 0 disables.
	GradClip float64 `json:"grad_clip"`
	// Architecture variables: their only regulariser is the penalty. Adam
	// (betas 0.5, 0.999 as DARTS) is the default: the curvature of the mean
	// loss in an architecture variable is small (1e-3 to 1e-1), so plain SGD
	// at any stable rate needs 1/(lr*H) ~ 1e4-1e5 steps to move a variable to
	// where the penalty balances the data, far more than the few epochs of a
	// search; Adam's per-variable scaling gets there in one epoch and keeps
	// the stationary points (so lambda keeps its meaning). "sgd" is plain SGD.
	ArchOptimizer string  `json:"arch_optimizer"`
	ArchLR        float64 `json:"arch_lr"`

	LambdaSwitch float64 `json:"lambda_switch"`
	LambdaOp     float64 `json:"lambda_op"`
	OmegaEps     float64 `json:"omega_eps"`

	Curvature Estimator `json:"curvature"`
	// CurvatureBatches caps the training batches the curvature is estimated
	// on per iteration; 0 uses every batch.
	CurvatureBatches int `json:"curvature_batches"`

	// BNRecalBatches: before the curvature and each validation the running
	// statistics of every BN are recomputed as the plain average over this
	// many training batches with the current weights (nn.RecalibrateBN);
	// the curvature is taken in evaluation mode, and running statistics
	// averaged along the search's trajectory can be far off. 0 disables.
	BNRecalBatches int `json:"bn_recal_batches"`

	Derive DeriveConfig `json:"derive"`
	// PruneThreshold freezes (at exactly zero, no longer computed) every
	// group whose gamma_eff falls below it after an update; 0 disables.
	PruneThreshold float64 `json:"prune_threshold"`

	Workers int `json:"workers"` // 0: one per core
}

// DefaultConfig is a small search on the default proxy supernet.
func DefaultConfig() Config {
	return Config{Space: models.ProxySupernetDefault(), Seed: 1, Batch: 64, WarmupEpochs: 1, Iterations: 3,
		EpochsPerIteration: 1, LR: 0.025, Momentum: 0.9, WeightDecay: 3e-4, GradClip: 5, ArchOptimizer: "adam", ArchLR: 0.01,
		LambdaSwitch: 0.01, LambdaOp: 0.01, OmegaEps: 1e-8, Curvature: MonteCarloFisher,
		BNRecalBatches: 10,
		Derive:         DeriveConfig{Threshold: 0.1, Relative: true}}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Batch < 1:
		return fmt.Errorf("search config: batch = %d, want >= 1", c.Batch)
	case c.WarmupEpochs < 0:
		return fmt.Errorf("search config: warmup_epochs = %d, want >= 0", c.WarmupEpochs)
	case c.Iterations < 1:
		return fmt.Errorf("search config: iterations = %d, want >= 1", c.Iterations)
	case c.EpochsPerIteration < 1:
		return fmt.Errorf("search config: epochs_per_iteration = %d, want >= 1", c.EpochsPerIteration)
	case !(c.GradClip >= 0):
		return fmt.Errorf("search config: grad_clip = %g, want >= 0", c.GradClip)
	case !(c.LR > 0) || !(c.ArchLR >= 0):
		return fmt.Errorf("search config: lr = %g must be > 0 and arch_lr = %g >= 0", c.LR, c.ArchLR)
	case !(c.Momentum >= 0 && c.Momentum < 1) || !(c.WeightDecay >= 0):
		return fmt.Errorf("search config: momentum = %g must be in [0,1), weight_decay = %g >= 0", c.Momentum, c.WeightDecay)
	case !(c.LambdaSwitch >= 0) || !(c.LambdaOp >= 0):
		return fmt.Errorf("search config: lambda_switch = %g and lambda_op = %g must be >= 0", c.LambdaSwitch, c.LambdaOp)
	case !(c.OmegaEps > 0):
		return fmt.Errorf("search config: omega_eps = %g, want > 0", c.OmegaEps)
	case c.ArchOptimizer != "adam" && c.ArchOptimizer != "sgd":
		return fmt.Errorf("search config: arch_optimizer = %q, want adam or sgd", c.ArchOptimizer)
	case c.CurvatureBatches < 0:
		return fmt.Errorf("search config: curvature_batches = %d, want >= 0", c.CurvatureBatches)
	case c.BNRecalBatches < 0:
		return fmt.Errorf("search config: bn_recal_batches = %d, want >= 0", c.BNRecalBatches)
	case !(c.PruneThreshold >= 0):
		return fmt.Errorf("search config: prune_threshold = %g, want >= 0", c.PruneThreshold)
	}
	if _, err := ParseEstimator(string(c.Curvature)); err != nil {
		return fmt.Errorf("search config: %w", err)
	}
	if err := c.Derive.validate(); err != nil {
		return fmt.Errorf("search config: %w", err)
	}
	return nil
}

// Batches is a source of training or validation batches
// (*dataset.Batcher implements it).
type Batches = nn.Batches

// IterationLog is one line of the search log (JSON lines).
type IterationLog struct {
	Iteration     int                `json:"iteration"` // 0: after warm-up
	Epochs        int                `json:"epochs"`    // epochs trained so far
	TrainLoss     float64            `json:"train_loss"`
	TrainAcc      float64            `json:"train_acc"`
	ValAcc        float64            `json:"val_acc"`
	Penalty       float64            `json:"penalty"`
	LiveEdges     map[string]int     `json:"live_edges"` // after derivation, per cell type
	LiveOps       map[string]int     `json:"live_ops"`
	Sparsity      float64            `json:"sparsity"`   // 1 - kept ops / candidate ops, all types
	MeanGamma     map[string]float64 `json:"mean_gamma"` // per op kind ("switch" for switches)
	Frozen        int                `json:"frozen_groups"`
	Clamped       int                `json:"clamped_omega"`
	ActiveLayers  int                `json:"active_layers"`
	TrainSeconds  float64            `json:"train_seconds"`
	CurvSeconds   float64            `json:"curvature_seconds"`
	CurvSamples   int                `json:"curvature_samples"`
	ElapsedSecond float64            `json:"elapsed_seconds"`
}

// Result is a finished search.
type Result struct {
	Config     Config
	Supernet   *models.Graph
	Net        *nn.Network
	Space      *Space
	Derivation *Derivation
	Derived    *models.Graph // derived cells at the supernet's size
	Log        []IterationLog
}

// Run searches: warm-up epochs on the network weights, then Iterations
// times: EpochsPerIteration epochs on weights and architecture variables
// jointly (cross-entropy + reweighted group-l1 penalty + weight decay),
// curvature, C/omega/gamma update, optional dynamic pruning. Each
// iteration's log line is written to logw (may be nil) as it completes.
func Run(ctx context.Context, cfg Config, train, val Batches, logw io.Writer) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if train == nil {
		return nil, errors.New("search: no training data")
	}
	cfg.Space.Search = true
	g, ps, err := models.ProxyNetwork(cfg.Space)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), cfg.Workers), cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	if err := models.InitParams(net, g, cfg.Seed); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	space, err := NewSpace(ps, net, cfg.LambdaSwitch, cfg.LambdaOp)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var weights, arch []*nn.Param
	for _, p := range net.Params {
		if p.Kind == nn.ArchVar {
			arch = append(arch, p)
		} else {
			weights = append(weights, p)
		}
	}
	optW, err := nn.NewSGD(weights, nn.SGDConfig{Momentum: float32(cfg.Momentum), WeightDecay: float32(cfg.WeightDecay)})
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var optA nn.Optimizer
	if cfg.ArchOptimizer == "adam" {
		optA, err = nn.NewAdam(arch, nn.AdamConfig{Beta1: 0.5, Beta2: 0.999, Eps: 1e-8})
	} else {
		optA, err = nn.NewSGD(arch, nn.SGDConfig{})
	}
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	curv, err := NewCurvature(net, cfg.Curvature, cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	r := &Result{Config: cfg, Supernet: g, Net: net, Space: space}
	pr := newPruner(g, net)
	x := make([]float32, cap(net.Input.Data))
	labels := make([]int32, cfg.Batch)
	if train.BatchSize() > cfg.Batch {
		return nil, fmt.Errorf("search: training batches of %d, the network is compiled for %d", train.BatchSize(), cfg.Batch)
	}
	start := time.Now()
	epoch := 0
	lossFn := nn.SoftmaxCrossEntropy{}

	runEpoch := func(joint bool) (loss, acc float64, err error) {
		train.StartEpoch(epoch)
		epoch++
		var lossSum float64
		var correct, seen int
		for {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			n, ok := train.Next(x, labels)
			if !ok {
				break
			}
			net.SetBatch(n)
			copy(net.Input.Data, x[:n*net.Input.PerSample()])
			net.ZeroGrad()
			net.Forward(true)
			l, c, err := lossFn.Forward(net.Output, labels[:n])
			if err != nil {
				return 0, 0, fmt.Errorf("search: %w", err)
			}
			if math.IsNaN(l) || math.IsInf(l, 0) {
				return 0, 0, fmt.Errorf("search: loss is %g at epoch %d (lower lr?)", l, epoch-1)
			}
			net.Backward()
			clipGradNorm(weights, cfg.GradClip)
			optW.Step(float32(cfg.LR))
			if joint {
				space.AddPenaltyGrad()
				optA.Step(float32(cfg.ArchLR))
				space.zeroFrozen()
			}
			lossSum += l * float64(n)
			correct += c
			seen += n
		}
		if seen == 0 {
			return 0, 0, errors.New("search: an epoch of training data had no samples")
		}
		return lossSum / float64(seen), float64(correct) / float64(seen), nil
	}

	// recalibrate resets the BN statistics on the first BNRecalBatches
	// batches of a fresh order of the training data.
	recalibrate := func() {
		if cfg.BNRecalBatches == 0 {
			return
		}
		train.StartEpoch(epoch)
		b := 0
		nn.RecalibrateBN(net, func(in []float32) (int, bool) {
			if b == cfg.BNRecalBatches {
				return 0, false
			}
			b++
			n, ok := train.Next(x, labels)
			copy(in, x[:n*net.Input.PerSample()])
			return n, ok
		})
	}

	logLine := func(it IterationLog) error {
		d, err := space.Derive(cfg.Derive)
		if err != nil {
			return err
		}
		r.Derivation = d
		it.Epochs = epoch
		it.LiveEdges, it.LiveOps = map[string]int{}, map[string]int{}
		var kept, cand int
		for _, c := range d.Table.Cells {
			if c.CopiedFrom != "" {
				continue
			}
			it.LiveEdges[c.Type], it.LiveOps[c.Type] = c.KeptEdges, c.KeptOps
			kept += c.KeptOps
			cand += c.CandidateOp
		}
		if cand > 0 {
			it.Sparsity = 1 - float64(kept)/float64(cand)
		}
		it.MeanGamma = space.meanGammaByOp()
		it.Penalty = space.Penalty()
		for _, gr := range space.Groups {
			if gr.Frozen {
				it.Frozen++
			}
		}
		it.ActiveLayers = len(net.Layers)
		if val != nil {
			_, acc, err := nn.Evaluate(net, &lossFn, val)
			if err != nil {
				return fmt.Errorf("search: validation: %w", err)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			it.ValAcc = acc
		}
		it.ElapsedSecond = time.Since(start).Seconds()
		r.Log = append(r.Log, it)
		if logw != nil {
			b, err := json.Marshal(it)
			if err != nil {
				return err
			}
			if _, err := logw.Write(append(b, '\n')); err != nil {
				return fmt.Errorf("search: writing the log: %w", err)
			}
		}
		return nil
	}

	var it IterationLog
	t0 := time.Now()
	for range cfg.WarmupEpochs {
		if it.TrainLoss, it.TrainAcc, err = runEpoch(false); err != nil {
			return nil, err
		}
	}
	it.TrainSeconds = time.Since(t0).Seconds()
	recalibrate()
	if err := logLine(it); err != nil {
		return nil, err
	}
	for t := 1; t <= cfg.Iterations; t++ {
		it = IterationLog{Iteration: t}
		t0 := time.Now()
		for range cfg.EpochsPerIteration {
			if it.TrainLoss, it.TrainAcc, err = runEpoch(true); err != nil {
				return nil, err
			}
		}
		it.TrainSeconds = time.Since(t0).Seconds()
		t1 := time.Now()
		recalibrate()
		curv.Reset()
		train.StartEpoch(epoch) // a fresh order, not the last epoch's
		for b := 0; cfg.CurvatureBatches == 0 || b < cfg.CurvatureBatches; b++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			n, ok := train.Next(x, labels)
			if !ok {
				break
			}
			if err := curv.AddBatch(x[:n*net.Input.PerSample()], labels[:n]); err != nil {
				return nil, fmt.Errorf("search: %w", err)
			}
		}
		it.CurvSamples = curv.Samples()
		if it.Clamped, err = space.Update(curv.Diagonal(), cfg.OmegaEps); err != nil {
			return nil, err
		}
		it.CurvSeconds = time.Since(t1).Seconds()
		if cfg.PruneThreshold > 0 && space.freezeBelow(cfg.PruneThreshold) > 0 {
			pr.apply(space)
			recalibrate()
		}
		if err := logLine(it); err != nil {
			return nil, err
		}
	}
	net.Layers = pr.all // the returned network computes every branch (frozen ones are zero)
	r.Derived, err = DerivedNetwork(cfg.Space, r.Derivation, cfg.Space.Cells, cfg.Space.Channels)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// meanGammaByOp averages gamma over the groups of each op kind.
func (s *Space) meanGammaByOp() map[string]float64 {
	sum, n := map[string]float64{}, map[string]int{}
	for _, g := range s.Groups {
		k := g.Op
		if g.Kind == Switch {
			k = "switch"
		}
		sum[k] += g.gammaOrZero()
		n[k]++
	}
	for k := range sum {
		sum[k] /= float64(n[k])
	}
	return sum
}

// freezeBelow freezes every live group whose gamma_eff is below tau and
// returns how many it froze.
func (s *Space) freezeBelow(tau float64) int {
	frozen := 0
	for _, g := range s.Groups {
		if !g.Frozen && g.GammaEff < tau {
			g.Frozen = true
			frozen++
		}
	}
	if frozen > 0 {
		s.zeroFrozen()
		s.ApplyDependency()
	}
	return frozen
}

// zeroFrozen holds frozen variables at exactly zero (the optimizer's
// momentum would otherwise move them).
func (s *Space) zeroFrozen() {
	for _, g := range s.Groups {
		if g.Frozen {
			for _, p := range g.Params {
				p.Data[0] = 0
			}
		}
	}
}

// WriteRunDir writes the search's artifacts into dir: the derived
// architecture (arch.json, an IR graph), the decision table
// (decisions.json), the supernet graph and its trained weights
// (supernet.json, supernet.safetensors) and the resolved config.
// The search log is written during Run to the writer the caller gave.
func (r *Result) WriteRunDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("search run directory: %w", err)
	}
	if err := r.Derived.WriteGraph(filepath.Join(dir, "arch.json")); err != nil {
		return err
	}
	if err := r.Supernet.WriteGraph(filepath.Join(dir, "supernet.json")); err != nil {
		return err
	}
	if err := models.SaveWeights(filepath.Join(dir, "supernet.safetensors"), r.Net.Params, map[string]string{"graph": r.Supernet.Name}); err != nil {
		return err
	}
	for name, v := range map[string]any{"decisions.json": r.Derivation, "search_config.json": r.Config} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := atomicfile.Write(filepath.Join(dir, name), append(b, '\n')); err != nil {
			return fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
		}
	}
	return nil
}

// clipGradNorm scales the gradients of ps so that their global L2 norm is
// at most maxNorm (torch.nn.utils.clip_grad_norm_); 0 disables.
func clipGradNorm(ps []*nn.Param, maxNorm float64) {
	if maxNorm <= 0 {
		return
	}
	var s float64
	for _, p := range ps {
		for _, g := range p.Grad {
			s += float64(g) * float64(g)
		}
	}
	norm := math.Sqrt(s)
	if norm <= maxNorm {
		return
	}
	k := float32(maxNorm / (norm + 1e-6))
	for _, p := range ps {
		for i := range p.Grad {
			p.Grad[i] *= k
		}
	}
}
