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
	"strings"
	"time"

	"bayesnas/bayes"
	"bayesnas/internal/atomicfile"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/nn/backends"
)

// Config is one search. Curvature is the per-sample mean over the batches
// used (the curvature of the mean cross-entropy), so the lambdas are on the
// scale of the mean loss and do not change meaning with the data set size.
type Config struct {
	// Kind is the search space: "proxy" (DARTS-style cells, Space) or
	// "pyramid-tree" (tree cells in a PyramidNet searched at full depth,
	// Tree); "" means proxy. Search is forced on in either.
	Kind  string                   `json:"kind"`
	Space models.ProxyConfig       `json:"space"`
	Tree  models.PyramidTreeConfig `json:"tree"`
	Seed  uint64                   `json:"seed"`
	Batch int                      `json:"batch"`

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
	// PenaltyStep is how the reweighted l1 penalty enters the architecture
	// update: "subgradient" (added to the gradient, as the paper; "" means
	// the same, so searches saved before the key existed resume unchanged)
	// or "proximal" (a group soft-threshold after the step,
	// bayes.ProxPenalty; DefaultConfig's), which reaches exact zeros.
	PenaltyStep string `json:"penalty_step,omitempty"`

	LambdaSwitch float64 `json:"lambda_switch"`
	LambdaOp     float64 `json:"lambda_op"`
	OmegaEps     float64 `json:"omega_eps"`

	Curvature bayes.Estimator `json:"curvature"`
	// CurvatureBatches caps the training batches the curvature is estimated
	// on per iteration; 0 uses every batch.
	CurvatureBatches int `json:"curvature_batches"`

	// TrainOpBNAffine trains the scale and shift of the BN that ends a
	// candidate op; by default they stay at 1 and 0 (see opBNAffine).
	TrainOpBNAffine bool `json:"train_op_bn_affine"`

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

	// Latency makes the search device-aware: op penalties scaled by their
	// latency on a device profile, and an optional latency target
	// (LatencyConfig). Left out of the JSON when off, so the configuration
	// of a search without it reads as before.
	Latency LatencyConfig `json:"latency,omitzero"`

	Workers int `json:"workers"` // 0: one per core
	// Backend builds the supernet (nn/backends); "" is auto. Set from the
	// run's top-level backend, as Workers from its threads.
	Backend string `json:"backend,omitempty"`
}

// DefaultConfig is a small search on the default proxy supernet.
func DefaultConfig() Config {
	return Config{Kind: KindProxy, Space: models.ProxySupernetDefault(), Tree: models.PyramidTreeDefault(), Seed: 1, Batch: 64, WarmupEpochs: 1, Iterations: 3,
		EpochsPerIteration: 1, LR: 0.025, Momentum: 0.9, WeightDecay: 3e-4, GradClip: 5, ArchOptimizer: "adam", ArchLR: 0.01, PenaltyStep: "proximal",
		LambdaSwitch: 0.01, LambdaOp: 0.01, OmegaEps: 1e-8, Curvature: bayes.MonteCarloFisher,
		BNRecalBatches: 10,
		Derive:         DeriveConfig{Threshold: 0.1, Relative: true, MinSignificance: 2}}
}

