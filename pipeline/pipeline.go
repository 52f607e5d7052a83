package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"bayesnas/compress"
	"bayesnas/hwprofile"
	"bayesnas/internal/runlock"
	"bayesnas/onnxrt"
	"bayesnas/report"
	"bayesnas/search"
)

// Directories of a pipeline run directory, one per stage: a contract that
// the report reads, keep it.
const (
	SearchDir   = "search"   // supernet search and the derived arch.json
	TrainDir    = "train"    // the derived network retrained from scratch
	CompressDir = "compress" // the compressed, fine-tuned run (compression.json)
	ExportDir   = "export"   // model.onnx, validation.json, latency.json
)

// Stages of the pipeline in order.
var Stages = []string{"search", "compress", "export"}

// stageDirs are the directories each stage writes: its outputs.
var stageDirs = map[string][]string{
	"search":   {SearchDir, TrainDir},
	"compress": {CompressDir},
	"export":   {ExportDir},
}

func stageIndex(name string) int { return slices.Index(Stages, name) }

// PipelineOptions are the per-invocation settings of RunPipeline.
type PipelineOptions struct {
	// Stages to run (nil: all). The stages before the first of them must be
	// done with their current settings and inputs, or RunPipeline fails
	// with ErrStale: `task search compress export` runs them one by one.
	Stages      []string
	ToolVersion string
	Progress    io.Writer
	TTY         bool
	Log         *slog.Logger

	// stepCtx lets a test interrupt one step (search, train, compress,
	// export) at an exact point.
	stepCtx func(ctx context.Context, step string) context.Context
}

