package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"bayesnas/dataset"
	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/onnxrt"
)

// ModelFile is the exported ONNX model in a run directory.
const ModelFile = "model.onnx"

// ExportOptions configure the export stage.
type ExportOptions struct {
	Out         string // default <run>/model.onnx
	Opset       int
	Softmax     bool
	ToolVersion string
	Validate    bool
	Validation  onnxrt.ValidateOptions
	// TestImages is how many test images the validation compares (0: all).
	TestImages int
	// ReportDir is where validation.json goes (default: the run directory):
	// the pipeline's export stage writes into its own directory, never into
	// the run it exports, whose hash the manifest records.
	ReportDir string
}

// reportDir is the directory validation.json goes to.
func (o ExportOptions) reportDir(run string) string {
	if o.ReportDir != "" {
		return o.ReportDir
	}
	return run
}

// trainedRun is what export and validate read from a finished training run.
type trainedRun struct {
	cfg     Config
	sum     Summary
	g       *models.Graph
	params  []*nn.Param
	hashes  map[string]string
	rawConf []byte
}

// checkRunDir says that dir is not a training run, as loadTrainedRun would,
// before anything (a lock) is written into it.
func checkRunDir(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err != nil {
		return fmt.Errorf("run directory %s: %w (is it a finished `bayesnas train` run?)", dir, err)
	}
	return nil
}

func loadTrainedRun(dir string) (*trainedRun, error) {
	r := &trainedRun{hashes: map[string]string{}}
	var err error
	if r.rawConf, err = os.ReadFile(filepath.Join(dir, ConfigFile)); err != nil {
		return nil, fmt.Errorf("run directory %s: %w (is it a finished `bayesnas train` run?)", dir, err)
	}
	if err := json.Unmarshal(r.rawConf, &r.cfg); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		return nil, fmt.Errorf("run directory %s has no %s: training has not finished (continue it with --resume)", dir, SummaryFile)
	}
	if err := json.Unmarshal(b, &r.sum); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, SummaryFile), err)
	}
	if len(r.sum.InputMean) == 0 || len(r.sum.InputMean) != len(r.sum.InputStd) {
		return nil, fmt.Errorf("reading %s: no input normalisation recorded (input_mean/input_std); retrain with this version", filepath.Join(dir, SummaryFile))
	}
	if r.g, r.params, err = loadArchWeights(filepath.Join(dir, ArchFile), filepath.Join(dir, WeightsFile)); err != nil {
		return nil, err
	}
	for key, f := range map[string]string{"arch": ArchFile, "weights": WeightsFile, "config": ConfigFile} {
		h, err := fileHash(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		r.hashes[key] = h
	}
	return r, nil
}

// loadArchWeights reads an architecture JSON and the weights that go with it.
func loadArchWeights(archPath, weightsPath string) (*models.Graph, []*nn.Param, error) {
	g, err := models.ReadGraph(archPath)
	if err != nil {
		return nil, nil, err
	}
	specs, err := g.ParamSpecs()
	if err != nil {
		return nil, nil, err
	}
	if err := models.CheckMemory(g, 1); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", archPath, err)
	}
	params := make([]*nn.Param, len(specs))
	for i, s := range specs {
		params[i] = nn.NewParam(s.Name, s.Kind, s.Shape...)
	}
	if err := models.LoadWeights(weightsPath, params); err != nil {
		return nil, nil, err
	}
	return g, params, nil
}

