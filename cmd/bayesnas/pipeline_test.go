package main

import (
	"testing"

	"bayesnas/pipeline"
)

func resolvePipeline(t *testing.T, args ...string) (pipeline.PipelineConfig, error) {
	t.Helper()
	return resolveWith(t, newPipelineCmd(""), loadPipelineConfig, args)
}

// configs/pipeline.yaml loads; YAML < BAYESNAS_* < flags, for the run
// settings, the search section and the pipeline's own sections alike;
// unknown keys and a missing profile are usage errors.
func TestPipelineConfig(t *testing.T) {
	prof := "../../profiles/native-1t.yaml"
	cfg, err := resolvePipeline(t, "--config", "../../configs/pipeline.yaml", "--profile", prof)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RunDir != "runs/pipeline" || cfg.Budget != "0.8x" || cfg.Compress.Method != "bayes" || cfg.Search.Iterations != 3 ||
		cfg.Search.Kind != "pyramid-tree" || cfg.Retrain.Optimizer != "sgd" || cfg.Retrain.Epochs != 2 || cfg.Export.Repeats != 100 {
		t.Fatalf("pipeline.yaml resolved to %+v", cfg)
	}
	t.Setenv("BAYESNAS_BUDGET", "0.4x")
	t.Setenv("BAYESNAS_SEARCH_ITERATIONS", "2")
	t.Setenv("BAYESNAS_RETRAIN_EPOCHS", "5")
	t.Setenv("BAYESNAS_COMPRESS_METHOD", "l1")
	cfg, err = resolvePipeline(t, "--config", "../../configs/pipeline.yaml", "--profile", prof, "--method", "uniform", "--run", "runs/x")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Budget != "0.4x" || cfg.Search.Iterations != 2 || cfg.Retrain.Epochs != 5 || cfg.Compress.Method != "uniform" || cfg.RunDir != "runs/x" {
		t.Fatalf("environment and flags: %+v", cfg)
	}
	bad := writeYAML(t, "retrain: {epoch: 3}\n")
	if _, err := resolvePipeline(t, "--config", bad, "--profile", prof); pipeline.ExitCode(err) != pipeline.ExitUsage {
		t.Errorf("misspelt key: %v (exit %d)", err, pipeline.ExitCode(err))
	}
	if _, err := resolvePipeline(t, "--profile", "nowhere.yaml"); pipeline.ExitCode(err) != pipeline.ExitUsage {
		t.Errorf("missing profile: %v (exit %d)", err, pipeline.ExitCode(err))
	}
}
