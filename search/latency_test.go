package search

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
)

// macsLatency prices a network by its multiply-adds plus a fixed cost per
// node: a stand-in device on which convolutions cost and skips almost not.
type macsLatency struct{ calls int }

func (m *macsLatency) LatencyMs(g *models.Graph, _ []*nn.Param) (float64, error) {
	m.calls++
	n, err := g.Count()
	if err != nil {
		return 0, err
	}
	return float64(n.MACs)/1e4 + 1e-3*float64(len(g.Nodes)), nil
}

func latencyConfig(target float64) Config {
	cfg := tinyRunConfig()
	// A loose derivation keeps convolutions, so a target has ops to drop.
	cfg.Derive = DeriveConfig{Threshold: 1e-3, Relative: true}
	cfg.Latency = LatencyConfig{Profile: "test-device", ProfileHash: "macs", Weight: 1, TargetMs: target}
	return cfg
}

// Every op group's cost is its marginal latency, checked by brute force
// against the network with every op less that op built here by hand; the
// penalty weights follow lambda_op * (1 + scale * cost / mean cost); a
// skip costs less than a separable convolution at the same position.
func TestLatencyOpCosts(t *testing.T) {
	cfg := latencyConfig(0)
	lat := &macsLatency{}
	s, err := newSearcher(cfg, lat)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.allOps(nil)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := lat.LatencyMs(all, nil)
	var sum float64
	var n int
	for _, g := range s.space.Groups {
		if g.Kind != Op {
			if g.CostMs != 0 || g.Lambda != cfg.LambdaSwitch {
				t.Errorf("switch %s: cost %g, lambda %g; want 0 and lambda_switch %g", g.Name, g.CostMs, g.Lambda, cfg.LambdaSwitch)
			}
			continue
		}
		sum += g.CostMs
		n++
		// The network without this op, built from the edge lists directly.
		d := &Derivation{}
		for _, ct := range []string{Normal, Reduce} {
			var edges []models.ProxyEdge
			for k := 2; k < cfg.Space.Nodes+2; k++ {
				for j := range k {
					e := models.ProxyEdge{From: j, To: k}
					for _, op := range models.ProxyOps {
						if !(ct == g.CellType && j == g.From && k == g.To && op == g.Op) {
							e.Ops = append(e.Ops, op)
						}
					}
					edges = append(edges, e)
				}
			}
			if ct == Normal {
				d.Normal = edges
			} else {
				d.Reduce = edges
			}
		}
		less, err := DerivedNetwork(cfg.Space, d, cfg.Space.Cells, cfg.Space.Channels)
		if err != nil {
			t.Fatal(err)
		}
		ms, _ := lat.LatencyMs(less, nil)
		if want := max(base-ms, 0); g.CostMs != want {
			t.Errorf("%s: cost %g ms, brute force %g", g.Name, g.CostMs, want)
		}
	}
	mean := sum / float64(n)
	for _, g := range s.space.Groups {
		if g.Kind == Op {
			if want := cfg.LambdaOp * (1 + g.CostMs/mean); g.Lambda != want {
				t.Errorf("%s: lambda %g, want %g", g.Name, g.Lambda, want)
			}
		}
	}
	sep, skip := s.space.OpGroup(Normal, 0, 2, models.ProxySep3), s.space.OpGroup(Normal, 0, 2, models.ProxySkip)
	if !(sep.CostMs > 10*skip.CostMs) || sep.Lambda <= skip.Lambda {
		t.Errorf("sep_conv_3x3 costs %g ms (lambda %g), skip %g ms (lambda %g): want the conv far costlier and penalised more",
			sep.CostMs, sep.Lambda, skip.CostMs, skip.Lambda)
	}
}