// ExportFiles exports an architecture JSON with its weights outside a run
// directory. mean/std are the input normalisation to record (both empty:
// pixels scaled to [0,1]); validation, when asked, uses random inputs only
// (there are no test images) and writes its report beside the model.
func ExportFiles(archPath, weightsPath string, mean, std []float32, opt ExportOptions) (string, *onnxrt.Report, error) {
	if opt.Out == "" {
		return "", nil, fmt.Errorf("export: give --out when exporting --arch/--weights")
	}
	if len(mean) != len(std) {
		return "", nil, fmt.Errorf("export: %d mean values but %d std values", len(mean), len(std))
	}
	g, params, err := loadArchWeights(archPath, weightsPath)
	if err != nil {
		return "", nil, err
	}
	err = export.Write(opt.Out, g, params, export.Options{
		Opset: opt.Opset, Softmax: opt.Softmax, ToolVersion: opt.ToolVersion, Mean: mean, Std: std,
	})
	if err != nil || !opt.Validate {
		return opt.Out, nil, err
	}
	rep, verr := onnxrt.Validate(opt.Out, g, params, nil, nil, opt.Validation)
	if rep != nil {
		verr = writeValidation(filepath.Dir(opt.Out), rep, verr)
	}
	return opt.Out, rep, verr
}

// FailedReportFile is where a failing validation's report goes when the
// directory's validation.json holds a passing one.
const FailedReportFile = "validation.failed.json"

// writeValidation writes the report of a validation that reached its
// verdict (verr: Validate's error with it) into dir and returns the error
// to hand on: a failure to write, else verr, saying where a failing report
// went. A passing report is
// validation.json (and an older validation.failed.json goes); a failing one
// is validation.json too, unless that holds a passing report: a failure
// (another tolerance, another model file or ONNX Runtime) must not erase the
// record that the run's model passed, so it goes to validation.failed.json
// and the error says where. Validations refused or stopped before their
// verdict have no report and write nothing.
func writeValidation(dir string, rep *onnxrt.Report, verr error) error {
	path := filepath.Join(dir, onnxrt.ReportFile)
	failed := filepath.Join(dir, FailedReportFile)
	if rep.Passed {
		if err := rep.WriteJSON(path); err != nil {
			return err
		}
		if err := os.Remove(failed); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the superseded %s: %w", failed, err)
		}
		return verr
	}
	if verr == nil {
		verr = fmt.Errorf("validating %s: %w", rep.Model, onnxrt.ErrTolerance)
	}
	var old onnxrt.Report
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &old) == nil && old.Passed {
		if err := rep.WriteJSON(failed); err != nil {
			return err
		}
		return fmt.Errorf("%w (report: %s; %s, which passed on %s, is kept)", verr, failed, path, old.GeneratedAt.Format(time.RFC3339))
	}
	if err := rep.WriteJSON(path); err != nil {
		return err
	}
	return verr
}

// ErrOtherNetwork is the error of a validation refused because the model's
// content hashes say it was exported from another network than the run's.
var ErrOtherNetwork = errors.New("the model was exported from another network")

// checkSameNetwork refuses, before anything runs, a model whose metadata
// names another architecture or other weights than the run's: validated, it
// would only disagree (its input and output shapes may well match). Its
// hash.arch and hash.weights are the run's file hashes (a run's export) or
// the content hashes of its graph and parameters (export --arch); a model
// without them (not exported by bayesnas) is not refused here.
func checkSameNetwork(modelPath string, r *trainedRun, dir string) error {
	m, err := export.Read(modelPath)
	if err != nil {
		return fmt.Errorf("validating: %w", err)
	}
	canon, err := r.g.MarshalJSON()
	if err != nil {
		return err
	}
	byName := make(map[string]*nn.Param, len(r.params))
	for _, p := range r.params {
		byName[p.Name] = p
	}
	sum := sha256.Sum256(canon)
	checks := []struct {
		key, file, fileHash, contentHash string
	}{
		{export.MetaHashArch, ArchFile, r.hashes["arch"], "sha256:" + hex.EncodeToString(sum[:])},
		{export.MetaHashWeights, WeightsFile, r.hashes["weights"], export.WeightsHash(byName)},
	}
	for _, c := range checks {
		got, ok := m.MetadataValue(c.key)
		if !ok || got == c.fileHash || got == c.contentHash {
			continue
		}
		want := c.fileHash
		if strings.HasPrefix(got, "sha256:") {
			want = c.contentHash
		}
		return Mark(ErrUsage, fmt.Errorf("validating %s against run %s: %w: the model's %s is %s, the run's %s has %s (validate it against the run it was exported from)",
			modelPath, dir, ErrOtherNetwork, c.key, got, filepath.Join(dir, c.file), want))
	}
	return nil
}

func fileHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Export writes the ONNX model of a finished training run and, when asked,
// validates it in ONNX Runtime against our engine on the run's test images.
// It returns the model path and the validation report (nil without validation).
func Export(dir string, opt ExportOptions) (string, *onnxrt.Report, error) {
	out := opt.Out
	if out == "" {
		out = filepath.Join(dir, ModelFile)
	}
	// Not a run: said before the lock would create the directory.
	if err := checkRunDir(dir); err != nil {
		return "", nil, err
	}
	// The run directory written (model and report) is locked; a model
	// written elsewhere alone (--out) is a plain file.
	if rd := opt.reportDir(dir); opt.Validate || filepath.Clean(filepath.Dir(out)) == filepath.Clean(rd) {
		release, err := lockRun(rd, false)
		if err != nil {
			return "", nil, err
		}
		defer release()
	}
	r, err := loadTrainedRun(dir)
	if err != nil {
		return "", nil, err
	}
	if opt.Validate {
		// Before the model is written: a validation that cannot run
		// leaves the run's files as they were.
		if err := onnxrt.Ready(opt.Validation.Library); err != nil {
			return "", nil, fmt.Errorf("validating %s: %w", out, err)
		}
	}
	err = export.Write(out, r.g, r.params, export.Options{
		Opset: opt.Opset, Softmax: opt.Softmax, ToolVersion: opt.ToolVersion,
		Mean: r.sum.InputMean, Std: r.sum.InputStd, Classes: r.sum.Classes,
		Config: r.rawConf, Hashes: r.hashes,
	})
	if err != nil {
		return "", nil, err
	}
	if !opt.Validate {
		return out, nil, nil
	}
	rep, err := validateRun(out, r, dir, opt)
	return out, rep, err
}

// ValidateModel checks an ONNX model against the run it was exported from.
func ValidateModel(modelPath, dir string, opt ExportOptions) (*onnxrt.Report, error) {
	if err := checkRunDir(dir); err != nil {
		return nil, err
	}
	release, err := lockRun(opt.reportDir(dir), false)
	if err != nil {
		return nil, err
	}
	defer release()
	r, err := loadTrainedRun(dir)
	if err != nil {
		return nil, err
	}
	return validateRun(modelPath, r, dir, opt)
}

func validateRun(modelPath string, r *trainedRun, dir string, opt ExportOptions) (*onnxrt.Report, error) {
	if err := checkSameNetwork(modelPath, r, dir); err != nil {
		return nil, err
	}
	_, test, err := dataset.Load(r.cfg.Data.Name, r.cfg.Data.Dir)
	if err != nil {
		return nil, err
	}
	n := test.N
	if opt.TestImages > 0 && opt.TestImages < n {
		n = opt.TestImages
	}
	b, err := dataset.NewEvalBatcher(test, test.Indices()[:n], n, dataset.Normalize{Mean: r.sum.InputMean, Std: r.sum.InputStd})
	if err != nil {
		return nil, fmt.Errorf("test data: %w", err)
	}
	images := make([]float32, n*test.C*test.H*test.W)
	labels := make([]int32, n)
	b.StartEpoch(0)
	if got, ok := b.Next(images, labels); !ok || got != n {
		return nil, fmt.Errorf("test data: read %d of %d images", got, n)
	}
	rep, verr := onnxrt.Validate(modelPath, r.g, r.params, images, labels, opt.Validation)
	if rep != nil {
		verr = writeValidation(opt.reportDir(dir), rep, verr)
	}
	return rep, verr
}
