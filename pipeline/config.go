// Package pipeline runs the stages of bayesnas (today: training) over a run
// directory: it resolves configuration, loads data, builds and compiles the
// network from the IR, trains with checkpoints that a resumed run continues
// from, and writes metrics and a summary.
package pipeline

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"bayesnas/compress"
	"bayesnas/dataset"
	"bayesnas/export"
	"bayesnas/hwprofile"
	"bayesnas/nn/backends"
	"bayesnas/search"
)

// Config is the fully resolved configuration of a run. Field tags are the
// keys of the YAML file, of BAYESNAS_* environment variables (dots become
// underscores) and of the flags that override them.
type Config struct {
	RunDir  string `mapstructure:"run_dir" json:"run_dir"`
	Seed    uint64 `mapstructure:"seed" json:"seed"`
	Threads int    `mapstructure:"threads" json:"threads"` // 0: one per core
	// Backend builds the network (nn/backends: auto, cpu, reference);
	// "" is auto. Left out of config.json when unset, so runs made before
	// the setting existed resume as they were.
	Backend string   `mapstructure:"backend" json:"backend,omitempty"`
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
	// Distill, when its alpha is above 0, trains against a teacher
	// network's softened outputs besides the labels (nn.Distillation): how
	// compression fine-tunes a pruned network against the one it was
	// pruned from. Left out of config.json when off.
	Distill Distill `mapstructure:"distill" json:"distill,omitzero"`
}

// Distill configures knowledge distillation from a trained network; the
// zero value is off.
type Distill struct {
	// Teacher is a finished training run directory (arch.json, weights,
	// summary.json) whose network takes the same inputs, normalised alike,
	// and has the same classes.
	Teacher string `mapstructure:"teacher" json:"teacher"`
	// Alpha weighs the teacher's term against the labels', in (0, 1]; 0
	// is off.
	Alpha float64 `mapstructure:"alpha" json:"alpha"`
	// Temperature softens both networks' outputs (> 0; 0: 4, the usual).
	Temperature float64 `mapstructure:"temperature" json:"temperature,omitempty"`
}

// On says whether d asks for distillation.
func (d Distill) On() bool { return d != Distill{} }

// T is the temperature in use.
func (d Distill) T() float64 { return cmp.Or(d.Temperature, 4) }

// Validate refuses a distillation setting no run can use, naming its key
// under section.
func (d Distill) Validate(section string) error {
	switch {
	case !d.On():
		return nil
	case math.IsNaN(d.Temperature) || math.IsInf(d.Temperature, 0) || d.Temperature < 0:
		return fmt.Errorf("config: %s.distill.temperature = %g, want a finite number > 0 (0: 4)", section, d.Temperature)
	case math.IsNaN(d.Alpha) || d.Alpha <= 0 || d.Alpha > 1:
		return fmt.Errorf("config: %s.distill.alpha = %g, want a number in (0, 1] when distilling (from %q)", section, d.Alpha, d.Teacher)
	case d.Teacher == "":
		return fmt.Errorf("config: %s.distill.teacher is empty: name a finished training run directory", section)
	}
	return nil
}