// A search with a latency target below what the same search derives
// without one meets it in prediction, records its prediction per
// iteration and in the result, and keeps fewer costly ops; the report is
// written to the run directory.
func TestLatencyTargetMet(t *testing.T) {
	train, val := tinyData(t, 32)
	free, err := RunWith(context.Background(), latencyConfig(0), train, val, RunOptions{Latency: &macsLatency{}})
	if err != nil {
		t.Fatal(err)
	}
	if free.Latency == nil || !free.Latency.Met || free.Latency.PredictedMs <= 0 || len(free.Latency.Dropped) > 0 {
		t.Fatalf("search without a target: latency report %+v", free.Latency)
	}
	target := 0.6 * free.Latency.PredictedMs
	cfg := latencyConfig(target)
	r, err := RunWith(context.Background(), cfg, train, val, RunOptions{Latency: &macsLatency{}})
	if err != nil {
		t.Fatal(err)
	}
	rep := r.Latency
	if rep == nil || !rep.Met || rep.PredictedMs > target {
		t.Fatalf("target %g ms: report %+v", target, rep)
	}
	lat := &macsLatency{}
	if ms, _ := lat.LatencyMs(r.Derived, nil); ms != rep.PredictedMs {
		t.Errorf("reported %g ms, the derived network prices at %g", rep.PredictedMs, ms)
	}
	for _, it := range r.Log {
		if it.PredictedMs <= 0 || it.LatencyScale <= 0 {
			t.Errorf("iteration %d: predicted %g ms, scale %g", it.Iteration, it.PredictedMs, it.LatencyScale)
		}
	}
	// The first update's thresholds derived a network over the target: the
	// scale rose for the second, and the derivation dropped ops to meet it.
	if th := r.Log[1].ThresholdMs; !(th > target) || r.Log[1].PredictedMs > target {
		t.Fatalf("iteration 1: thresholds %g ms, after drops %g, target %g: the test needs the thresholds over it", th, r.Log[1].PredictedMs, target)
	}
	if want := min(r.Log[1].ThresholdMs/target, 2); math.Abs(r.Log[2].LatencyScale/r.Log[1].LatencyScale-want) > 1e-12 {
		t.Errorf("scale %g -> %g after thresholds at %g ms over the target %g: want x%g", r.Log[1].LatencyScale, r.Log[2].LatencyScale, r.Log[1].ThresholdMs, target, want)
	}
	if len(rep.Dropped) > 0 && !(rep.ThresholdMs > rep.PredictedMs) {
		t.Errorf("%d ops dropped, yet the thresholds' network (%g ms) is not costlier than the result (%g)", len(rep.Dropped), rep.ThresholdMs, rep.PredictedMs)
	}
	dir := t.TempDir()
	if err := r.WriteRunDir(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, LatencyFile))
	if err != nil {
		t.Fatal(err)
	}
	var back LatencyReport
	if err := json.Unmarshal(b, &back); err != nil || back.PredictedMs != rep.PredictedMs || back.TargetMs != target {
		t.Errorf("%s: %s (%v)", LatencyFile, b, err)
	}
	// An unreachable target is reported, not hidden.
	r, err = RunWith(context.Background(), latencyConfig(1e-9), train, val, RunOptions{Latency: &macsLatency{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Latency.Met || len(r.Latency.Dropped) == 0 {
		t.Errorf("unreachable target: report %+v, want not met after dropping ops", r.Latency)
	}
}

// A latency-aware search stopped mid-iteration and resumed ends as an
// uninterrupted one (the scale and the penalty weights are restored); a
// search without latency is untouched by the feature (its config JSON has
// no latency key); misuse is a clear error.
func TestLatencyResumeAndErrors(t *testing.T) {
	cfg := latencyConfig(0)
	cfg.Latency.TargetMs = 1 // well under the tiny network: the scale moves
	train, val := tinyData(t, cfg.Batch)
	var refLog bytes.Buffer
	ref, err := RunWith(context.Background(), cfg, train, val, RunOptions{Log: &refLog, Latency: &macsLatency{}})
	if err != nil {
		t.Fatal(err)
	}
	want := outcomeOf(t, ref, refLog.String())
	ckpt := filepath.Join(t.TempDir(), "checkpoint.safetensors")
	_, err = RunWith(&countdown{Context: context.Background(), n: 13}, cfg, train, val, RunOptions{Log: io.Discard, Checkpoint: ckpt, Latency: &macsLatency{}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped search: %v", err)
	}
	var log bytes.Buffer
	r, err := RunWith(context.Background(), cfg, train, val, RunOptions{Log: &log, Checkpoint: ckpt, Resume: true, Latency: &macsLatency{}})
	if err != nil {
		t.Fatal(err)
	}
	compareOutcomes(t, "latency-aware resume", outcomeOf(t, r, log.String()), want)
	for _, scale := range []float64{-1, 0, 1e9} {
		bad := filepath.Join(t.TempDir(), "checkpoint.safetensors")
		rewriteCheckpoint(t, cfg, &macsLatency{}, ckpt, bad, func(p map[string]any, _, _ []any) { p["latency_scale"] = scale })
		_, err := RunWith(context.Background(), cfg, train, val, RunOptions{Checkpoint: bad, Resume: true, Latency: &macsLatency{}})
		if want := fmt.Sprintf("%s: metadata position.latency_scale = %v: want 0.001..1000", bad, scale); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("latency scale %g in the checkpoint: err = %v, want %q", scale, err, want)
		}
	}

	plain, _ := json.Marshal(tinyRunConfig())
	if strings.Contains(string(plain), "latency") {
		t.Errorf("a search without latency writes a latency key: %s", plain)
	}
	if _, err := Run(context.Background(), cfg, train, val, nil); err == nil || !strings.Contains(err.Error(), "no latency model") {
		t.Errorf("latency-aware search without a model: %v", err)
	}
	bad := tinyRunConfig()
	bad.Latency.TargetMs = 2
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "latency.profile") {
		t.Errorf("target without a profile: %v", err)
	}
	bad.Latency = LatencyConfig{Profile: "p", Weight: -1}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "latency.weight") {
		t.Errorf("negative weight: %v", err)
	}
}
