package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"bayesnas/search"
)

// SearchLogFile is the search log in a run directory (one JSON line per iteration).
const SearchLogFile = "search_log.jsonl"

// SearchConfig is the resolved configuration of `bayesnas search`.
type SearchConfig struct {
	RunDir  string        `json:"run_dir"`
	Seed    uint64        `json:"seed"`
	Threads int           `json:"threads"`
	Data    Data          `json:"data"`
	Search  search.Config `json:"search"`
}

// Search runs BayesNAS on the proxy cell space and writes the run directory:
// config.json, split.json, search_log.jsonl, arch.json (the derived network,
// trainable with `bayesnas train --arch`), decisions.json, the supernet and its
// weights. It does not resume yet: an existing search in dir is an error.
func Search(ctx context.Context, cfg SearchConfig, opt Options) (*search.Result, error) {
	if cfg.RunDir == "" {
		return nil, fmt.Errorf("config: run_dir is empty")
	}
	if opt.Resume {
		return nil, fmt.Errorf("search: --resume is not supported yet; start a new run directory")
	}
	logPath := filepath.Join(cfg.RunDir, SearchLogFile)
	if _, err := os.Stat(logPath); err == nil {
		return nil, fmt.Errorf("%s already holds a search (%s); choose another run directory", cfg.RunDir, SearchLogFile)
	}
	cfg.Search.Seed = cfg.Seed
	cfg.Search.Workers = cfg.Threads
	if err := cfg.Search.Validate(); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(cfg.RunDir, ConfigFile), cfg); err != nil {
		return nil, err
	}
	d, err := prepareData(cfg.RunDir, cfg.Data, cfg.Seed, cfg.Search.Batch, cfg.Search.Batch)
	if err != nil {
		return nil, err
	}
	in := cfg.Search.Space.Input
	if in != [3]int{d.train.C, d.train.H, d.train.W} || cfg.Search.Space.Classes != d.train.Classes {
		return nil, fmt.Errorf("config: search.space input %v with %d classes does not match the data (%d x %d x %d, %d classes)",
			in, cfg.Search.Space.Classes, d.train.C, d.train.H, d.train.W, d.train.Classes)
	}
	if opt.Log != nil {
		opt.Log.Info("data", "name", d.train.Name, "train", d.trainCount, "val", len(d.split.Val), "split_hash", d.split.Hash)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logf.Close()
	var val search.Batches
	if d.valB != nil {
		val = d.valB
	}
	res, err := search.Run(ctx, cfg.Search, d.trainB, val, logf)
	if err != nil {
		return nil, err
	}
	if err := res.WriteRunDir(cfg.RunDir); err != nil {
		return nil, err
	}
	return res, nil
}