// Search spaces (Config.Kind).
const (
	KindProxy = "proxy"
	KindTree  = "pyramid-tree"
)

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Kind != "" && c.Kind != KindProxy && c.Kind != KindTree:
		return fmt.Errorf("search config: kind = %q, want %s or %s", c.Kind, KindProxy, KindTree)
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
	case c.PenaltyStep != "" && c.PenaltyStep != "subgradient" && c.PenaltyStep != "proximal":
		return fmt.Errorf("search config: penalty_step = %q, want subgradient or proximal", c.PenaltyStep)
	case c.CurvatureBatches < 0:
		return fmt.Errorf("search config: curvature_batches = %d, want >= 0", c.CurvatureBatches)
	case c.BNRecalBatches < 0:
		return fmt.Errorf("search config: bn_recal_batches = %d, want >= 0", c.BNRecalBatches)
	case !(c.PruneThreshold >= 0):
		return fmt.Errorf("search config: prune_threshold = %g, want >= 0", c.PruneThreshold)
	}
	if _, err := bayes.ParseEstimator(string(c.Curvature)); err != nil {
		return fmt.Errorf("search config: %w", err)
	}
	if err := c.Derive.validate(); err != nil {
		return fmt.Errorf("search config: %w", err)
	}
	if err := c.Latency.validate(); err != nil {
		return fmt.Errorf("search config: %w", err)
	}
	if err := backends.Check("backend", c.Backend); err != nil {
		return fmt.Errorf("search config: %w", err)
	}
	// The space's own checks (input, cells, nodes, widths, ops), before
	// anything is written: building the supernet's graph costs
	// milliseconds and allocates no tensors.
	if c.Kind == KindTree {
		t := c.Tree
		t.Search = true
		if _, _, err := models.PyramidTreeNetwork(t); err != nil {
			return fmt.Errorf("search config: tree: %w", err)
		}
	} else {
		sp := c.Space
		sp.Search = true
		if _, _, err := models.ProxyNetwork(sp); err != nil {
			return fmt.Errorf("search config: space: %w", err)
		}
	}
	return nil
}

// Batches is a source of training or validation batches
// (*dataset.Batcher implements it).
type Batches = nn.Batches

// IterationLog is one line of the search log (JSON lines).
type IterationLog struct {
	Iteration    int                `json:"iteration"` // 0: after warm-up
	Epochs       int                `json:"epochs"`    // epochs trained so far
	TrainLoss    float64            `json:"train_loss"`
	TrainAcc     float64            `json:"train_acc"`
	ValAcc       float64            `json:"val_acc"`
	Penalty      float64            `json:"penalty"`
	LiveEdges    map[string]int     `json:"live_edges"` // after derivation, per cell type
	LiveOps      map[string]int     `json:"live_ops"`
	Sparsity     float64            `json:"sparsity"`   // 1 - kept ops / candidate ops, all types
	MeanGamma    map[string]float64 `json:"mean_gamma"` // per op kind ("switch" for switches)
	Frozen       int                `json:"frozen_groups"`
	Clamped      int                `json:"clamped_omega"`
	ActiveLayers int                `json:"active_layers"`
	// PredictedMs is the derived network's latency on the device profile,
	// ThresholdMs that of the derivation by the thresholds alone (before
	// ops are dropped for a target), and LatencyScale the latency scale of
	// the op penalties during the iteration (a latency-aware search only).
	PredictedMs   float64 `json:"predicted_ms,omitempty"`
	ThresholdMs   float64 `json:"threshold_ms,omitempty"`
	LatencyScale  float64 `json:"latency_scale,omitempty"`
	TrainSeconds  float64 `json:"train_seconds"`
	CurvSeconds   float64 `json:"curvature_seconds"`
	CurvSamples   int     `json:"curvature_samples"`
	ElapsedSecond float64 `json:"elapsed_seconds"`
}

// Result is a finished search.
type Result struct {
	Config     Config
	Supernet   *models.Graph
	Net        *nn.Network
	Space      *Space
	Derivation *Derivation // proxy space
	// TreeDerivation is the derivation of a pyramid-tree search.
	TreeDerivation *TreeDerivation
	Derived        *models.Graph // derived cells at the supernet's size
	Log            []IterationLog
	// Latency is the derived network's predicted latency (a latency-aware
	// search only).
	Latency *LatencyReport
}

