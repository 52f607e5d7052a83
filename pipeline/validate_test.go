package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/export"
	"bayesnas/internal/testenv"
	"bayesnas/onnxrt"
)

// Validating the model of another network against a run (its input and
// output shapes the same) is refused at once, naming both hashes, and a
// refused or failing validation never replaces the run's passing
// validation.json: a failing verdict goes to validation.failed.json beside
// it, and the next pass removes that.
func TestValidateOtherNetworkRefused(t *testing.T) {
	if _, err := onnxrt.LibraryPath(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	train := func(edit func(*Config)) string {
		dir := t.TempDir()
		cfg := tinyConfig(dir)
		cfg.Train.Epochs = 1
		edit(&cfg)
		if _, err := Train(context.Background(), cfg, Options{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Export(dir, ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	run := train(func(*Config) {})
	otherArch := train(func(c *Config) { c.Model.Params["alpha"] = 8 })
	otherWeights := train(func(c *Config) { c.Seed = 4 })

	opt := ExportOptions{TestImages: 64, Validate: true}
	opt.Validation.Repeats, opt.Validation.Threads, opt.Validation.SkipTiming = 2, 1, true
	if _, rep, err := Export(run, opt); err != nil || !rep.Passed {
		t.Fatalf("validating the run's own model: %v", err)
	}
	report := filepath.Join(run, onnxrt.ReportFile)
	failed := filepath.Join(run, "validation.failed.json")
	passing, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(what string) {
		t.Helper()
		if b, err := os.ReadFile(report); err != nil || !bytes.Equal(b, passing) {
			t.Errorf("%s: the run's passing %s was changed or removed (%v)", what, onnxrt.ReportFile, err)
		}
	}

	for _, c := range []struct {
		name, dir, key, file string
	}{
		{"another architecture", otherArch, export.MetaHashArch, ArchFile},
		{"other weights", otherWeights, export.MetaHashWeights, WeightsFile},
	} {
		model := filepath.Join(c.dir, ModelFile)
		m, err := export.Read(model)
		if err != nil {
			t.Fatal(err)
		}
		theirs, _ := m.MetadataValue(c.key)
		ours, err := fileHash(filepath.Join(run, c.file))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := ValidateModel(model, run, opt)
		if rep != nil || !errors.Is(err, ErrUsage) || !errors.Is(err, ErrUsage) ||
			!strings.Contains(err.Error(), c.key+" is "+theirs) || !strings.Contains(err.Error(), filepath.Join(run, c.file)+" has "+ours) {
			t.Errorf("%s: report %v, err = %v, want the other network refused naming %s %s and %s", c.name, rep, err, c.key, theirs, ours)
		}
		unchanged(c.name)
		if _, err := os.Stat(failed); err == nil {
			t.Errorf("%s: a refused validation wrote %s", c.name, failed)
		}
	}

	// The same network exported from its files (content hashes, not file
	// hashes) is the run's.
	files := filepath.Join(t.TempDir(), "files.onnx")
	if _, _, err := ExportFiles(filepath.Join(run, ArchFile), filepath.Join(run, WeightsFile), nil, nil, ExportOptions{Out: files}); err != nil {
		t.Fatal(err)
	}
	if rep, err := ValidateModel(files, run, opt); err != nil || !rep.Passed {
		t.Fatalf("the run's network exported from its files: %v", err)
	}
	if passing, err = os.ReadFile(report); err != nil {
		t.Fatal(err)
	}

	// A failing verdict on the run's own network (a tolerance it cannot
	// meet) keeps the passing report and writes its own beside it.
	strict := opt
	strict.Validation.RTol, strict.Validation.ATol = 1e-15, 1e-30
	rep, err := ValidateModel(filepath.Join(run, ModelFile), run, strict)
	if rep == nil || rep.Passed || !errors.Is(err, onnxrt.ErrTolerance) || !strings.Contains(err.Error(), "report: "+failed) || !strings.Contains(err.Error(), report+", which passed") {
		t.Fatalf("strict validation: report %v, err = %v, want a failure reported in %s", rep, err, failed)
	}
	unchanged("a failing verdict")
	var got onnxrt.Report
	if b, err := os.ReadFile(failed); err != nil || json.Unmarshal(b, &got) != nil || got.Passed {
		t.Errorf("%s: %v, passed %v; want the failing report", failed, err, got.Passed)
	}
	if _, err := ValidateModel(filepath.Join(run, ModelFile), run, opt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(failed); err == nil {
		t.Errorf("a passing validation left the superseded %s", failed)
	}
	// Without a passing report, a failing verdict is the run's report.
	if err := os.Remove(report); err != nil {
		t.Fatal(err)
	}
	if _, err := ValidateModel(filepath.Join(run, ModelFile), run, strict); !errors.Is(err, onnxrt.ErrTolerance) {
		t.Fatalf("strict validation: %v", err)
	}
	if b, err := os.ReadFile(report); err != nil || json.Unmarshal(b, &got) != nil || got.Passed {
		t.Errorf("%s: %v, passed %v; want the failing report", report, err, got.Passed)
	}
}