// RunPipeline runs the stages of cfg over cfg.RunDir: search (supernet
// search, derivation, retraining the derived network from scratch),
// compress (to the latency budget on the device profile) and export (ONNX,
// validated in ONNX Runtime, latency measured on the device). A stage whose
// settings and inputs are unchanged and whose outputs are intact is
// skipped; one that was interrupted resumes; a changed stage runs again,
// and so do the stages after it (their inputs change). The manifest
// (pipeline.json) is written before and after every stage.
func RunPipeline(ctx context.Context, cfg PipelineConfig, opt PipelineOptions) (*Manifest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, s := range opt.Stages {
		if stageIndex(s) < 0 {
			return nil, Mark(ErrUsage, fmt.Errorf("pipeline: stage %q: want %s", s, strings.Join(Stages, ", ")))
		}
		want[s] = true
	}
	if len(want) == 0 {
		for _, s := range Stages {
			want[s] = true
		}
	}
	first, last := -1, -1
	for i, s := range Stages {
		if want[s] {
			last = i
			if first < 0 {
				first = i
			}
		}
	}
	// Each stage reads the one before: a list that skips one would run the
	// stages before the gap and then find the one after it stale.
	for _, s := range Stages[first : last+1] {
		if !want[s] {
			return nil, Mark(ErrUsage, fmt.Errorf("pipeline: --stages %s skips %s: the stages run in order (%s), each reading the one before; list every stage from %s to %s",
				strings.Join(opt.Stages, ","), s, strings.Join(Stages, ", "), Stages[first], Stages[last]))
		}
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	runDir := cfg.RunDir
	if first > 0 {
		// Nothing to continue from: say so without creating the directory.
		if _, err := os.Stat(runDir); errors.Is(err, fs.ErrNotExist) {
			return nil, Mark(ErrStale, fmt.Errorf("pipeline: %s does not exist: stage %s reads the outputs of the stages before it, starting with search; run those first", runDir, Stages[first]))
		}
	}
	lock, err := runlock.Acquire(runDir)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	man, err := ReadManifest(runDir)
	if err != nil {
		return nil, err
	}
	p := &pipelineRun{cfg: cfg, opt: opt, log: log}
	for i, name := range Stages[:last+1] {
		cfgHash, err := p.configHash(name)
		if err != nil {
			return man, err
		}
		inHash := ""
		if i > 0 {
			if inHash, _, err = hashFiles(runDir, stageDirs[Stages[i-1]]...); err != nil {
				return man, err
			}
		}
		rec := man.Stage(name)
		why, err := staleReason(runDir, rec, cfgHash, inHash)
		if err != nil {
			return man, err
		}
		if !want[name] {
			if why != "" {
				return man, Mark(ErrStale, fmt.Errorf("pipeline: stage %s in %s is needed by the stages asked for but %s: run it first (--stages %s)", name, runDir, why, name))
			}
			continue
		}
		if why == "" {
			log.Info("stage skipped: settings, inputs and outputs unchanged", "stage", name)
			continue
		}
		// The same settings and inputs as an unfinished run of the stage:
		// continue it from its checkpoints; otherwise start it clean.
		resume := rec != nil && rec.Status != StatusDone && rec.ConfigHash == cfgHash && rec.InputsHash == inHash
		if !resume {
			for _, d := range stageDirs[name] {
				if err := os.RemoveAll(filepath.Join(runDir, d)); err != nil {
					return man, fmt.Errorf("pipeline: clearing stage %s: %w", name, err)
				}
			}
		}
		log.Info("stage", "stage", name, "reason", why, "resume", resume)
		rec = &StageManifest{Name: name, Status: StatusRunning, InputsHash: inHash, ConfigHash: cfgHash,
			ToolVersion: opt.ToolVersion, Started: time.Now().UTC()}
		man.set(rec)
		if err := man.write(runDir); err != nil {
			return man, err
		}
		runErr := p.run(ctx, name, resume)
		end := time.Now().UTC()
		rec.Ended, rec.Seconds = &end, round4(end.Sub(rec.Started).Seconds())
		if rec.OutputsHash, rec.Outputs, err = hashFiles(runDir, stageDirs[name]...); err != nil {
			return man, err
		}
		rec.Status = StatusDone
		if runErr != nil {
			rec.Status, rec.Error = StatusFailed, runErr.Error()
		}
		if err := man.write(runDir); err != nil {
			return man, errors.Join(runErr, err)
		}
		if runErr != nil {
			// The report too: a CI job uploads it whatever the outcome,
			// and a missed budget is when a person looks at it.
			if path, err := p.report(runDir); err != nil {
				log.Warn("report not written", "err", err)
			} else {
				man.Report = path
			}
			return man, fmt.Errorf("stage %s: %w", name, runErr)
		}
	}
	path, err := p.report(runDir)
	if err != nil {
		return man, err
	}
	man.Report = path
	return man, nil
}

// report writes report.html and report.md into the run directory.
func (p *pipelineRun) report(runDir string) (string, error) {
	path, err := report.Write(runDir)
	if err != nil {
		return "", fmt.Errorf("pipeline: writing the report of %s: %w", runDir, err)
	}
	p.log.Info("report", "path", path)
	return path, nil
}

// staleReason says why a stage must run ("" when it need not): never run,
// unfinished, other settings, other inputs, outputs changed since.
func staleReason(runDir string, rec *StageManifest, cfgHash, inHash string) (string, error) {
	switch {
	case rec == nil:
		return "it has not run", nil
	case rec.Status != StatusDone:
		return "it did not finish (" + rec.Status + ")", nil
	case rec.ConfigHash != cfgHash:
		return "its settings changed", nil
	case rec.InputsHash != inHash:
		return "its inputs (the previous stage's outputs) changed", nil
	}
	h, _, err := hashFiles(runDir, stageDirs[rec.Name]...)
	if err != nil {
		return "", err
	}
	if h != rec.OutputsHash {
		return "its outputs changed or went missing since it ran", nil
	}
	return "", nil
}

// pipelineRun runs the stages of one RunPipeline.
type pipelineRun struct {
	cfg PipelineConfig
	opt PipelineOptions
	log *slog.Logger
}

func (p *pipelineRun) dir(d string) string { return filepath.Join(p.cfg.RunDir, d) }

func (p *pipelineRun) stepCtx(ctx context.Context, step string) context.Context {
	if p.opt.stepCtx != nil {
		return p.opt.stepCtx(ctx, step)
	}
	return ctx
}

func (p *pipelineRun) options(resume bool) Options {
	return Options{Resume: resume, Progress: p.opt.Progress, TTY: p.opt.TTY, Log: p.log}
}

// configHash hashes the settings stage name reads: the search stage the
// run settings, data, search and retraining; compress the profile (its
// file's content too: a re-measured profile prices differently), the
// budget and compression; export the device, the budget and export.
func (p *pipelineRun) configHash(name string) (string, error) {
	c := p.cfg
	var section any
	switch name {
	case "search":
		st := searchSettings{Seed: c.Seed, Threads: c.Threads, Backend: c.Backend, Data: c.Data, Search: c.Search, Retrain: c.Retrain}
		if sc := p.cfg.searchConfig(); sc.Latency.On() {
			h, err := fileHash(sc.Latency.Profile)
			if err != nil {
				return "", Mark(ErrUsage, fmt.Errorf("config: search.latency.profile: %w", err))
			}
			st.Search, st.ProfileHash = sc, h
			st.Device, st.Timing = &c.Device, &PipelineExport{Rounds: c.Export.Rounds, Warmup: c.Export.Warmup, Repeats: c.Export.Repeats}
		}
		section = st
	case "compress", "export":
		prof, err := fileHash(c.Device.Profile)
		if err != nil {
			return "", Mark(ErrUsage, fmt.Errorf("config: device.profile: %w", err))
		}
		if name == "compress" {
			// Verifying times networks on the device as the export
			// stage does: its device and timing settings are inputs too.
			var dev *PipelineDevice
			var timing *PipelineExport
			if c.Compress.Verify {
				dev, timing = &c.Device, &PipelineExport{Rounds: c.Export.Rounds, Warmup: c.Export.Warmup, Repeats: c.Export.Repeats}
			}
			section = struct {
				Profile, ProfileHash, Budget string
				Compress                     PipelineCompress
				Device                       *PipelineDevice `json:",omitempty"`
				Timing                       *PipelineExport `json:",omitempty"`
			}{c.Device.Profile, prof, c.Budget, c.Compress, dev, timing}
		} else {
			section = struct {
				Device      PipelineDevice
				ProfileHash string
				Budget      string
				Export      PipelineExport
			}{c.Device, prof, c.Budget, c.Export}
		}
	}
	return hashJSON(section)
}

// searchSettings are what the search stage reads. A latency-aware search
// also prices on the profile (its content too) and times the retrained
// network on the device.
type searchSettings struct {
	Seed        uint64
	Threads     int
	Backend     string `json:",omitempty"`
	Data        Data
	Search      any
	Retrain     Retrain
	ProfileHash string          `json:",omitempty"`
	Device      *PipelineDevice `json:",omitempty"`
	Timing      *PipelineExport `json:",omitempty"`
}

func (p *pipelineRun) run(ctx context.Context, name string, resume bool) error {
	switch name {
	case "search":
		return p.search(ctx, resume)
	case "compress":
		return p.compress(ctx, resume)
	}
	return p.export(ctx)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// search runs the supernet search into RUN/search and retrains the derived
// network from scratch into RUN/train. Resumed, it skips the half that
// finished and continues the other from its checkpoint.
func (p *pipelineRun) search(ctx context.Context, resume bool) error {
	sdir, tdir := p.dir(SearchDir), p.dir(TrainDir)
	searched := true
	for _, f := range []string{ArchFile, "decisions.json", "search_config.json", "supernet.safetensors"} {
		searched = searched && exists(filepath.Join(sdir, f))
	}
	if !resume || !searched {
		cont := resume && exists(filepath.Join(sdir, CheckpointFile))
		if !cont {
			if err := os.RemoveAll(sdir); err != nil {
				return fmt.Errorf("clearing %s: %w", sdir, err)
			}
		}
		scfg := SearchConfig{RunDir: sdir, Seed: p.cfg.Seed, Threads: p.cfg.Threads, Data: p.cfg.Data, Search: p.cfg.searchConfig()}
		if _, err := Search(p.stepCtx(ctx, "search"), scfg, p.options(cont)); err != nil {
			return err
		}
		// A new derivation: the retraining starts over.
		if err := os.RemoveAll(tdir); err != nil {
			return fmt.Errorf("clearing %s: %w", tdir, err)
		}
	}
	if !exists(filepath.Join(tdir, SummaryFile)) {
		cont := exists(filepath.Join(tdir, CheckpointFile))
		if !cont {
			if err := os.RemoveAll(tdir); err != nil {
				return fmt.Errorf("clearing %s: %w", tdir, err)
			}
		}
		if _, err := Train(p.stepCtx(ctx, "train"), p.cfg.retrainConfig(), p.options(cont)); err != nil {
			return err
		}
	}
	return p.measureSearched(ctx)
}

// measureSearched times the retrained network of a latency-aware search
// on the device and adds it to the search's latency report beside the
// search's prediction and target (once: a resumed stage keeps it).
func (p *pipelineRun) measureSearched(ctx context.Context) error {
	path := filepath.Join(p.dir(SearchDir), search.LatencyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // not latency-aware
	}
	if err != nil {
		return err
	}
	var rep search.LatencyReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if rep.MeasuredMs > 0 {
		return nil
	}
	tm, device, err := timeRun(ctx, rep.Profile, p.deviceOptions(), p.dir(TrainDir), rep.PredictedMs)
	if err != nil {
		return fmt.Errorf("timing the retrained network of the search on its device: %w", err)
	}
	rep.MeasuredMs, rep.MeasuredP90Ms, rep.Device, rep.Statistic = round6(tm.MedianMs), round6(tm.P90Ms), device, hwprofile.StatisticQuietest
	if rep.TargetMs > 0 {
		met := rep.MeasuredMs <= rep.TargetMs
		rep.MeasuredMet = &met
	}
	p.log.Info("searched network", "predicted_ms", round4(rep.PredictedMs), "measured_ms", round4(rep.MeasuredMs), "target_ms", rep.TargetMs)
	return writeJSON(path, rep)
}

// compress prunes RUN/train to the budget into RUN/compress and fine-tunes
// it there; resumed, the fine-tuning continues from its checkpoint.
func (p *pipelineRun) compress(ctx context.Context, resume bool) error {
	out := p.dir(CompressDir)
	if resume && exists(filepath.Join(out, CompressionFile)) {
		return nil
	}
	cont := resume && exists(filepath.Join(out, CheckpointFile))
	if !cont {
		if err := os.RemoveAll(out); err != nil {
			return fmt.Errorf("clearing %s: %w", out, err)
		}
	}
	c := p.cfg.Compress
	budget, err := compress.ParseBudget(p.cfg.Budget)
	if err != nil {
		return Mark(ErrUsage, err)
	}
	opt := CompressOptions{Run: p.dir(TrainDir), Out: out, Profile: p.cfg.Device.Profile, Budget: budget,
		Method: c.Method, Multiple: c.Multiple, ProtectClassifierInputs: c.ProtectClassifierInputs,
		Epochs: c.Epochs, LR: c.LR, DataLimit: c.DataLimit, Seed: p.cfg.Seed, Train: p.options(cont),
		Distill: c.Distill, DistillTemperature: c.DistillTemperature}
	opt.Bayes = compress.DefaultBayesOptions()
	opt.Bayes.Epochs, opt.Bayes.Lambda, opt.Bayes.LR = c.SparsityEpochs, c.Lambda, 0
	if c.Verify {
		d := p.deviceOptions()
		opt.Verify, opt.VerifyMargin, opt.VerifyTries = &d, c.VerifyMargin, c.VerifyTries
	}
	rep, err := Compress(p.stepCtx(ctx, "compress"), opt)
	if err != nil {
		return err
	}
	p.log.Info("compressed", "params_before", rep.Before.Params, "params_after", rep.After.Params,
		"predicted_ms_before", round4(rep.Before.PredictedMs), "predicted_ms_after", round4(rep.After.PredictedMs), "budget_ms", round4(rep.BudgetMs))
	return nil
}

// deviceOptions are the device's settings: the profile's runtime or the
// configured plug-in, timed as the export section says.
func (p *pipelineRun) deviceOptions() DeviceOptions {
	d, e := p.cfg.Device, p.cfg.Export
	return DeviceOptions{Plugin: d.Plugin, Threads: d.Threads, Library: d.ONNXRuntimeLib,
		Rounds: e.Rounds, Warmup: e.Warmup, Repeats: e.Repeats}
}

// export writes RUN/export/model.onnx from RUN/compress, validates it in
// ONNX Runtime (validation.json) and measures its latency on the device
// (latency.json): a disagreement is ErrValidation, a missed budget ErrBudget.
func (p *pipelineRun) export(ctx context.Context) error {
	out := p.dir(ExportDir)
	if err := os.RemoveAll(out); err != nil {
		return fmt.Errorf("clearing %s: %w", out, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	ctx = p.stepCtx(ctx, "export")
	model := filepath.Join(out, ModelFile)
	_, rep, err := Export(p.dir(CompressDir), ExportOptions{Out: model, ReportDir: out, Opset: p.cfg.Export.Opset,
		ToolVersion: p.opt.ToolVersion, Validate: true, TestImages: p.cfg.Export.TestImages,
		Validation: onnxrt.ValidateOptions{Library: p.cfg.Device.ONNXRuntimeLib, Threads: p.cfg.Threads, Backend: p.cfg.Backend,
			Context: ctx}})
	if err != nil {
		if errors.Is(err, onnxrt.ErrTolerance) {
			return Mark(ErrValidation, err)
		}
		return err
	}
	if rep != nil {
		p.log.Info("validated", "passed", rep.Passed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	lat, err := MeasureLatency(ctx, LatencyOptions{Model: model, Run: p.dir(CompressDir), Profile: p.cfg.Device.Profile,
		Device: p.deviceOptions(), Unpruned: p.dir(TrainDir)})
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(out, hwprofile.LatencyFile), lat); err != nil {
		return err
	}
	p.log.Info("latency", "device", lat.Device, "measured_ms", lat.MeasuredMs, "p90_ms", lat.P90Ms,
		"predicted_ms", lat.PredictedMs, "budget_ms", lat.BudgetMs, "verdict", lat.Verdict)
	if lat.Verdict != "pass" {
		return Mark(ErrBudget, fmt.Errorf("measured latency %.4f ms (p90 %.4f ms) on %s misses the budget %.4f ms (predicted %.4f ms); see %s",
			lat.MeasuredMs, lat.P90Ms, lat.Device, lat.BudgetMs, lat.PredictedMs, filepath.Join(out, hwprofile.LatencyFile)))
	}
	return nil
}
