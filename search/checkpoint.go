package search

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"bayesnas/models"
)

// checkpointFormat marks a search checkpoint (a training checkpoint in the
// same place has another format and is refused by name).
const checkpointFormat = "bayesnas.search-checkpoint/v1"

// position is where a search stands. Checkpoints are taken at epoch ends
// (Batch 0), at the end of each log line, and mid-epoch on cancellation; a
// search stopped inside a curvature pass resumes from the epoch before it,
// which gives the same result because the pass is a function of that state.
type position struct {
	Epoch int `json:"epoch"` // epochs trained: drives every data order
	Batch int `json:"batch"` // batches trained in epoch Epoch
	// Running sums of epoch Epoch (float bits are exact through JSON).
	LossSum float64 `json:"loss_sum"`
	Correct int     `json:"correct"`
	Seen    int     `json:"seen"`
	// Logged counts the log lines written: 0 before the warm-up's, t+1 once
	// iteration t's is written.
	Logged int `json:"logged"`
	// Line is the current phase's log line so far (training loss, seconds).
	Line IterationLog `json:"line"`
	// Elapsed is the search's time so far, so a resumed log's elapsed_seconds
	// continue.
	Elapsed float64 `json:"elapsed"`
	// LatencyScale is the op penalties' latency scale (LatencyConfig).
	LatencyScale float64 `json:"latency_scale,omitempty"`
}

// exactFloat is a float64 written as its shortest exact decimal string
// ("+Inf" and "NaN" included, which JSON numbers cannot hold).
type exactFloat float64

func (f exactFloat) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, strconv.FormatFloat(float64(f), 'g', -1, 64)), nil
}

func (f *exactFloat) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("exact float %s: %w", b, err)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return err
	}
	*f = exactFloat(v)
	return nil
}

func exactSlice(a []float64) []exactFloat {
	if a == nil {
		return nil
	}
	out := make([]exactFloat, len(a))
	for i, v := range a {
		out[i] = exactFloat(v)
	}
	return out
}

func floatSlice(a []exactFloat) []float64 {
	if a == nil {
		return nil
	}
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

// groupState is what the search changes in a Group.
type groupState struct {
	Name     string       `json:"name"`
	Gamma    exactFloat   `json:"gamma"`
	GammaEff exactFloat   `json:"gamma_eff"`
	Omega    exactFloat   `json:"omega"`
	H        []exactFloat `json:"h"`
	C        []exactFloat `json:"c"`
	Clamped  bool         `json:"clamped"`
	Frozen   bool         `json:"frozen"`
}

func (s *searcher) optimizers() []models.CheckpointOptimizer {
	return []models.CheckpointOptimizer{{Name: "optimizer", Opt: s.optW}, {Name: "arch_optimizer", Opt: s.optA}}
}

// checkpoint writes the search's state to opt.Checkpoint atomically: the
// network's parameters (weights, BN statistics, architecture variables) and
// both optimizers as tensors; the position, the groups' variances, the
// curvature sampler's state, the log so far and the configuration as metadata.
func (s *searcher) checkpoint() error {
	if s.opt.Checkpoint == "" {
		return nil
	}
	s.pos.Elapsed = time.Since(s.start).Seconds()
	groups := make([]groupState, len(s.space.Groups))
	for i, g := range s.space.Groups {
		groups[i] = groupState{Name: g.Name, Gamma: exactFloat(g.Gamma), GammaEff: exactFloat(g.GammaEff), Omega: exactFloat(g.Omega),
			H: exactSlice(g.H), C: exactSlice(g.C), Clamped: g.Clamped, Frozen: g.Frozen}
	}
	rng, err := s.curv.RNGState()
	if err != nil {
		return fmt.Errorf("search checkpoint: %w", err)
	}
	meta := map[string]string{"format": checkpointFormat, "curvature_rng": hex.EncodeToString(rng)}
	for k, v := range map[string]any{"config": s.cfg, "position": s.pos, "groups": groups, "log": s.r.Log} {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("search checkpoint: %s: %w", k, err)
		}
		meta[k] = string(b)
	}
	if err := models.SaveCheckpoint(s.opt.Checkpoint, s.net.Params, s.optimizers(), meta); err != nil {
		return fmt.Errorf("search checkpoint: %w", err)
	}
	return nil
}