// RunOptions are the per-invocation settings of a search that do not change
// its result.
type RunOptions struct {
	// Log receives each iteration's log line (JSON) as it completes; a
	// resumed search first writes the lines of its checkpoint, so Log ends
	// with the whole log either way. May be nil.
	Log io.Writer
	// Checkpoint is where the search's state is written atomically at the
	// start, after every epoch and every log line, and on cancellation
	// mid-epoch (a killed search loses at most the epoch in progress); ""
	// writes none.
	Checkpoint string
	// Resume continues from Checkpoint instead of starting afresh.
	Resume bool
	// Progress, when set, is called after every training and curvature batch.
	Progress func(Progress)
	// Latency prices networks on the device of Config.Latency (required
	// when it is on). Its prices shape the result, so the configuration
	// names the profile behind it (LatencyConfig.ProfileHash).
	Latency LatencyModel
}

// Progress is where a search stands, for a progress bar.
type Progress struct {
	Phase          string // "epoch" (training) or "curvature"
	I, N           int    // epoch I of N (warm-up included), or curvature pass I of N (one per iteration)
	Batch, Batches int    // Batches is 0 when the training source does not say
	Training       bool   // Loss and Acc are the epoch's running means
	Loss, Acc      float64
	// Done of Total batches of the whole search (training and curvature),
	// for an ETA; Total is 0 when unknown.
	Done, Total int
}

// Run searches: warm-up epochs on the network weights, then Iterations
// times: EpochsPerIteration epochs on weights and architecture variables
// jointly (cross-entropy + reweighted group-l1 penalty + weight decay),
// curvature, C/omega/gamma update, optional dynamic pruning. Each
// iteration's log line is written to logw (may be nil) as it completes.
func Run(ctx context.Context, cfg Config, train, val Batches, logw io.Writer) (*Result, error) {
	return RunWith(ctx, cfg, train, val, RunOptions{Log: logw})
}

// RunWith is Run with checkpoints, resume and progress reports. A search
// stopped anywhere (ctx cancelled, or killed) and resumed from its checkpoint
// ends with the same log (timings aside), the same decisions and bit-identical
// weights as an uninterrupted one.
func RunWith(ctx context.Context, cfg Config, train, val Batches, opt RunOptions) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if train == nil {
		return nil, errors.New("search: no training data")
	}
	if opt.Resume && opt.Checkpoint == "" {
		return nil, errors.New("search: resume without a checkpoint path")
	}
	s, err := newSearcher(cfg, opt.Latency)
	if err != nil {
		return nil, err
	}
	s.ctx, s.opt, s.train, s.val = ctx, opt, train, val
	net := s.net
	s.x = make([]float32, cap(net.Input.Data))
	s.labels = make([]int32, cfg.Batch)
	if train.BatchSize() > cfg.Batch {
		return nil, fmt.Errorf("search: training batches of %d, the network is compiled for %d", train.BatchSize(), cfg.Batch)
	}
	if b, ok := train.(interface{ Batches() int }); ok {
		s.batches = b.Batches()
	}
	s.curvBatches = s.batches
	if cfg.CurvatureBatches > 0 && (s.batches == 0 || cfg.CurvatureBatches < s.batches) {
		s.curvBatches = cfg.CurvatureBatches
	}
	s.start = time.Now()
	if !opt.Resume {
		// A search stopped before its first boundary (say, validating the
		// warm-up of a search without one) resumes from the start.
		if err := s.checkpoint(); err != nil {
			return nil, err
		}
	} else {
		if err := s.load(opt.Checkpoint); err != nil {
			return nil, err
		}
		s.start = s.start.Add(-time.Duration(s.pos.Elapsed * float64(time.Second)))
		for _, it := range s.r.Log {
			if err := s.writeLine(it); err != nil {
				return nil, err
			}
		}
	}
	if err := s.loop(); err != nil {
		return nil, err
	}
	net.Layers = s.pr.all // the returned network computes every branch (frozen ones are zero)
	if s.r.Derived, err = s.derivedNetwork(); err != nil {
		return nil, err
	}
	return s.r, nil
}

