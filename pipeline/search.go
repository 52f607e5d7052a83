package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"bayesnas/hwprofile"
	"bayesnas/internal/atomicfile"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/search"
)

// SearchLogFile is the search log in a run directory (one JSON line per iteration).
const SearchLogFile = "search_log.jsonl"

// SearchConfig is the resolved configuration of `bayesnas search`.
type SearchConfig struct {
	RunDir  string        `json:"run_dir"`
	Seed    uint64        `json:"seed"`
	Threads int           `json:"threads"`
	Backend string        `json:"backend,omitempty"`
	Data    Data          `json:"data"`
	Search  search.Config `json:"search"`
}

// Search runs BayesNAS (proxy cells or PyramidNet tree cells) and writes the run directory:
// config.json, split.json, search_log.jsonl, checkpoint.safetensors (after
// every epoch and iteration, and on Ctrl-C), arch.json (the derived network,
// trainable with `bayesnas train --arch`), decisions.json, the supernet and
// its weights. With opt.Resume it continues the search in the directory,
// which must have been started with the same configuration, and ends as an
// uninterrupted search would; without, a directory that holds a search is
// an error.
func Search(ctx context.Context, cfg SearchConfig, opt Options) (*search.Result, error) {
	if cfg.RunDir == "" {
		return nil, fmt.Errorf("config: run_dir is empty")
	}
	cfg.Search.Seed = cfg.Seed
	cfg.Search.Workers = cfg.Threads
	cfg.Search.Backend = cfg.Backend
	if err := cfg.Search.Validate(); err != nil {
		return nil, err
	}
	lat, err := openSearchLatency(&cfg.Search)
	if err != nil {
		return nil, err
	}
	dir := cfg.RunDir
	release, err := lockRun(dir, opt.locked)
	if err != nil {
		return nil, err
	}
	defer release()
	logPath := filepath.Join(dir, SearchLogFile)
	ckptPath := filepath.Join(dir, CheckpointFile)
	if opt.Resume {
		cfgPath := filepath.Join(dir, ConfigFile)
		saved, err := readSearchConfig(cfgPath)
		if err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if err := checkResumeConfig(cfgPath, saved, cfg); err != nil {
			return nil, err
		}
		// A kill during a checkpoint write leaves its temporary file.
		if err := atomicfile.RemoveStale(ckptPath); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if _, err := os.Stat(ckptPath); err != nil {
			return nil, fmt.Errorf("resume: %s holds no search checkpoint: %w", dir, err)
		}
	} else {
		for _, f := range []string{logPath, ckptPath} {
			if _, err := os.Stat(f); err == nil {
				return nil, Mark(ErrUsage, fmt.Errorf("%s already holds a search (%s): use --resume to continue it, or choose another run directory", dir, filepath.Base(f)))
			}
		}
	}
	if err := writeJSON(filepath.Join(dir, ConfigFile), cfg); err != nil {
		return nil, err
	}
	d, err := prepareData(dir, cfg.Data, cfg.Seed, cfg.Seed, cfg.Search.Batch, cfg.Search.Batch)
	if err != nil {
		return nil, err
	}
	key, in, classes := "search.space", cfg.Search.Space.Input, cfg.Search.Space.Classes
	if cfg.Search.Kind == search.KindTree {
		key, in, classes = "search.tree", cfg.Search.Tree.Input, cfg.Search.Tree.Classes
	}
	if in != [3]int{d.train.C, d.train.H, d.train.W} || classes != d.train.Classes {
		return nil, fmt.Errorf("config: %s input %v with %d classes does not match the data (%d x %d x %d, %d classes)",
			key, in, classes, d.train.C, d.train.H, d.train.W, d.train.Classes)
	}
	if opt.Log != nil {
		opt.Log.Info("data", "name", d.train.Name, "train", d.trainCount, "val", len(d.split.Val), "split_hash", d.split.Hash)
		if opt.Resume {
			opt.Log.Info("resuming", "checkpoint", ckptPath)
		}
	}
	logw := &lazyFile{path: logPath}
	defer logw.Close()
	var val search.Batches
	if d.valB != nil {
		val = d.valB
	}
	prog := newProgress(opt.Progress, opt.TTY)
	res, err := search.RunWith(ctx, cfg.Search, d.trainB, val, search.RunOptions{
		Log: logw, Checkpoint: ckptPath, Resume: opt.Resume, Latency: lat,
		Progress: func(p search.Progress) {
			prog.update(progressStep{Phase: p.Phase, I: p.I, N: p.N, Batch: p.Batch, Batches: p.Batches,
				HasLoss: p.Training, Loss: p.Loss, Acc: p.Acc, Done: p.Done, Total: p.Total})
			if p.Batch == p.Batches {
				prog.done()
			}
		},
	})
	prog.done()
	if err != nil {
		return nil, err
	}
	if err := logw.Close(); err != nil {
		return nil, err
	}
	if err := res.WriteRunDir(dir); err != nil {
		return nil, err
	}
	return res, nil
}

