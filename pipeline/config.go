// Package pipeline runs the stages of bayesnas (today: training) over a run
// directory: it resolves configuration, loads data, builds and compiles the
// network from the IR, trains with checkpoints that a resumed run continues
// from, and writes metrics and a summary.
package pipeline

import (
	"encoding/json"
	"fmt"
)

// Config is the fully resolved configuration of a run. Field tags are the
// keys of the YAML file, of BAYESNAS_* environment variables (dots become
// underscores) and of the flags that override them.
type Config struct {
	RunDir  string   `mapstructure:"run_dir" json:"run_dir"`
	Seed    uint64   `mapstructure:"seed" json:"seed"`
	Threads int      `mapstructure:"threads" json:"threads"` // 0: one per core
	Data    Data     `mapstructure:"data" json:"data"`
	Model   Model    `mapstructure:"model" json:"model"`
	Train   Training `mapstructure:"train" json:"train"`
}

// Data selects the dataset, the validation split and augmentation.
type Data struct {
	Name     string  `mapstructure:"name" json:"name"` // fashion-mnist, mnist, cifar10, synthetic
	Dir      string  `mapstructure:"dir" json:"dir"`
	ValCount int     `mapstructure:"val_count" json:"val_count"`
	Augment  Augment `mapstructure:"augment" json:"augment"`
	// Limit caps the number of training images (0: all); for smoke runs.
	Limit int `mapstructure:"limit" json:"limit"`
}

// Augment mirrors dataset.Augment.
type Augment struct {
	CropPad int  `mapstructure:"crop_pad" json:"crop_pad"`
	Flip    bool `mapstructure:"flip" json:"flip"`
	Cutout  int  `mapstructure:"cutout" json:"cutout"`
}

// Model is either a builder with parameters or an architecture JSON file.
type Model struct {
	Builder string         `mapstructure:"builder" json:"builder"`
	Params  map[string]any `mapstructure:"params" json:"params"`
	Arch    string         `mapstructure:"arch" json:"arch"`
	// Weights starts training from these weights (a safetensors file
	// matching the network) instead of a random initialisation: how a
	// compressed network is fine-tuned.
	Weights string `mapstructure:"weights" json:"weights,omitempty"`
}

// Training holds the optimisation settings.
type Training struct {
	Epochs         int     `mapstructure:"epochs" json:"epochs"`
	Batch          int     `mapstructure:"batch" json:"batch"`
	Optimizer      string  `mapstructure:"optimizer" json:"optimizer"` // sgd, adam
	LR             float64 `mapstructure:"lr" json:"lr"`
	MinLR          float64 `mapstructure:"min_lr" json:"min_lr"`
	Momentum       float64 `mapstructure:"momentum" json:"momentum"`
	Nesterov       bool    `mapstructure:"nesterov" json:"nesterov"`
	WeightDecay    float64 `mapstructure:"weight_decay" json:"weight_decay"`
	Schedule       string  `mapstructure:"schedule" json:"schedule"` // cosine, step, constant
	WarmupEpochs   float64 `mapstructure:"warmup_epochs" json:"warmup_epochs"`
	Milestones     []int   `mapstructure:"milestones" json:"milestones"` // epochs, for step
	Gamma          float64 `mapstructure:"gamma" json:"gamma"`           // for step
	LabelSmoothing float64 `mapstructure:"label_smoothing" json:"label_smoothing"`
	EvalBatch      int     `mapstructure:"eval_batch" json:"eval_batch"`
}

// Defaults are the values a key takes when neither the file, the
// environment nor a flag sets it: the demo's setting.
func Defaults() map[string]any {
	return map[string]any{
		"run_dir":               "runs/default",
		"seed":                  1,
		"threads":               0,
		"data.name":             "fashion-mnist",
		"data.dir":              "",
		"data.val_count":        5000,
		"data.augment.crop_pad": 2,
		"data.augment.flip":     true,
		"data.augment.cutout":   0,
		"data.limit":            0,
		"model.builder":         "pyramidnet",
		"model.params":          map[string]any{},
		"model.arch":            "",
		"model.weights":         "",
		"train.epochs":          1,
		"train.batch":           64,
		"train.optimizer":       "sgd",
		"train.lr":              0.1,
		"train.min_lr":          0.0,
		"train.momentum":        0.9,
		"train.nesterov":        true,
		"train.weight_decay":    5e-4,
		"train.schedule":        "cosine",
		"train.warmup_epochs":   0.0,
		"train.milestones":      []int{},
		"train.gamma":           0.1,
		"train.label_smoothing": 0.0,
		"train.eval_batch":      64,
	}
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error {
	switch {
	case c.RunDir == "":
		return fmt.Errorf("config: run_dir is empty")
	case c.Threads < 0:
		return fmt.Errorf("config: threads = %d, want >= 0", c.Threads)
	case c.Data.ValCount < 0:
		return fmt.Errorf("config: data.val_count = %d, want >= 0", c.Data.ValCount)
	case c.Model.Builder == "" && c.Model.Arch == "":
		return fmt.Errorf("config: set model.builder or model.arch")
	case c.Train.Epochs < 1:
		return fmt.Errorf("config: train.epochs = %d, want >= 1", c.Train.Epochs)
	case c.Train.Batch < 1:
		return fmt.Errorf("config: train.batch = %d, want >= 1", c.Train.Batch)
	case c.Train.EvalBatch < 1:
		return fmt.Errorf("config: train.eval_batch = %d, want >= 1", c.Train.EvalBatch)
	case c.Train.LR <= 0:
		return fmt.Errorf("config: train.lr = %g, want > 0", c.Train.LR)
	case c.Train.LabelSmoothing < 0 || c.Train.LabelSmoothing >= 1:
		return fmt.Errorf("config: train.label_smoothing = %g, want in [0, 1)", c.Train.LabelSmoothing)
	}
	switch c.Train.Optimizer {
	case "sgd", "adam":
	default:
		return fmt.Errorf("config: train.optimizer = %q, want sgd or adam", c.Train.Optimizer)
	}
	switch c.Train.Schedule {
	case "cosine", "step", "constant":
	default:
		return fmt.Errorf("config: train.schedule = %q, want cosine, step or constant", c.Train.Schedule)
	}
	return nil
}

// modelParamsJSON is the builder parameters as the JSON the builder reads.
func (c *Config) modelParamsJSON() (json.RawMessage, error) {
	b, err := json.Marshal(c.Model.Params)
	if err != nil {
		return nil, fmt.Errorf("config: model.params: %w", err)
	}
	return b, nil
}