// load restores a checkpoint written by a search with the same
// configuration, re-applies the pruning of its frozen groups and re-derives
// the cells of its last log line.
func (s *searcher) load(path string) error {
	meta, err := models.LoadCheckpoint(path, checkpointFormat, s.net.Params, s.optimizers())
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	want, err := json.Marshal(s.cfg)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if !bytes.Equal([]byte(meta["config"]), want) {
		return fmt.Errorf("resume: %s was written by a search with another configuration (saved %s)", path, meta["config"])
	}
	var groups []groupState
	for k, dst := range map[string]any{"position": &s.pos, "groups": &groups, "log": &s.r.Log} {
		if err := json.Unmarshal([]byte(meta[k]), dst); err != nil {
			return fmt.Errorf("resume: %s: metadata %q: %w", path, k, err)
		}
	}
	if len(groups) != len(s.space.Groups) {
		return fmt.Errorf("resume: %s holds %d groups, the search space has %d", path, len(groups), len(s.space.Groups))
	}
	if err := s.checkState(path, groups); err != nil {
		return err
	}
	for i, g := range s.space.Groups {
		st := groups[i]
		g.Gamma, g.GammaEff, g.Omega = float64(st.Gamma), float64(st.GammaEff), float64(st.Omega)
		g.H, g.C, g.Clamped, g.Frozen = floatSlice(st.H), floatSlice(st.C), st.Clamped, st.Frozen
	}
	rng, err := hex.DecodeString(meta["curvature_rng"])
	if err != nil {
		return fmt.Errorf("resume: %s: metadata curvature_rng: %w", path, err)
	}
	if err := s.curv.SetRNGState(rng); err != nil {
		return fmt.Errorf("resume: %s: %w", path, err)
	}
	for _, g := range s.space.Groups {
		if g.Frozen {
			s.pr.apply(s.space)
			break
		}
	}
	if s.cfg.Latency.On() {
		s.setLambdas() // at the checkpoint's scale
	}
	if s.pos.Logged > 0 {
		if _, err = s.derive(); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	}
	return nil
}