// Rederive derives the architecture of a finished search again under
// another derivation setting, from its checkpoint (written with cfg, the
// search's configuration): no training, no curvature, the same supernet and
// gammas. Only Result.Config.Derive and the derivation change, so a user
// can try thresholds without searching again. lat prices the derivation of
// a latency-aware search (nil for another).
func Rederive(cfg Config, checkpoint string, d DeriveConfig, lat LatencyModel) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	s, err := newSearcher(cfg, lat)
	if err != nil {
		return nil, err
	}
	if err := s.load(checkpoint); err != nil {
		return nil, err
	}
	if s.pos.Logged != cfg.Iterations+1 {
		return nil, fmt.Errorf("derive: the search in %s has not finished (%d of %d log lines); resume it first", checkpoint, s.pos.Logged, cfg.Iterations+1)
	}
	s.cfg.Derive, s.r.Config.Derive = d, d
	if _, err := s.derive(); err != nil {
		return nil, err
	}
	s.net.Layers = s.pr.all
	if s.r.Derived, err = s.derivedNetwork(); err != nil {
		return nil, err
	}
	return s.r, nil
}

// opBNAffine names the scale and shift of every BN whose output is a
// candidate op's output (an input of an edge's mix node). Trained, such a
// scale absorbs the op's architecture weight (w * gamma * xhat), so the
// penalty on w could be dodged by growing gamma: DARTS searches with
// affine-free BN in its ops for this reason. Left out of the optimizer,
// they stay at 1 and 0.
func opBNAffine(g *models.Graph) map[string]bool {
	op := map[string]string{}
	for _, n := range g.Nodes {
		op[n.Name] = n.Op
	}
	fixed := map[string]bool{}
	for _, n := range g.Nodes {
		if n.Op != models.OpWSum || !strings.HasSuffix(n.Name, ".mix") {
			continue
		}
		for _, in := range n.Inputs {
			if op[in] == models.OpBN {
				fixed[in+".weight"], fixed[in+".bias"] = true, true
			}
		}
	}
	return fixed
}

// buildSupernet builds, compiles and initialises the supernet of cfg's
// space and groups its architecture variables.
func buildSupernet(cfg *Config) (*models.Graph, *nn.Network, *Space, error) {
	var (
		g     *models.Graph
		ps    *models.ProxySpace
		ts    *models.TreeSpace
		err   error
		space *Space
	)
	if cfg.Kind == KindTree {
		cfg.Tree.Search = true
		g, ts, err = models.PyramidTreeNetwork(cfg.Tree)
	} else {
		cfg.Space.Search = true
		g, ps, err = models.ProxyNetwork(cfg.Space)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("search: %w", err)
	}
	be, err := backends.New(cfg.Backend, cfg.Workers)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("search: %w", err)
	}
	net, err := models.Compile(g, be, cfg.Batch)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("search: %w", err)
	}
	if err := models.InitParams(net, g, cfg.Seed); err != nil {
		return nil, nil, nil, fmt.Errorf("search: %w", err)
	}
	if ts != nil {
		space, err = NewTreeSpace(ts, net, cfg.LambdaSwitch, cfg.LambdaOp)
	} else {
		space, err = NewSpace(ps, net, cfg.LambdaSwitch, cfg.LambdaOp)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("search: %w", err)
	}
	return g, net, space, nil
}

// cellCount is one cell's (or cell type's) derivation in numbers.
type cellCount struct {
	name                   string
	edges, ops, candidates int
}