// lazyFile creates its file at the first write: a resume truncates the old
// log (the search writes it again from its checkpoint) only once the
// checkpoint has loaded, so a resume that fails leaves the log as it was.
type lazyFile struct {
	path string
	f    *os.File
}

func (l *lazyFile) Write(b []byte) (int, error) {
	if l.f == nil {
		f, err := os.Create(l.path)
		if err != nil {
			return 0, fmt.Errorf("creating %s: %w", l.path, err)
		}
		l.f = f
	}
	return l.f.Write(b)
}

func (l *lazyFile) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("closing %s: %w", l.path, err)
	}
	return nil
}

// readSearchConfig reads a search's config.json strictly: a training run's
// configuration is an error naming its first foreign key.
func readSearchConfig(path string) (SearchConfig, error) {
	var c SearchConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("reading %s (not a search's configuration?): %w", path, err)
	}
	return c, nil
}

// Rederive derives a finished search's architecture again with the
// derivation setting derive makes of the search's own (search.Rederive) and
// writes a run directory at out like the search's: arch.json,
// decisions.json, search_config.json, the supernet, and config.json with
// the new derive section; split.json and search_log.jsonl are copied. The
// search's directory is left as it was.
func Rederive(run, out string, derive func(saved search.DeriveConfig) search.DeriveConfig) (*search.Result, error) {
	if filepath.Clean(run) == filepath.Clean(out) {
		return nil, Mark(ErrUsage, fmt.Errorf("derive: --out is the search's own directory (%s): choose another, so the search's derivation stays", run))
	}
	cfgPath := filepath.Join(run, ConfigFile)
	cfg, err := readSearchConfig(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("derive: %w", err)
	}
	// Another run is never overwritten: a search's or a training's holds a
	// checkpoint, or a configuration without decisions (a derivation's
	// directory, written by this command, may be written again).
	_, ckErr := os.Stat(filepath.Join(out, CheckpointFile))
	_, cfErr := os.Stat(filepath.Join(out, ConfigFile))
	_, deErr := os.Stat(filepath.Join(out, "decisions.json"))
	if ckErr == nil || (cfErr == nil && deErr != nil) {
		return nil, Mark(ErrUsage, fmt.Errorf("derive: --out %s holds another run: choose a new directory", out))
	}
	d := derive(cfg.Search.Derive)
	lat, err := openSearchLatency(&cfg.Search)
	if err != nil {
		return nil, fmt.Errorf("derive from %s: %w", run, err)
	}
	res, err := search.Rederive(cfg.Search, filepath.Join(run, CheckpointFile), d, lat)
	if err != nil {
		return nil, fmt.Errorf("derive from %s: %w", run, err)
	}
	// Locked only now: a derivation that fails writes nothing.
	release, err := lockRun(out, false)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := res.WriteRunDir(out); err != nil {
		return nil, err
	}
	cfg.RunDir, cfg.Search.Derive = out, d
	if err := writeJSON(filepath.Join(out, ConfigFile), cfg); err != nil {
		return nil, err
	}
	for _, name := range []string{SplitFile, SearchLogFile} {
		b, err := os.ReadFile(filepath.Join(run, name))
		if err != nil {
			return nil, fmt.Errorf("derive: %w", err)
		}
		if err := atomicfile.Write(filepath.Join(out, name), b); err != nil {
			return nil, fmt.Errorf("derive: writing %s: %w", filepath.Join(out, name), err)
		}
	}
	return res, nil
}

// searchLatency prices a latency-aware search's networks on a device
// profile as they will be retrained: rebuilt with latency.params first.
type searchLatency struct {
	prof   *hwprofile.Profile
	params map[string]any
}

func (l searchLatency) LatencyMs(g *models.Graph, params []*nn.Param) (float64, error) {
	if len(l.params) > 0 {
		r, err := rebuildWith(g, Config{Model: Model{Arch: "(the derived network)", Params: l.params}})
		if err != nil {
			return 0, fmt.Errorf("search.latency.params: %w", err)
		}
		g, params = r, nil
	}
	return profileLatency{l.prof}.LatencyMs(g, params)
}

// openSearchLatency reads the profile of a latency-aware search (nil, nil
// for another) and records its content hash in c, so that resuming against
// a profile that prices differently is refused as another configuration.
func openSearchLatency(c *search.Config) (search.LatencyModel, error) {
	if !c.Latency.On() {
		return nil, nil
	}
	if c.Latency.Profile == "" {
		return nil, Mark(ErrUsage, fmt.Errorf("config: search.latency: weight or target_ms set without a profile (search.latency.profile)"))
	}
	prof, err := hwprofile.Read(c.Latency.Profile)
	if err != nil {
		return nil, Mark(ErrUsage, fmt.Errorf("config: search.latency.profile: %w", err))
	}
	c.Latency.ProfileHash = prof.Hash
	return searchLatency{prof: prof, params: c.Latency.Params}, nil
}