// checkState refuses metadata that the search with this configuration
// cannot have written (a resumed search would otherwise skip training, skip
// part of an epoch, or carry NaN into its priors): the position against
// the configuration's epochs and log lines and the training source's
// batches (s.batches, when known), the running sums against the batches
// trained, the latency scale against its bounds, the log lines against the
// position, and every group's variances and curvature. Errors name the file
// and the metadata field, as the training checkpoint's do
// (pipeline.trainState.check).
func (s *searcher) checkState(path string, groups []groupState) error {
	cfg, p := s.cfg, s.pos
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("resume: %s: metadata %s = %v: want %s", path, field, v, want)
	}
	total := cfg.WarmupEpochs + cfg.Iterations*cfg.EpochsPerIteration
	// Log line t is written once epoch WarmupEpochs + t*EpochsPerIteration
	// is done, so Logged lines bound the epochs trained both ways.
	lo, hi := 0, cfg.WarmupEpochs
	if p.Logged > 0 {
		lo = cfg.WarmupEpochs + (p.Logged-1)*cfg.EpochsPerIteration
		hi = min(cfg.WarmupEpochs+p.Logged*cfg.EpochsPerIteration, total)
	}
	batches := "the epoch's batches"
	if s.batches > 0 {
		batches = fmt.Sprintf("0..%d (batches per epoch)", s.batches)
	}
	switch {
	case p.Logged < 0 || p.Logged > cfg.Iterations+1:
		return bad("position.logged", p.Logged, fmt.Sprintf("0..%d (iterations + 1 log lines)", cfg.Iterations+1))
	case len(s.r.Log) != p.Logged:
		return fmt.Errorf("resume: %s: metadata log holds %d lines, position.logged says %d", path, len(s.r.Log), p.Logged)
	case p.Epoch < 0 || p.Epoch > total:
		return bad("position.epoch", p.Epoch, fmt.Sprintf("0..%d (warmup_epochs + iterations x epochs_per_iteration)", total))
	case p.Epoch < lo || p.Epoch > hi:
		return bad("position.epoch", p.Epoch, fmt.Sprintf("%d..%d (%d log lines written)", lo, hi, p.Logged))
	case p.Batch < 0 || (s.batches > 0 && p.Batch > s.batches):
		return bad("position.batch", p.Batch, batches)
	case p.Epoch == hi && p.Batch != 0:
		return bad("position.batch", p.Batch, fmt.Sprintf("0 (epoch %d ends the phase of %d log lines)", hi, p.Logged))
	case p.Seen < 0 || p.Seen > p.Batch*cfg.Batch:
		return bad("position.seen", p.Seen, fmt.Sprintf("0..%d (batch x batch size)", p.Batch*cfg.Batch))
	case p.Correct < 0 || p.Correct > p.Seen:
		return bad("position.correct", p.Correct, fmt.Sprintf("0..%d (seen)", p.Seen))
	case !finiteNonNeg(p.LossSum):
		return bad("position.loss_sum", p.LossSum, "a finite sum >= 0")
	case !finiteNonNeg(p.Elapsed):
		return bad("position.elapsed", p.Elapsed, "finite seconds >= 0")
	}
	if cfg.Latency.On() {
		start := cfg.Latency.startScale()
		if !(p.LatencyScale >= start/scaleSpan && p.LatencyScale <= start*scaleSpan) {
			return bad("position.latency_scale", p.LatencyScale, fmt.Sprintf("%g..%g (the start %g within a factor %g)", start/scaleSpan, start*scaleSpan, start, float64(scaleSpan)))
		}
	} else if p.LatencyScale != 0 {
		return bad("position.latency_scale", p.LatencyScale, "0 (the search is not latency-aware)")
	}
	for i, it := range s.r.Log {
		if it.Iteration != i {
			return bad(fmt.Sprintf("log[%d].iteration", i), it.Iteration, strconv.Itoa(i))
		}
		if e := cfg.WarmupEpochs + i*cfg.EpochsPerIteration; it.Epochs != e {
			return bad(fmt.Sprintf("log[%d].epochs", i), it.Epochs, fmt.Sprintf("%d (warmup_epochs + iteration x epochs_per_iteration)", e))
		}
	}
	for i, g := range s.space.Groups {
		st := groups[i]
		if st.Name != g.Name {
			return fmt.Errorf("resume: %s: group %d is %s, the search space's is %s", path, i, st.Name, g.Name)
		}
		field := func(f string) string { return fmt.Sprintf("groups[%d] (%s).%s", i, g.Name, f) }
		for _, v := range []struct {
			name string
			x    exactFloat
		}{{"gamma", st.Gamma}, {"gamma_eff", st.GammaEff}, {"omega", st.Omega}} {
			if !finiteNonNeg(float64(v.x)) {
				return bad(field(v.name), float64(v.x), "a finite value >= 0")
			}
		}
		for _, sl := range []struct {
			name string
			a    []exactFloat
		}{{"h", st.H}, {"c", st.C}} {
			if sl.a != nil && len(sl.a) != len(g.Vars) {
				return fmt.Errorf("resume: %s: metadata %s holds %d values: want %d (one per variable of the group), or none before its first update",
					path, field(sl.name), len(sl.a), len(g.Vars))
			}
			for j, v := range sl.a {
				if !finiteNonNeg(float64(v)) {
					return bad(fmt.Sprintf("%s[%d]", field(sl.name), j), float64(v), "a finite value >= 0")
				}
			}
		}
	}
	return nil
}

func finiteNonNeg(x float64) bool { return x >= 0 && !math.IsInf(x, 1) }