// newSearcher builds the supernet of cfg, its groups, optimizers and
// curvature sampler: everything a checkpoint restores. A latency-aware
// search prices its ops on lat here and scales their penalties.
func newSearcher(cfg Config, lat LatencyModel) (*searcher, error) {
	g, net, space, err := buildSupernet(&cfg)
	if err != nil {
		return nil, err
	}
	s := &searcher{ctx: context.Background(), cfg: cfg, net: net, space: space,
		r: &Result{Config: cfg, Supernet: g, Net: net, Space: space}, pr: newPruner(g, net)}
	if cfg.Latency.On() {
		if lat == nil {
			return nil, fmt.Errorf("search: latency-aware (latency.weight or target_ms set) but no latency model of %s was given", cfg.Latency.Profile)
		}
		s.lat = lat
		if err := s.priceOps(); err != nil {
			return nil, err
		}
		s.pos.LatencyScale = cfg.Latency.startScale()
		s.setLambdas()
	}
	var arch []*nn.Param
	fixed := map[string]bool{}
	if !cfg.TrainOpBNAffine {
		fixed = opBNAffine(g)
	}
	for _, p := range space.Aux {
		fixed[p.Name] = true
	}
	for _, p := range net.Params {
		switch {
		case fixed[p.Name]:
		case p.Kind == nn.ArchVar:
			arch = append(arch, p)
		default:
			s.weights = append(s.weights, p)
		}
	}
	if s.optW, err = nn.NewSGDOn(net.Backend, s.weights, nn.SGDConfig{Momentum: float32(cfg.Momentum), WeightDecay: float32(cfg.WeightDecay)}); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	if cfg.ArchOptimizer == "adam" {
		s.optA, err = nn.NewAdamOn(net.Backend, arch, nn.AdamConfig{Beta1: 0.5, Beta2: 0.999, Eps: 1e-8})
	} else {
		s.optA, err = nn.NewSGDOn(net.Backend, arch, nn.SGDConfig{})
	}
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	if s.curv, err = bayes.NewCurvature(net, cfg.Curvature, cfg.Seed, bayes.WeightedSums); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	return s, nil
}

// derive thresholds the current gammas into the result's derivation and
// returns the kept edges and ops per cell; a latency-aware search prices
// the derived network and meets its target (deriveUnderTarget).
func (s *searcher) derive() ([]cellCount, error) {
	if s.cfg.Latency.On() {
		return s.deriveUnderTarget(s.cfg.Derive)
	}
	return s.deriveWith(s.cfg.Derive)
}

// deriveWith is derive by the thresholds of cfg alone.
func (s *searcher) deriveWith(cfg DeriveConfig) ([]cellCount, error) {
	var counts []cellCount
	if s.cfg.Kind == KindTree {
		d, err := s.space.DeriveTree(cfg)
		if err != nil {
			return nil, err
		}
		s.r.TreeDerivation = d
		for _, c := range d.Table.Cells {
			counts = append(counts, cellCount{c.Cell, c.KeptEdges, c.KeptOps, c.CandidateOps})
		}
		return counts, nil
	}
	d, err := s.space.Derive(cfg)
	if err != nil {
		return nil, err
	}
	s.r.Derivation = d
	for _, c := range d.Table.Cells {
		if c.CopiedFrom == "" {
			counts = append(counts, cellCount{c.Type, c.KeptEdges, c.KeptOps, c.CandidateOp})
		}
	}
	return counts, nil
}

// derivedNetwork builds the derived network at the supernet's size.
func (s *searcher) derivedNetwork() (*models.Graph, error) {
	if s.cfg.Kind == KindTree {
		base := s.cfg.Tree
		base.Search, base.Ops, base.Cells = false, nil, nil
		return DerivedTreeNetwork(base, s.r.TreeDerivation.Cells...)
	}
	return DerivedNetwork(s.cfg.Space, s.r.Derivation, s.cfg.Space.Cells, s.cfg.Space.Channels)
}

// searcher is one search in progress; pos says where it stands, and with the
// network, optimizers, groups and curvature sampler it is what a checkpoint
// holds.
type searcher struct {
	ctx         context.Context
	cfg         Config
	opt         RunOptions
	train, val  Batches
	net         *nn.Network
	space       *Space
	weights     []*nn.Param
	optW, optA  nn.Optimizer
	curv        *bayes.Curvature
	pr          *pruner
	r           *Result
	x           []float32
	labels      []int32
	lossFn      nn.SoftmaxCrossEntropy
	start       time.Time
	pos         position
	batches     int // per training epoch; 0 when the source does not say
	curvBatches int // per curvature pass, likewise
	lat         LatencyModel
	allOpsMs    float64 // the network with every op, on lat
}

