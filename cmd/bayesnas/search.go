package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"bayesnas/pipeline"
	"bayesnas/search"
)

func newSearchCmd(blasNote string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "search",
		Short: "BayesNAS: derive an architecture from the data (proxy cells or PyramidNet tree cells)",
		Long: `Train a supernet with an architecture weight per (edge, op) and a switch per
edge, estimate the curvature of the loss in every architecture variable, update
the hierarchical ARD prior (C, omega, gamma), and derive the cells whose
gamma_eff stays above the threshold. --space (search.kind) chooses the space:
proxy (DARTS-style cells, search.space) or pyramid-tree (a tree cell in every
PyramidNet bottleneck block, searched at full depth, search.tree).

The YAML file holds run_dir, seed, threads and data (as for train) and a search:
section whose keys are those of search_config.json in a finished run (space,
batch, warmup_epochs, iterations, epochs_per_iteration, lr, arch_lr,
lambda_switch, lambda_op, curvature: empirical|mc|ggn, curvature_batches,
derive: {threshold, relative, min_significance}, prune_threshold, penalty_step:
subgradient|proximal, latency: {profile, weight, target_ms, params}, ...). With
search.latency the search is for a device: each op's penalty is scaled by its
latency on the profile, and with target_ms the derived network is predicted
under it (search_latency.json). The run directory gets
arch.json (retrain it with 'bayesnas train --arch'), decisions.json (every edge and
op with gamma, gamma_eff, omega, curvature, posterior variance), search_log.jsonl,
the supernet and its weights, and checkpoint.safetensors (after every epoch and
iteration, and on Ctrl-C): an interrupted search continues with --resume and
ends as an uninterrupted one would. On a terminal a progress bar shows the
epoch or curvature pass, batch, loss, elapsed time and ETA; otherwise plain
lines do.`,
		Example: `  bayesnas search --config configs/search-proxy.yaml
  bayesnas search --config configs/search-tree.yaml               # --space pyramid-tree
  bayesnas search --config configs/search-proxy.yaml --resume   # after Ctrl-C
  bayesnas train --arch runs/search/arch.json --run-dir runs/search-retrain`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadSearchConfig(cmd)
			if err != nil {
				return err
			}
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			resume, _ := cmd.Flags().GetBool("resume")
			log.Info("bayesnas search", "version", versionString(), "blas", blasNote, "run_dir", cfg.RunDir)
			out := cmd.OutOrStdout()
			res, err := pipeline.Search(cmd.Context(), cfg, pipeline.Options{
				Resume: resume, Progress: out, TTY: isTerminal(out), Log: log,
			})
			if err != nil {
				return err
			}
			last := res.Log[len(res.Log)-1]
			fmt.Fprintf(out, "derived: live ops %v, sparsity %.2f, val acc %.4f -> %s\n",
				last.LiveOps, last.Sparsity, last.ValAcc, cfg.RunDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.String("config", "", "YAML configuration file")
	f.Bool("resume", false, "continue the search in --run-dir from its checkpoint")
	f.String("space", "", "search space: proxy or pyramid-tree (search.kind)")
	f.String("run-dir", "", "run directory (run_dir)")
	f.Uint64("seed", 0, "random seed (seed)")
	f.Int("threads", 0, "worker goroutines, 0 = one per core (threads)")
	f.String("backend", "", backendFlagHelp)
	f.String("data", "", "dataset (data.name)")
	f.String("data-dir", "", "dataset directory (data.dir)")
	f.Int("limit", 0, "use at most this many training images (data.limit)")
	return cmd
}

// loadSearchConfig resolves defaults < YAML < BAYESNAS_* < flags for the run
// settings, and the search: section over search.DefaultConfig.
func loadSearchConfig(cmd *cobra.Command) (pipeline.SearchConfig, error) {
	var cfg pipeline.SearchConfig
	all := pipeline.Defaults()
	defaults := map[string]any{"run_dir": "runs/search"}
	for _, k := range []string{"seed", "threads", "backend", "data.name", "data.dir", "data.val_count",
		"data.augment.crop_pad", "data.augment.flip", "data.augment.cutout", "data.limit"} {
		defaults[k] = all[k]
	}
	v, err := newViper(cmd, defaults, []flagKey{{"run-dir", "run_dir"}, {"seed", "seed"}, {"threads", "threads"}, {"backend", "backend"},
		{"data", "data.name"}, {"data-dir", "data.dir"}, {"limit", "data.limit"}})
	if err != nil {
		return cfg, err
	}
	var run pipeline.Config
	if err := v.Unmarshal(&run); err != nil {
		return cfg, pipeline.Mark(pipeline.ErrUsage, decodeError(err))
	}
	cfg = pipeline.SearchConfig{RunDir: run.RunDir, Seed: run.Seed, Threads: run.Threads, Backend: run.Backend, Data: run.Data}
	if cfg.Search, err = searchSection(v); err != nil {
		return cfg, err
	}
	if space, _ := cmd.Flags().GetString("space"); space != "" {
		cfg.Search.Kind = space
	}
	for _, k := range v.AllKeys() {
		if strings.HasPrefix(k, "search.") || k == "run_dir" || k == "seed" || k == "threads" || k == "backend" || strings.HasPrefix(k, "data.") {
			continue
		}
		return cfg, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: unknown key %s", k))
	}
	// The search's settings are checked here, as the run's, so that a bad
	// one is a usage error before the run directory is looked at.
	s := cfg.Search
	s.Seed, s.Workers, s.Backend = cfg.Seed, cfg.Threads, cfg.Backend
	if err := s.Validate(); err != nil {
		return cfg, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: search: %w", err))
	}
	if err := cfg.Data.Validate(); err != nil {
		return cfg, pipeline.Mark(pipeline.ErrUsage, err)
	}
	return cfg, nil
}

// nonFinite finds a NaN or infinite number in a decoded YAML section (JSON,
// which the section is decoded through, has none), naming its key.
func nonFinite(sec map[string]any, prefix string) (string, any, bool) {
	for _, k := range slices.Sorted(maps.Keys(sec)) {
		switch v := sec[k].(type) {
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return prefix + k, v, true
			}
		case map[string]any:
			if key, val, ok := nonFinite(v, prefix+k+"."); ok {
				return key, val, ok
			}
		case []any:
			for i, e := range v {
				if f, ok := e.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
					return fmt.Sprintf("%s%s[%d]", prefix, k, i), f, true
				}
			}
		}
	}
	return "", nil, false
}

