package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/models"
	"bayesnas/search"
)

// Every bundled configuration loads with its command's strict rules and
// describes a network that builds.
func TestBundledConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("configs: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		if strings.HasPrefix(name, "pipeline") { // also TestPipelineConfig
			cfg, err := resolvePipeline(t, "--config", f, "--profile", "../../profiles/native-1t.yaml")
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if !strings.Contains(string(body), "\nsearch:") {
			cfg, err := resolve(t, "--config", f)
			if err != nil && strings.Contains(err.Error(), "set model.builder or model.arch") {
				// A retraining config names no network: --arch gives it.
				cfg, err = resolve(t, "--config", f, "--arch", "runs/x/arch.json")
			}
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		cfg, err := resolveSearch(t, "--config", f)
		if err == nil {
			err = cfg.Search.Validate()
		}
		if err == nil {
			if name == "pyramid-treecell-cifar10.yaml" && (cfg.Search.Kind != search.KindTree || cfg.Search.Tree.BlocksPerStage != 18 || cfg.Search.Tree.Alpha != 84) {
				t.Errorf("%s: kind %q, %d blocks per stage, alpha %g: want the paper's setting", name, cfg.Search.Kind, cfg.Search.Tree.BlocksPerStage, cfg.Search.Tree.Alpha)
			}
			if cfg.Search.Kind == search.KindTree {
				_, _, err = models.PyramidTreeNetwork(cfg.Search.Tree)
			} else {
				_, _, err = models.ProxyNetwork(cfg.Search.Space)
			}
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