// Defaults are the values a key takes when neither the file, the
// environment nor a flag sets it: the demo's setting.
func Defaults() map[string]any {
	return map[string]any{
		"run_dir":                   "runs/default",
		"seed":                      1,
		"threads":                   0,
		"backend":                   "",
		"data.name":                 "fashion-mnist",
		"data.dir":                  "",
		"data.val_count":            5000,
		"data.augment.crop_pad":     2,
		"data.augment.flip":         true,
		"data.augment.cutout":       0,
		"data.limit":                0,
		"model.builder":             "pyramidnet",
		"model.params":              map[string]any{},
		"model.arch":                "",
		"model.weights":             "",
		"train.epochs":              1,
		"train.batch":               64,
		"train.optimizer":           "sgd",
		"train.lr":                  0.1,
		"train.min_lr":              0.0,
		"train.momentum":            0.9,
		"train.nesterov":            true,
		"train.weight_decay":        5e-4,
		"train.schedule":            "cosine",
		"train.warmup_epochs":       0.0,
		"train.milestones":          []int{},
		"train.gamma":               0.1,
		"train.label_smoothing":     0.0,
		"train.eval_batch":          64,
		"train.distill.teacher":     "",
		"train.distill.alpha":       0.0,
		"train.distill.temperature": 0.0,
	}
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error { return c.validateAs("train") }

// validateAs validates c with its training section named section (train,
// or the pipeline's retrain) in the messages.
func (c *Config) validateAs(section string) error {
	if err := c.validateNumbers(section); err != nil {
		return err
	}
	switch {
	case c.RunDir == "":
		return fmt.Errorf("config: run_dir is empty")
	case c.Threads < 0:
		return fmt.Errorf("config: threads = %d, want >= 0", c.Threads)
	case backends.Check("backend", c.Backend) != nil:
		return fmt.Errorf("config: %w", backends.Check("backend", c.Backend))
	case c.Model.Builder == "" && c.Model.Arch == "":
		return fmt.Errorf("config: set model.builder or model.arch")
	case c.Train.Epochs < 1:
		return fmt.Errorf("config: %s.epochs = %d, want >= 1", section, c.Train.Epochs)
	case c.Train.Batch < 1:
		return fmt.Errorf("config: %s.batch = %d, want >= 1", section, c.Train.Batch)
	case c.Train.EvalBatch < 1:
		return fmt.Errorf("config: %s.eval_batch = %d, want >= 1", section, c.Train.EvalBatch)
	case c.Train.LR <= 0:
		return fmt.Errorf("config: %s.lr = %g, want > 0", section, c.Train.LR)
	case c.Train.LabelSmoothing < 0 || c.Train.LabelSmoothing >= 1:
		return fmt.Errorf("config: %s.label_smoothing = %g, want in [0, 1)", section, c.Train.LabelSmoothing)
	}
	if err := c.Train.Distill.Validate(section); err != nil {
		return err
	}
	switch c.Train.Optimizer {
	case "sgd", "adam":
	default:
		return fmt.Errorf("config: %s.optimizer = %q, want sgd or adam", section, c.Train.Optimizer)
	}
	switch c.Train.Schedule {
	case "cosine", "step", "constant":
	default:
		return fmt.Errorf("config: %s.schedule = %q, want cosine, step or constant", section, c.Train.Schedule)
	}
	return nil
}

// validateNumbers refuses a number no run can use: NaN or infinite
// settings, negative counts, sizes and rates (a NaN learning rate passed
// every comparison above and failed only in training, a negative limit
// panicked in a plot).
func (c *Config) validateNumbers(section string) error {
	t := c.Train
	for _, f := range []struct {
		key string
		v   float64
		max float64 // exclusive
	}{{"lr", t.LR, math.Inf(1)}, {"min_lr", t.MinLR, math.Inf(1)}, {"momentum", t.Momentum, 1}, {"weight_decay", t.WeightDecay, math.Inf(1)},
		{"warmup_epochs", t.WarmupEpochs, math.Inf(1)}, {"gamma", t.Gamma, math.Inf(1)}, {"label_smoothing", t.LabelSmoothing, 1}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 || f.v >= f.max {
			want := "a finite number >= 0"
			if !math.IsInf(f.max, 1) {
				want = fmt.Sprintf("a number in [0, %g)", f.max)
			}
			return fmt.Errorf("config: %s.%s = %g, want %s", section, f.key, f.v, want)
		}
	}
	for i, m := range t.Milestones {
		if m < 1 {
			return fmt.Errorf("config: %s.milestones[%d] = %d, want an epoch >= 1", section, i, m)
		}
	}
	return c.Data.Validate()
}

// Validate refuses data settings no run can use, naming the key: a data
// set this binary does not know, negative counts and sizes (every command
// that reads data: section checks it so).
func (d Data) Validate() error {
	if !slices.Contains(dataset.Names, d.Name) {
		return fmt.Errorf("config: data.name %q is not a dataset (known: %s)", d.Name, strings.Join(dataset.Names, ", "))
	}
	for _, f := range []struct {
		key string
		v   int
	}{{"data.val_count", d.ValCount}, {"data.limit", d.Limit}, {"data.augment.crop_pad", d.Augment.CropPad}, {"data.augment.cutout", d.Augment.Cutout}} {
		if f.v < 0 {
			return fmt.Errorf("config: %s = %d, want >= 0", f.key, f.v)
		}
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

// PipelineConfig is the resolved configuration of `bayesnas pipeline`
// (configs/pipeline.yaml): the run settings and data as for train, the
// search, the retraining of the derived network, the device, the latency
// budget, compression and export. Each stage's part of it is hashed into
// the manifest (see stageConfig), so changing one re-runs that stage and
// those after it.
type PipelineConfig struct {
	RunDir  string `mapstructure:"run_dir" json:"run_dir"`
	Seed    uint64 `mapstructure:"seed" json:"seed"`
	Threads int    `mapstructure:"threads" json:"threads"`
	Backend string `mapstructure:"backend" json:"backend,omitempty"` // every stage's (Config.Backend)
	Data    Data   `mapstructure:"data" json:"data"`
	// Search is search.Config's JSON form, decoded strictly by the CLI as
	// for `bayesnas search` (its keys are not mapstructure's).
	Search   search.Config    `mapstructure:"-" json:"search"`
	Retrain  Retrain          `mapstructure:"retrain" json:"retrain"`
	Device   PipelineDevice   `mapstructure:"device" json:"device"`
	Budget   string           `mapstructure:"budget" json:"budget"` // 2.5ms or 0.5x (of the unpruned network)
	Compress PipelineCompress `mapstructure:"compress" json:"compress"`
	Export   PipelineExport   `mapstructure:"export" json:"export"`
}

// Retrain trains the derived network from scratch: the training settings
// of `bayesnas train`, with builder parameters laid over the derived
// network's (model.params: a deeper or wider stack of the searched cells).
type Retrain struct {
	Training `mapstructure:",squash"`
	Params   map[string]any `mapstructure:"params" json:"params"`
	// DataLimit caps the training images (0: data.limit, the search's).
	DataLimit int `mapstructure:"data_limit" json:"data_limit"`
}

// PipelineDevice is the target device: its latency profile prices the
// networks (compress) and names the runtime the export stage measures on.
type PipelineDevice struct {
	Profile string `mapstructure:"profile" json:"profile"`
	// Plugin is a device plug-in command line ("node plugins/ort-wasm/plugin.mjs
	// --threads 1"); "" takes the profile's own (none: the built-in ONNX Runtime).
	Plugin string `mapstructure:"plugin" json:"plugin"`
	// Threads of the built-in ONNX Runtime; 0: the profile's.
	Threads int `mapstructure:"threads" json:"threads"`
	// ONNXRuntimeLib is libonnxruntime.so.1 ("": $ONNXRUNTIME_LIB, then the set-up cache).
	ONNXRuntimeLib string `mapstructure:"onnxruntime_lib" json:"onnxruntime_lib"`
}

// PipelineCompress are the settings of `bayesnas compress`.
type PipelineCompress struct {
	Method                  string  `mapstructure:"method" json:"method"` // bayes, uniform, l1
	SparsityEpochs          int     `mapstructure:"sparsity_epochs" json:"sparsity_epochs"`
	Lambda                  float64 `mapstructure:"lambda" json:"lambda"`
	Epochs                  int     `mapstructure:"epochs" json:"epochs"` // fine-tuning; >= 1: export reads the fine-tuned run
	LR                      float64 `mapstructure:"lr" json:"lr"`         // 0: the retraining's / 10
	Multiple                int     `mapstructure:"multiple" json:"multiple"`
	ProtectClassifierInputs bool    `mapstructure:"protect_classifier_inputs" json:"protect_classifier_inputs"`
	DataLimit               int     `mapstructure:"data_limit" json:"data_limit"` // 0: the retraining's
	// Distill > 0 fine-tunes against the retrained network's softened
	// outputs with this weight (train.distill), at DistillTemperature (0:
	// 4). Both left out of the stage's settings when 0, so runs made
	// before they existed stay current.
	Distill            float64 `mapstructure:"distill" json:"distill,omitempty"`
	DistillTemperature float64 `mapstructure:"distill_temperature" json:"distill_temperature,omitempty"`
	// Verify times the unpruned network and each selection on the device
	// (a fraction budget is of the measured latency) and re-selects until
	// one measures under the budget less VerifyMargin.
	Verify       bool    `mapstructure:"verify" json:"verify"`
	VerifyMargin float64 `mapstructure:"verify_margin" json:"verify_margin"`
	VerifyTries  int     `mapstructure:"verify_tries" json:"verify_tries"`
}

// PipelineExport are the settings of the export stage.
type PipelineExport struct {
	Opset      int `mapstructure:"opset" json:"opset"`
	TestImages int `mapstructure:"test_images" json:"test_images"` // compared in ONNX Runtime; 0: all
	// Latency on the device: Rounds loads of the model, each Warmup runs
	// then Repeats timed ones; the median of the rounds' medians is the
	// measured latency (rounds apart, a slow spell of a shared machine
	// moves one round, not the result).
	Rounds  int `mapstructure:"rounds" json:"rounds"`
	Warmup  int `mapstructure:"warmup" json:"warmup"`
	Repeats int `mapstructure:"repeats" json:"repeats"`
}

// PipelineDefaults are the values of the pipeline's keys that neither the
// file, the environment nor a flag sets. The search section's defaults are
// search.DefaultConfig.
func PipelineDefaults() map[string]any {
	d := map[string]any{
		"run_dir":                            "runs/pipeline",
		"retrain.params":                     map[string]any{},
		"retrain.data_limit":                 0,
		"device.profile":                     "profiles/native-1t.yaml",
		"device.plugin":                      "",
		"device.threads":                     0,
		"device.onnxruntime_lib":             "",
		"budget":                             "0.5x",
		"compress.method":                    "bayes",
		"compress.sparsity_epochs":           compress.DefaultBayesOptions().Epochs,
		"compress.lambda":                    compress.DefaultBayesOptions().Lambda,
		"compress.epochs":                    1,
		"compress.lr":                        0.0,
		"compress.multiple":                  8,
		"compress.protect_classifier_inputs": false,
		"compress.data_limit":                0,
		"compress.distill":                   0.0,
		"compress.distill_temperature":       0.0,
		"compress.verify":                    true,
		"compress.verify_margin":             0.05,
		"compress.verify_tries":              6,
		"export.opset":                       0,
		"export.test_images":                 0,
		"export.rounds":                      7,
		"export.warmup":                      10,
		"export.repeats":                     100,
	}
	for k, v := range Defaults() {
		switch {
		case k == "run_dir":
		case k == "seed" || k == "threads" || k == "backend" || strings.HasPrefix(k, "data."):
			d[k] = v
		case strings.HasPrefix(k, "train."):
			d["retrain."+strings.TrimPrefix(k, "train.")] = v
		}
	}
	return d
}

// Validate reports the first setting that cannot work, naming its key; the
// error matches ErrUsage.
func (c *PipelineConfig) Validate() error {
	return Mark(ErrUsage, c.validate())
}

func (c *PipelineConfig) validate() error {
	tc := c.retrainConfig()
	tc.Model.Arch = "search/arch.json" // written by the search stage
	if err := tc.validateAs("retrain"); err != nil {
		return err
	}
	if c.Budget == "" {
		return fmt.Errorf("config: budget is empty: give a latency budget (2.5ms, or 0.5x of the unpruned network)")
	}
	if _, err := compress.ParseBudget(c.Budget); err != nil {
		return fmt.Errorf("config: budget: %w", err)
	}
	if c.Device.Profile == "" {
		return fmt.Errorf("config: device.profile is empty: give the target device's latency profile (profiles/native-1t.yaml)")
	}
	// Read whole now, not at the compress stage after the search.
	if _, err := hwprofile.Read(c.Device.Profile); err != nil {
		return fmt.Errorf("config: device.profile: %w (measure one with bayesnas profile measure)", err)
	}
	switch c.Compress.Method {
	case "bayes", "uniform", "l1":
	default:
		return fmt.Errorf("config: compress.method = %q, want bayes, uniform or l1", c.Compress.Method)
	}
	switch {
	case c.Compress.Epochs < 1:
		return fmt.Errorf("config: compress.epochs = %d, want >= 1 (the export stage exports the fine-tuned network)", c.Compress.Epochs)
	case c.Compress.Multiple < 1:
		return fmt.Errorf("config: compress.multiple = %d, want >= 1", c.Compress.Multiple)
	case c.Compress.Verify && !(c.Compress.VerifyMargin >= 0 && c.Compress.VerifyMargin < 0.5):
		return fmt.Errorf("config: compress.verify_margin = %g, want a fraction in [0, 0.5)", c.Compress.VerifyMargin)
	case c.Compress.Verify && c.Compress.VerifyTries < 1:
		return fmt.Errorf("config: compress.verify_tries = %d, want >= 1", c.Compress.VerifyTries)
	case c.Device.Threads < 0:
		return fmt.Errorf("config: device.threads = %d, want >= 0", c.Device.Threads)
	case math.IsNaN(c.Compress.Lambda) || math.IsInf(c.Compress.Lambda, 0) || c.Compress.Lambda < 0:
		return fmt.Errorf("config: compress.lambda = %g, want a finite number >= 0", c.Compress.Lambda)
	case math.IsNaN(c.Compress.Distill) || c.Compress.Distill < 0 || c.Compress.Distill > 1:
		return fmt.Errorf("config: compress.distill = %g, want a number in [0, 1] (0: fine-tune on the labels alone)", c.Compress.Distill)
	case math.IsNaN(c.Compress.DistillTemperature) || math.IsInf(c.Compress.DistillTemperature, 0) || c.Compress.DistillTemperature < 0:
		return fmt.Errorf("config: compress.distill_temperature = %g, want a finite number >= 0 (0: 4)", c.Compress.DistillTemperature)
	case math.IsNaN(c.Compress.LR) || math.IsInf(c.Compress.LR, 0) || c.Compress.LR < 0:
		return fmt.Errorf("config: compress.lr = %g, want a finite number >= 0 (0: the retraining's / 10)", c.Compress.LR)
	case c.Compress.SparsityEpochs < 0 || c.Compress.DataLimit < 0 || c.Retrain.DataLimit < 0:
		return fmt.Errorf("config: compress.sparsity_epochs = %d, compress.data_limit = %d, retrain.data_limit = %d: want >= 0",
			c.Compress.SparsityEpochs, c.Compress.DataLimit, c.Retrain.DataLimit)
	case c.Export.Opset != 0 && (c.Export.Opset < export.DefaultOpset || c.Export.Opset > export.MaxOpset):
		return fmt.Errorf("config: export.opset = %d, want 0 (%d) or %d..%d", c.Export.Opset, export.DefaultOpset, export.DefaultOpset, export.MaxOpset)
	case c.Export.TestImages < 0:
		return fmt.Errorf("config: export.test_images = %d, want >= 0 (0: all)", c.Export.TestImages)
	case c.Export.Rounds < 1 || c.Export.Repeats < 1 || c.Export.Warmup < 0:
		return fmt.Errorf("config: export.rounds = %d, export.repeats = %d, export.warmup = %d: want >= 1, >= 1, >= 0",
			c.Export.Rounds, c.Export.Repeats, c.Export.Warmup)
	}
	s := c.searchConfig()
	s.Seed, s.Workers = c.Seed, c.Threads
	if err := s.Validate(); err != nil {
		return fmt.Errorf("config: search: %w", err)
	}
	return nil
}

// searchConfig is the search section with a latency-aware search's
// defaults: the device's profile, and the retraining's builder parameters
// (the network is priced as it will be deployed).
func (c *PipelineConfig) searchConfig() search.Config {
	s := c.Search
	s.Backend = c.Backend
	if s.Latency.On() {
		if s.Latency.Profile == "" {
			s.Latency.Profile = c.Device.Profile
		}
		if s.Latency.Params == nil {
			s.Latency.Params = c.Retrain.Params
		}
	}
	return s
}

// retrainConfig is the training run of the search stage's second half.
func (c *PipelineConfig) retrainConfig() Config {
	data := c.Data
	if c.Retrain.DataLimit > 0 {
		data.Limit = c.Retrain.DataLimit
	}
	return Config{RunDir: filepath.Join(c.RunDir, TrainDir), Seed: c.Seed, Threads: c.Threads, Backend: c.Backend, Data: data,
		Model: Model{Arch: filepath.Join(c.RunDir, SearchDir, ArchFile), Params: c.Retrain.Params},
		Train: c.Retrain.Training}
}
