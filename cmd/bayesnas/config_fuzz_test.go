package main

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"bayesnas/nn"
)

// FuzzLoadConfig loads a YAML config file the way `bayesnas train`
// (loadConfig), `bayesnas search` (loadSearchConfig) and `bayesnas pipeline`
// (loadPipelineConfig) do: viper reads the file, then the commands' own
// decoding, unknown-key checks, thread bounds and validation run.
//
// It asserts: no panic; bad input is an error; a config that loads for
// train or pipeline validates again and its thread count is within the
// bound (0..nn.MaxWorkers); allocation stays below 4096 x the file's bytes
// + 32 MiB for the three loads (viper's and YAML's own structures
// included).
func FuzzLoadConfig(f *testing.F) {
	for _, name := range []string{"demo.yaml", "search-proxy.yaml"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "configs", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("train:\n  epochs: 3\n  lr: 0.2\nmodel:\n  params:\n    alpha: 12\n"))
	f.Add([]byte("train:\n  lernrate: 3\n"))
	f.Add([]byte("threads: 100000\n"))
	f.Add([]byte("search: [1, 2\n"))
	f.Add([]byte("a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nmodel: {params: {c: [*b, *b, *b, *b]}}\n"))

	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		cfg, err := resolve(t, "--config", path)
		_, _ = resolveSearch(t, "--config", path)
		pcfg, perr := resolvePipeline(t, "--config", path, "--profile", "p.yaml")
		runtime.ReadMemStats(&after)
		if alloc, bound := after.TotalAlloc-before.TotalAlloc, 4096*uint64(len(b))+32<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for a file of %d bytes: bound %d", alloc, len(b), bound)
		}
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("train config loaded but does not validate: %v", verr)
			}
			if cfg.Threads < 0 || cfg.Threads > nn.MaxWorkers() {
				t.Fatalf("train config loaded with threads %d", cfg.Threads)
			}
		}
		if perr == nil {
			if verr := pcfg.Validate(); verr != nil {
				t.Fatalf("pipeline config loaded but does not validate: %v", verr)
			}
		}
	})
}
