package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"bayesnas/compress"
	"bayesnas/hwprofile"
	"bayesnas/models"
	"bayesnas/nn"
)

// CompressionFile is the compression report in a compressed run directory.
const CompressionFile = "compression.json"

// Files of a compressed run directory besides a training run's: the pruned
// network before fine-tuning.
const (
	PrunedArchFile    = "pruned_arch.json"
	PrunedWeightsFile = "pruned_weights.safetensors"
)

// CompressOptions configure the compress stage.
type CompressOptions struct {
	Run     string // a finished training run
	Out     string // the compressed run directory
	Profile string // the device profile that prices networks
	Budget  compress.Budget
	// Method: "uniform" (width scaling) or "l1" (L1-norm filter pruning
	// over coupled groups). The Bayesian method is not built yet.
	Method   string
	Multiple int // widths rounded to multiples of it (8)
	// ProtectClassifierInputs keeps every channel the classifier reads.
	ProtectClassifierInputs bool
	// Epochs of fine-tuning with the training run's settings (0: none).
	Epochs int
	LR     float64 // 0: the training run's learning rate / 10
	Train  Options // resume, progress and logging of the fine-tuning
}

// profileLatency prices a network with a device profile.
type profileLatency struct{ prof *hwprofile.Profile }

func (p profileLatency) LatencyMs(g *models.Graph, params []*nn.Param) (float64, error) {
	m, err := hwprofile.Network(g, params)
	if err != nil {
		return 0, err
	}
	ks, err := hwprofile.Kernels(m)
	if err != nil {
		return 0, err
	}
	pr, err := p.prof.PredictKernels(ks, hwprofile.SpaceOf(g))
	if err != nil {
		return 0, err
	}
	return pr.TotalMs, nil
}

// CompressionReport is compression.json.
type CompressionReport struct {
	Method       string               `json:"method"`
	Budget       string               `json:"budget"`
	BudgetMs     float64              `json:"budget_ms"`
	Profile      string               `json:"profile"`
	ProfileID    string               `json:"profile_hash"`
	Device       string               `json:"device"`
	Selection    *compress.Selection  `json:"selection"`
	Before       NetworkCost          `json:"before"`
	After        NetworkCost          `json:"after"`
	Layers       []compress.NodeWidth `json:"layers"`
	Folds        int                  `json:"folds"`
	InexactFolds int                  `json:"folds_interior_only"`
	Lost         int                  `json:"channels_lost"`
	FineTune     *Summary             `json:"fine_tune,omitempty"`
}

// NetworkCost is a network's size and predicted latency.
type NetworkCost struct {
	Params      int64   `json:"params"`
	MACs        int64   `json:"macs"`
	PredictedMs float64 `json:"predicted_ms"`
}

// Compress prunes a trained network to a latency budget on a device
// profile, writes the smaller network (real surgery, not masks) into
// opt.Out, and fine-tunes it there. A budget the method cannot meet is an
// error and nothing is written.
func Compress(ctx context.Context, opt CompressOptions) (*CompressionReport, error) {
	if opt.Out == "" || opt.Out == opt.Run {
		return nil, fmt.Errorf("compress: --out must name a new run directory (not the trained run)")
	}
	run, err := loadTrainedRun(opt.Run)
	if err != nil {
		return nil, err
	}
	prof, err := hwprofile.Read(opt.Profile)
	if err != nil {
		return nil, err
	}
	if in := run.g.Input.Shape; !slices.Equal(in, prof.Protocol.Input) {
		return nil, fmt.Errorf("profile %s was measured for input %v, the network of %s takes %v: measure a profile for it (bayesnas profile measure --run %s)",
			opt.Profile, prof.Protocol.Input, opt.Run, in, opt.Run)
	}
	lat := profileLatency{prof}
	base, err := lat.LatencyMs(run.g, run.params)
	if err != nil {
		return nil, fmt.Errorf("pricing %s on %s: %w", opt.Run, opt.Profile, err)
	}
	// The stem is kept; the classifier's logits always are (graph output),
	// but its input channels only on request: in a residual network they
	// are the whole last stage's stream.
	bopt := compress.BudgetOptions{Latency: lat, BudgetMs: opt.Budget.Of(base), Multiple: opt.Multiple,
		Groups: compress.GroupOptions{ProtectStem: true, ProtectClassifier: opt.ProtectClassifierInputs}}
	var sel *compress.Selection
	switch opt.Method {
	case "uniform":
		sel, err = compress.Uniform(run.g, run.params, bopt)
	case "l1":
		sel, err = compress.Greedy(run.g, run.params, nil, "l1", bopt)
	default:
		return nil, fmt.Errorf("compress: method %q: want uniform or l1", opt.Method)
	}
	if err != nil {
		return nil, err
	}
	if !sel.MetBudget {
		return nil, fmt.Errorf("compress: budget %s (%.4f ms) is below the smallest network %s reaches from %s: %.4f ms predicted on %s (unpruned %.4f ms); nothing written",
			opt.Budget, bopt.BudgetMs, opt.Method, opt.Run, sel.PrunedMs, opt.Profile, base)
	}
	pg, pp, prep, err := compress.PruneWith(run.g, run.params, sel.Removed, bopt.Groups)
	if err != nil {
		return nil, err
	}
	rep := &CompressionReport{Method: opt.Method, Budget: opt.Budget.String(), BudgetMs: bopt.BudgetMs,
		Profile: opt.Profile, ProfileID: prof.Hash, Selection: sel, Layers: prep.Widths, Lost: len(prep.Lost),
		Device: fmt.Sprintf("%s / %s %s (%s, %d threads)", prof.Device.CPU, prof.Runtime.Name, prof.Runtime.Version,
			prof.Runtime.ExecutionProvider, prof.Runtime.IntraOpThreads)}
	for _, f := range prep.Folds {
		rep.Folds++
		if !f.Exact {
			rep.InexactFolds++
		}
	}
	for _, c := range []struct {
		g   *models.Graph
		ms  float64
		out *NetworkCost
	}{{run.g, base, &rep.Before}, {pg, sel.PrunedMs, &rep.After}} {
		n, err := c.g.Count()
		if err != nil {
			return nil, err
		}
		*c.out = NetworkCost{Params: n.Params, MACs: n.MACs, PredictedMs: c.ms}
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, err
	}
	archPath, weightsPath := filepath.Join(opt.Out, PrunedArchFile), filepath.Join(opt.Out, PrunedWeightsFile)
	if err := pg.WriteGraph(archPath); err != nil {
		return nil, err
	}
	if err := models.SaveWeights(weightsPath, pp, map[string]string{"arch": PrunedArchFile, "format": "bayesnas.weights/v1"}); err != nil {
		return nil, err
	}
	if opt.Epochs > 0 {
		cfg := run.cfg
		cfg.RunDir = opt.Out
		cfg.Model = Model{Arch: archPath, Weights: weightsPath}
		cfg.Train.Epochs = opt.Epochs
		cfg.Train.WarmupEpochs = 0
		cfg.Train.LR = opt.LR
		if cfg.Train.LR == 0 {
			cfg.Train.LR = run.cfg.Train.LR / 10
		}
		sum, err := Train(ctx, cfg, opt.Train)
		if err != nil {
			return nil, fmt.Errorf("fine-tuning: %w", err)
		}
		rep.FineTune = sum
	}
	return rep, writeJSON(filepath.Join(opt.Out, CompressionFile), rep)
}
