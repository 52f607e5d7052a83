package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"bayesnas/compress"
	"bayesnas/hwprofile"
	"bayesnas/onnxrt"
	"bayesnas/search"
)

// Stage directories of a pipeline run directory.
const (
	SearchDir   = "search"
	TrainDir    = "train"
	CompressDir = "compress"
	ExportDir   = "export"
	// CompareFile lists baselines run beside the pipeline (optional).
	CompareFile = "compare.json"
)

// Files read inside the stage directories. They repeat the names the
// pipeline package defines rather than importing it: the pipeline writes
// the report at the end of a run, so it imports this package, not the other
// way round. The tests write the fixtures with the pipeline's own types, so
// a renamed file or field fails them.
const (
	searchLogFile   = "search_log.jsonl"
	decisionsFile   = "decisions.json"
	metricsFile     = "metrics.jsonl"
	summaryFile     = "summary.json"
	compressionFile = "compression.json"
	modelFile       = "model.onnx"
)

// Baseline is one entry of compare.json: another network measured on the
// same device, for the accuracy-latency plot.
type Baseline struct {
	Name      string  `json:"name"`
	Accuracy  float64 `json:"accuracy"` // fraction, as the run's accuracies
	LatencyMs float64 `json:"latency_ms"`
}

// trainSummary holds the fields of pipeline.Summary (summary.json) the
// report shows.
type trainSummary struct {
	TestAcc      float64 `json:"test_acc"`
	TestLoss     float64 `json:"test_loss"`
	ValAcc       float64 `json:"val_acc"`
	Params       int64   `json:"params"`
	MACs         int64   `json:"macs"`
	Epochs       int     `json:"epochs"`
	TrainSeconds float64 `json:"train_seconds"`
}

// epochMetrics holds the fields of pipeline.EpochMetrics (metrics.jsonl).
type epochMetrics struct {
	Epoch    int     `json:"epoch"`
	TrainAcc float64 `json:"train_acc"`
	ValAcc   float64 `json:"val_acc"`
}

// networkCost mirrors pipeline.NetworkCost.
type networkCost struct {
	Params      int64   `json:"params"`
	MACs        int64   `json:"macs"`
	PredictedMs float64 `json:"predicted_ms"`
}

// compression holds the fields of pipeline.CompressionReport
// (compression.json) the report shows.
type compression struct {
	Method   string               `json:"method"`
	Budget   string               `json:"budget"`
	BudgetMs float64              `json:"budget_ms"`
	Profile  string               `json:"profile"`
	Device   string               `json:"device"`
	Before   networkCost          `json:"before"`
	After    networkCost          `json:"after"`
	Layers   []compress.NodeWidth `json:"layers"`
	FineTune *trainSummary        `json:"fine_tune"`
	Verify   *verification        `json:"verification"`
}

// verification holds the fields of pipeline.Verification: the networks
// compress timed on the device.
type verification struct {
	BaseMeasuredMs float64 `json:"base_measured_ms"`
	GoalMs         float64 `json:"goal_ms"`
	Tries          []struct {
		PredictedMs float64 `json:"predicted_ms"`
		MeasuredMs  float64 `json:"measured_ms"`
		MetGoal     bool    `json:"met_goal"`
	} `json:"tries"`
	Chosen int `json:"chosen"`
}

// inputs is everything the report read; a nil field is an input that is
// not there, and missing says why, one line per absent input.
type inputs struct {
	searchLog   []search.IterationLog
	searchLat   *search.LatencyReport // a latency-aware search's
	proxyCells  *search.Derivation
	treeCells   *search.TreeDerivation
	train       *trainSummary
	trainCurve  []epochMetrics
	compression *compression
	compressed  *trainSummary // the fine-tuned run's summary.json
	validation  *onnxrt.Report
	latency     *hwprofile.LatencyReport
	modelBytes  int64 // size of model.onnx; -1 when absent
	baselines   []Baseline
	missing     map[string][]string // by section
}

func (in *inputs) miss(section, format string, args ...any) {
	in.missing[section] = append(in.missing[section], fmt.Sprintf(format, args...))
}