// searchSection decodes the search: section of v over search.DefaultConfig,
// with BAYESNAS_SEARCH_* over the YAML: `bayesnas search` and `bayesnas
// pipeline` read the same section the same way.
func searchSection(v *viper.Viper) (search.Config, error) {
	cfg := search.DefaultConfig()
	sec, _ := v.Get("search").(map[string]any)
	if sec == nil {
		sec = map[string]any{}
	}
	// viper binds BAYESNAS_* only to the keys it knows, and the search
	// section's keys are search.Config's JSON fields, so the environment is
	// read here, over the YAML and under the flags.
	if err := searchEnv(sec, reflect.TypeOf(cfg), "BAYESNAS_SEARCH_", "search."); err != nil {
		return cfg, pipeline.Mark(pipeline.ErrUsage, err)
	}
	if key, val, ok := nonFinite(sec, "search."); ok {
		return cfg, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: %s = %v: want a finite number", key, val))
	}
	if len(sec) > 0 {
		// The search settings are search.Config's JSON form; decoding strictly
		// over the defaults makes a misspelt key an error.
		b, err := json.Marshal(sec)
		if err != nil {
			return cfg, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: search: %w", err))
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: search: %w", err))
		}
	}
	return cfg, nil
}

// searchEnv sets into sec (the search: section as decoded from YAML) every
// field of t that an environment variable prefix+KEY names
// (BAYESNAS_SEARCH_WARMUP_EPOCHS, BAYESNAS_SEARCH_DERIVE_THRESHOLD, ...),
// parsed as the field's type; key is the dotted name for error messages.
func searchEnv(sec map[string]any, t reflect.Type, prefix, key string) error {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		env := prefix + strings.ToUpper(name)
		if f.Type.Kind() == reflect.Struct {
			sub, _ := sec[name].(map[string]any)
			if sub == nil {
				sub = map[string]any{}
			}
			if err := searchEnv(sub, f.Type, env+"_", key+name+"."); err != nil {
				return err
			}
			if len(sub) > 0 {
				sec[name] = sub
			}
			continue
		}
		s, ok := os.LookupEnv(env)
		if !ok {
			continue
		}
		val, err := parseEnv(s, f.Type)
		if err != nil {
			return fmt.Errorf("config: %s (from %s=%q): %w", key+name, env, s, err)
		}
		sec[name] = val
	}
	return nil
}

// parseEnv reads one environment value as a field of type t; a list is
// comma-separated (BAYESNAS_SEARCH_SPACE_INPUT=1,28,28).
func parseEnv(s string, t reflect.Type) (any, error) {
	s = strings.TrimSpace(s)
	switch t.Kind() {
	case reflect.Bool:
		return strconv.ParseBool(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.ParseInt(s, 10, 64)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.ParseUint(s, 10, 64)
	case reflect.Float32, reflect.Float64:
		return strconv.ParseFloat(s, 64)
	case reflect.String:
		return s, nil
	case reflect.Slice, reflect.Array:
		var out []any
		for _, part := range strings.Split(s, ",") {
			v, err := parseEnv(part, t.Elem())
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot be set from the environment (%s)", t)
}