// loop runs the search from s.pos to its end: the warm-up's epochs and log
// line, then each iteration's epochs, curvature, update and log line.
func (s *searcher) loop() error {
	cfg := s.cfg
	if s.pos.Logged == 0 {
		for s.pos.Epoch < cfg.WarmupEpochs {
			if err := s.runEpoch(false); err != nil {
				return err
			}
		}
		s.recalibrate()
		if err := s.finishLine(); err != nil {
			return err
		}
	}
	for t := s.pos.Logged; t <= cfg.Iterations; t++ {
		for s.pos.Epoch < cfg.WarmupEpochs+t*cfg.EpochsPerIteration {
			if err := s.runEpoch(true); err != nil {
				return err
			}
		}
		if err := s.curvatureUpdate(t); err != nil {
			return err
		}
		if err := s.finishLine(); err != nil {
			return err
		}
	}
	return nil
}

// runEpoch trains one epoch (or the rest of one, after a resume mid-epoch)
// and checkpoints at its end; on cancellation it checkpoints where it stands.
func (s *searcher) runEpoch(joint bool) error {
	cfg, net, p := s.cfg, s.net, &s.pos
	t0 := time.Now()
	s.train.StartEpoch(p.Epoch)
	skipBatches(s.train, p.Batch, s.x, s.labels)
	for {
		if err := s.ctx.Err(); err != nil {
			p.Line.TrainSeconds += time.Since(t0).Seconds()
			if err := s.checkpoint(); err != nil {
				return err
			}
			return s.interrupted(fmt.Sprintf("at epoch %d batch %d", p.Epoch+1, p.Batch), err)
		}
		n, ok := s.train.Next(s.x, s.labels)
		if !ok {
			break
		}
		net.SetBatch(n)
		net.Input.SetHost(s.x[:n*net.Input.PerSample()])
		s.setAux()
		net.ZeroGrad()
		net.Forward(true)
		l, c, err := net.Loss(s.lossFn, s.labels[:n])
		if err != nil {
			return fmt.Errorf("search: %w", err)
		}
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return fmt.Errorf("search: loss is %g at epoch %d (lower lr?)", l, p.Epoch)
		}
		net.Backward()
		clipGradNorm(s.weights, cfg.GradClip)
		s.optW.Step(float32(cfg.LR))
		if joint {
			if cfg.PenaltyStep == "proximal" {
				s.optA.Step(float32(cfg.ArchLR))
				bayes.ProxPenalty(s.space, cfg.ArchLR, s.archStep)
			} else {
				bayes.AddPenaltyGrad(s.space)
				s.optA.Step(float32(cfg.ArchLR))
			}
			s.space.zeroFrozen()
		}
		p.LossSum += l * float64(n)
		p.Correct += c
		p.Seen += n
		p.Batch++
		s.report(Progress{Phase: "epoch", I: p.Epoch + 1, N: cfg.WarmupEpochs + cfg.Iterations*cfg.EpochsPerIteration,
			Batch: p.Batch, Batches: s.batches, Training: true,
			Loss: p.LossSum / float64(p.Seen), Acc: float64(p.Correct) / float64(p.Seen)}, p.Batch)
	}
	if p.Seen == 0 {
		return errors.New("search: an epoch of training data had no samples")
	}
	p.Line.TrainLoss, p.Line.TrainAcc = p.LossSum/float64(p.Seen), float64(p.Correct)/float64(p.Seen)
	p.Line.TrainSeconds += time.Since(t0).Seconds()
	p.Epoch++
	p.Batch, p.LossSum, p.Correct, p.Seen = 0, 0, 0, 0
	return s.checkpoint()
}

