package pipeline

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"

	"bayesnas/models"
	"bayesnas/nn"
)

// trainState is where a run stands: the checkpoint records it so a resumed
// run continues at the same batch with the same running sums.
type trainState struct {
	Epoch   int // epochs completed
	Batch   int // batches completed in epoch Epoch (0 at an epoch boundary)
	Step    int // optimizer steps taken
	LossSum float64
	Correct int
	Seen    int
}

const trainCheckpointFormat = "bayesnas.checkpoint/v1"

// trainOptimizer names the optimizer's slots inside a checkpoint
// ("optimizer/<slot>", "optimizer_steps"), apart from the weights.
func trainOptimizer(optim nn.Optimizer) []models.CheckpointOptimizer {
	return []models.CheckpointOptimizer{{Name: "optimizer", Opt: optim}}
}

func saveCheckpoint(path string, params []*nn.Param, optim nn.Optimizer, st trainState) error {
	meta := map[string]string{
		"format": trainCheckpointFormat,
		"epoch":  strconv.Itoa(st.Epoch),
		"batch":  strconv.Itoa(st.Batch),
		"step":   strconv.Itoa(st.Step),
		// Exact float bits, so the resumed epoch's mean loss is the same number.
		"loss_sum": strconv.FormatUint(math.Float64bits(st.LossSum), 16),
		"correct":  strconv.Itoa(st.Correct),
		"seen":     strconv.Itoa(st.Seen),
	}
	return models.SaveCheckpoint(path, params, trainOptimizer(optim), meta)
}

func loadCheckpoint(path string, params []*nn.Param, optim nn.Optimizer) (trainState, error) {
	var st trainState
	meta, err := models.LoadCheckpoint(path, trainCheckpointFormat, params, trainOptimizer(optim))
	if err != nil {
		return st, fmt.Errorf("resume: %w", err)
	}
	ints := map[string]*int{"epoch": &st.Epoch, "batch": &st.Batch, "step": &st.Step, "correct": &st.Correct, "seen": &st.Seen}
	for k, p := range ints {
		v, err := strconv.Atoi(meta[k])
		if err != nil {
			return st, fmt.Errorf("resume: %s: metadata %q: %w", path, k, err)
		}
		*p = v
	}
	bits, err := strconv.ParseUint(meta["loss_sum"], 16, 64)
	if err != nil {
		return st, fmt.Errorf("resume: %s: metadata loss_sum: %w", path, err)
	}
	st.LossSum = math.Float64frombits(bits)
	return st, nil
}

// check refuses a state that training with epochs epochs of stepsPerEpoch
// batches of batch samples cannot have reached: a resumed run would
// otherwise skip training (an epoch past the last) or part of an epoch (a
// batch past the last) and exit 0. Errors name the metadata field.
func (st trainState) check(path string, epochs, stepsPerEpoch, batch int) error {
	bad := func(field string, v int, want string) error {
		return fmt.Errorf("resume: %s: metadata %s = %d: want %s", path, field, v, want)
	}
	switch {
	case st.Epoch < 0 || st.Epoch > epochs:
		return bad("epoch", st.Epoch, fmt.Sprintf("0..%d (train.epochs)", epochs))
	case st.Batch < 0 || st.Batch >= stepsPerEpoch || (st.Epoch == epochs && st.Batch != 0):
		return bad("batch", st.Batch, fmt.Sprintf("0..%d (batches per epoch), 0 once every epoch is done", stepsPerEpoch-1))
	case st.Step != st.Epoch*stepsPerEpoch+st.Batch:
		return bad("step", st.Step, fmt.Sprintf("%d (epoch x batches per epoch + batch)", st.Epoch*stepsPerEpoch+st.Batch))
	case st.Seen < 0 || st.Seen > st.Batch*batch:
		return bad("seen", st.Seen, fmt.Sprintf("0..%d (batch x batch size)", st.Batch*batch))
	case st.Correct < 0 || st.Correct > st.Seen:
		return bad("correct", st.Correct, fmt.Sprintf("0..%d (seen)", st.Seen))
	case math.IsNaN(st.LossSum) || math.IsInf(st.LossSum, 0) || st.LossSum < 0:
		return fmt.Errorf("resume: %s: metadata loss_sum = %v: want a finite sum >= 0", path, st.LossSum)
	}
	return nil
}

// configDiff compares two resolved configurations through their JSON form
// (so maps and nested sections compare by value) and returns the key of the
// first setting that differs ("search.lr", "data.limit"), or "" when they
// are the same: a resumed run must continue the run it resumes.
func configDiff(saved, now any) (string, error) {
	var a, b any
	for _, p := range []struct {
		v   any
		dst *any
	}{{saved, &a}, {now, &b}} {
		j, err := json.Marshal(p.v)
		if err != nil {
			return "", fmt.Errorf("comparing configurations: %w", err)
		}
		if err := json.Unmarshal(j, p.dst); err != nil {
			return "", fmt.Errorf("comparing configurations: %w", err)
		}
	}
	return jsonDiff("", a, b), nil
}

// pathKeys are the settings that are file or directory paths: they compare
// as cleaned absolute paths, so `runs/x`, `./runs/x/` and /abs/runs/x are
// one directory.
var pathKeys = map[string]bool{"run_dir": true, "data.dir": true, "model.arch": true, "model.weights": true}

// samePath says whether a and b name the same path once made absolute
// (against the working directory) and cleaned.
func samePath(a, b string) bool {
	if a == b {
		return true
	}
	if a == "" || b == "" {
		return false
	}
	aa, errA := filepath.Abs(a)
	ab, errB := filepath.Abs(b)
	return errA == nil && errB == nil && aa == ab
}

func jsonDiff(path string, a, b any) string {
	ma, okA := a.(map[string]any)
	mb, okB := b.(map[string]any)
	if !okA || !okB {
		if reflect.DeepEqual(a, b) {
			return ""
		}
		if sa, ok := a.(string); ok && pathKeys[path] {
			if sb, ok := b.(string); ok && samePath(sa, sb) {
				return ""
			}
		}
		return path
	}
	keys := make([]string, 0, len(ma)+len(mb))
	for k := range ma {
		keys = append(keys, k)
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		sub := k
		if path != "" {
			sub = path + "." + k
		}
		if d := jsonDiff(sub, ma[k], mb[k]); d != "" {
			return d
		}
	}
	return ""
}

// checkResumeConfig refuses to resume under settings other than those saved
// in the run directory (path), naming the first that differs.
func checkResumeConfig(path string, saved, now any) error {
	key, err := configDiff(saved, now)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if key != "" {
		return Mark(ErrUsage, fmt.Errorf("resume: setting %s differs from %s; resume with the same settings (or start a new run directory)", key, path))
	}
	return nil
}