// load reads what the run directory holds. An absent file or stage is
// recorded in missing (a pipeline may skip stages); a file that is there
// but cannot be parsed is an error naming it.
func load(run string) (*inputs, error) {
	in := &inputs{missing: map[string][]string{}, modelBytes: -1}
	if fi, err := os.Stat(run); err != nil {
		return nil, fmt.Errorf("report: run directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("report: run directory %s is not a directory", run)
	}
	if err := in.loadSearch(filepath.Join(run, SearchDir)); err != nil {
		return nil, err
	}
	if err := in.loadTrain(filepath.Join(run, TrainDir)); err != nil {
		return nil, err
	}
	if err := in.loadCompress(filepath.Join(run, CompressDir)); err != nil {
		return nil, err
	}
	if err := in.loadExport(filepath.Join(run, ExportDir)); err != nil {
		return nil, err
	}
	ok, err := readJSON(filepath.Join(run, CompareFile), &in.baselines)
	if err != nil {
		return nil, err
	}
	if ok {
		for i, b := range in.baselines {
			if b.Name == "" {
				return nil, fmt.Errorf("report: reading %s: entry %d has no name", filepath.Join(run, CompareFile), i)
			}
		}
	}
	return in, nil
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

func (in *inputs) loadSearch(dir string) error {
	const sec = "search"
	if !dirExists(dir) {
		in.miss(sec, "No search stage in this run (%s is missing).", dir)
		return nil
	}
	p := filepath.Join(dir, searchLogFile)
	ok, err := readJSONL(p, func(b []byte) error {
		var it search.IterationLog
		if err := json.Unmarshal(b, &it); err != nil {
			return err
		}
		in.searchLog = append(in.searchLog, it)
		return nil
	})
	if err != nil {
		return err
	}
	if !ok || len(in.searchLog) == 0 {
		in.miss(sec, "No search log (%s): the search curves are omitted.", p)
		in.searchLog = nil
	}
	var lat search.LatencyReport
	if ok, err := readJSON(filepath.Join(dir, search.LatencyFile), &lat); err != nil {
		return err
	} else if ok {
		in.searchLat = &lat
	}
	p = filepath.Join(dir, decisionsFile)
	raw, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		in.miss(sec, "No decision table (%s): the derived cell is not drawn.", p)
		return nil
	case err != nil:
		return fmt.Errorf("report: %w", err)
	}
	// A tree search's decisions name its cells; a proxy search's have a
	// normal and a reduction cell.
	var probe struct {
		Names json.RawMessage `json:"names"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return fmt.Errorf("report: reading %s: %w", p, err)
	}
	if probe.Names != nil {
		in.treeCells = &search.TreeDerivation{}
		err = json.Unmarshal(raw, in.treeCells)
	} else {
		in.proxyCells = &search.Derivation{}
		err = json.Unmarshal(raw, in.proxyCells)
	}
	if err != nil {
		return fmt.Errorf("report: reading %s: %w", p, err)
	}
	if in.treeCells != nil && len(in.treeCells.Names) != len(in.treeCells.Cells) {
		return fmt.Errorf("report: reading %s: %d cell names for %d cells", p, len(in.treeCells.Names), len(in.treeCells.Cells))
	}
	return nil
}

func (in *inputs) loadTrain(dir string) error {
	const sec = "train"
	if !dirExists(dir) {
		in.miss(sec, "No training stage in this run (%s is missing).", dir)
		return nil
	}
	p := filepath.Join(dir, summaryFile)
	var s trainSummary
	ok, err := readJSON(p, &s)
	if err != nil {
		return err
	}
	if ok {
		in.train = &s
	} else {
		in.miss(sec, "Training has not finished (%s is missing).", p)
	}
	p = filepath.Join(dir, metricsFile)
	ok, err = readJSONL(p, func(b []byte) error {
		var m epochMetrics
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		in.trainCurve = append(in.trainCurve, m)
		return nil
	})
	if err != nil {
		return err
	}
	if !ok || len(in.trainCurve) == 0 {
		in.miss(sec, "No training metrics (%s): the training curve is omitted.", p)
		in.trainCurve = nil
	}
	return nil
}

func (in *inputs) loadCompress(dir string) error {
	const sec = "compress"
	if !dirExists(dir) {
		in.miss(sec, "No compression stage in this run (%s is missing).", dir)
		return nil
	}
	p := filepath.Join(dir, compressionFile)
	var c compression
	ok, err := readJSON(p, &c)
	if err != nil {
		return err
	}
	if !ok {
		in.miss(sec, "Compression has not finished (%s is missing).", p)
		return nil
	}
	in.compression = &c
	// The fine-tuned network is a training run in the same directory; its
	// summary is also in compression.json, but only when fine-tuning ran
	// in the same invocation, so prefer the file.
	var s trainSummary
	if ok, err = readJSON(filepath.Join(dir, summaryFile), &s); err != nil {
		return err
	}
	switch {
	case ok:
		in.compressed = &s
	case c.FineTune != nil:
		in.compressed = c.FineTune
	}
	return nil
}

func (in *inputs) loadExport(dir string) error {
	const sec = "export"
	if !dirExists(dir) {
		in.miss(sec, "No export stage in this run (%s is missing).", dir)
		return nil
	}
	if fi, err := os.Stat(filepath.Join(dir, modelFile)); err == nil {
		in.modelBytes = fi.Size()
	} else {
		in.miss(sec, "No exported model (%s).", filepath.Join(dir, modelFile))
	}
	p := filepath.Join(dir, onnxrt.ReportFile)
	var v onnxrt.Report
	ok, err := readJSON(p, &v)
	if err != nil {
		return err
	}
	if ok {
		in.validation = &v
	} else {
		in.miss(sec, "No validation in ONNX Runtime (%s is missing).", p)
	}
	p = filepath.Join(dir, hwprofile.LatencyFile)
	var l hwprofile.LatencyReport
	if ok, err = readJSON(p, &l); err != nil {
		return err
	}
	if ok {
		in.latency = &l
	} else {
		in.miss(sec, "No latency measurement on the device (%s is missing).", p)
	}
	return nil
}

// readJSON decodes path into v; found is false when the file does not exist.
func readJSON(path string, v any) (found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("report: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("report: reading %s: %w", path, err)
	}
	return true, nil
}

// readJSONL calls line for every non-empty line of path; found is false
// when the file does not exist.
func readJSONL(path string, line func([]byte) error) (found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("report: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, len(b)+1)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if err := line(sc.Bytes()); err != nil {
			return true, fmt.Errorf("report: reading %s, line %d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return true, fmt.Errorf("report: reading %s: %w", path, err)
	}
	return true, nil
}