// setAux sets the auxiliary skips' weight beta (models.ProxyConfig.AuxSkip)
// for the current position: 1 at the start of the search, falling linearly
// to 0 at the end of its last training epoch (DARTS-), so that the last
// curvature and the derivation see the supernet without them. beta is a
// function of the position alone, so a resumed search sets the same values.
func (s *searcher) setAux() {
	if len(s.space.Aux) == 0 {
		return
	}
	total := float64(s.cfg.WarmupEpochs + s.cfg.Iterations*s.cfg.EpochsPerIteration)
	done := float64(s.pos.Epoch)
	if s.batches > 0 {
		done += float64(s.pos.Batch) / float64(s.batches)
	}
	beta := float32(max(0, 1-done/total))
	for _, p := range s.space.Aux {
		p.Set(0, beta)
	}
}

// archStep is the architecture optimizer's factor on a unit gradient of
// the variable v (bayes.ProxPenalty): Adam's 1/(sqrt(v_hat)+eps), plain
// SGD's 1.
func (s *searcher) archStep(v bayes.Var) float64 {
	if a, ok := s.optA.(*nn.Adam); ok {
		return a.InvDenom(v.P, v.I)
	}
	return 1
}

// skipBatches moves b past its next k batches (a resume mid-epoch), without
// filling them when it can.
func skipBatches(b Batches, k int, x []float32, labels []int32) {
	if sk, ok := b.(interface{ Skip(int) }); ok {
		sk.Skip(k)
		return
	}
	for range k {
		b.Next(x, labels)
	}
}

// curvatureUpdate is the end of iteration t: curvature on a fresh order of
// the training data, the C/omega/gamma update and dynamic pruning. It is not
// checkpointed inside: a search stopped here resumes from the epoch before.
func (s *searcher) curvatureUpdate(t int) error {
	cfg, p := s.cfg, &s.pos
	t1 := time.Now()
	s.recalibrate() // sets the auxiliary skips too
	s.curv.Reset()
	s.train.StartEpoch(p.Epoch) // a fresh order, not the last epoch's
	for b := 0; cfg.CurvatureBatches == 0 || b < cfg.CurvatureBatches; b++ {
		if err := s.ctx.Err(); err != nil {
			return s.interrupted(fmt.Sprintf("in the curvature of iteration %d", t), err)
		}
		n, ok := s.train.Next(s.x, s.labels)
		if !ok {
			break
		}
		if err := s.curv.AddBatch(s.x[:n*s.net.Input.PerSample()], s.labels[:n]); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		s.report(Progress{Phase: "curvature", I: t, N: cfg.Iterations, Batch: b + 1, Batches: s.curvBatches}, b+1)
	}
	p.Line.CurvSamples = s.curv.Samples()
	var err error
	if p.Line.Clamped, err = bayes.Update(s.space, s.curv.Diagonal(), cfg.OmegaEps); err != nil {
		return err
	}
	p.Line.CurvSeconds = time.Since(t1).Seconds()
	if cfg.PruneThreshold > 0 && s.space.freezeBelow(cfg.PruneThreshold) > 0 {
		s.pr.apply(s.space)
		s.recalibrate()
	}
	return nil
}

// report passes a progress report on, with the whole search's count of
// batches done (inPhase of them in the current epoch or curvature pass).
func (s *searcher) report(pr Progress, inPhase int) {
	if s.opt.Progress == nil {
		return
	}
	cfg, p := s.cfg, s.pos
	curvDone := max(p.Logged-1, 0) // curvature passes finished
	pr.Done = p.Epoch*s.batches + curvDone*s.curvBatches + inPhase
	if s.batches > 0 {
		pr.Total = (cfg.WarmupEpochs+cfg.Iterations*cfg.EpochsPerIteration)*s.batches + cfg.Iterations*s.curvBatches
	}
	s.opt.Progress(pr)
}

// interrupted is the error of a cancelled search, saying what a resume
// continues from.
func (s *searcher) interrupted(where string, err error) error {
	if s.opt.Checkpoint == "" {
		return fmt.Errorf("search interrupted %s: %w", where, err)
	}
	return fmt.Errorf("search interrupted %s; checkpoint saved after %d epochs and %d batches, continue with --resume: %w",
		where, s.pos.Epoch, s.pos.Batch, err)
}

// recalibrate resets the BN statistics on the first BNRecalBatches
// batches of a fresh order of the training data.
func (s *searcher) recalibrate() {
	s.setAux()
	if s.cfg.BNRecalBatches == 0 {
		return
	}
	s.train.StartEpoch(s.pos.Epoch)
	b := 0
	nn.RecalibrateBN(s.net, func(in []float32) (int, bool) {
		if b == s.cfg.BNRecalBatches {
			return 0, false
		}
		b++
		n, ok := s.train.Next(s.x, s.labels)
		copy(in, s.x[:n*s.net.Input.PerSample()])
		return n, ok
	})
}

// finishLine completes the current phase's log line (derivation, gammas,
// validation), writes it, and checkpoints the boundary.
func (s *searcher) finishLine() error {
	space, p := s.space, &s.pos
	it := p.Line
	it.Iteration = p.Logged
	counts, err := s.derive()
	if err != nil {
		return err
	}
	it.Epochs = p.Epoch
	it.LiveEdges, it.LiveOps = map[string]int{}, map[string]int{}
	var kept, cand int
	for _, c := range counts {
		it.LiveEdges[c.name], it.LiveOps[c.name] = c.edges, c.ops
		kept += c.ops
		cand += c.candidates
	}
	if cand > 0 {
		it.Sparsity = 1 - float64(kept)/float64(cand)
	}
	it.MeanGamma = space.meanGammaByOp()
	it.Penalty = bayes.Penalty(space)
	for _, gr := range space.Groups {
		if gr.Frozen {
			it.Frozen++
		}
	}
	it.ActiveLayers = len(s.net.Layers)
	if s.r.Latency != nil {
		it.PredictedMs, it.ThresholdMs, it.LatencyScale = s.r.Latency.PredictedMs, s.r.Latency.ThresholdMs, s.pos.LatencyScale
		// After an update that another follows, the target moves the scale
		// the next iterations' penalties use.
		if p.Logged >= 1 && p.Logged < s.cfg.Iterations {
			s.adaptScale(s.r.Latency.ThresholdMs)
		}
	}
	if s.val != nil {
		s.setAux()
		_, acc, err := nn.Evaluate(s.net, &s.lossFn, s.val)
		if err != nil {
			return fmt.Errorf("search: validation: %w", err)
		}
		if err := s.ctx.Err(); err != nil {
			return s.interrupted(fmt.Sprintf("validating iteration %d", p.Logged), err)
		}
		it.ValAcc = acc
	}
	it.ElapsedSecond = time.Since(s.start).Seconds()
	s.r.Log = append(s.r.Log, it)
	if err := s.writeLine(it); err != nil {
		return err
	}
	p.Logged++
	p.Line = IterationLog{}
	return s.checkpoint()
}

func (s *searcher) writeLine(it IterationLog) error {
	if s.opt.Log == nil {
		return nil
	}
	b, err := json.Marshal(it)
	if err != nil {
		return err
	}
	if _, err := s.opt.Log.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("search: writing the log: %w", err)
	}
	return nil
}

// meanGammaByOp averages gamma over the groups of each op kind.
func (s *Space) meanGammaByOp() map[string]float64 {
	sum, n := map[string]float64{}, map[string]int{}
	for _, g := range s.Groups {
		k := g.Op
		if g.Kind == Switch {
			k = "switch"
		}
		sum[k] += g.GammaOrZero()
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
			g.Zero()
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
	var decisions any = r.Derivation
	if r.TreeDerivation != nil {
		decisions = r.TreeDerivation
	}
	files := map[string]any{"decisions.json": decisions, "search_config.json": r.Config}
	if r.Latency != nil {
		files[LatencyFile] = r.Latency
	}
	for name, v := range files {
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
		for _, g := range p.HostGrad() {
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
		p.CommitGrad()
	}
}
