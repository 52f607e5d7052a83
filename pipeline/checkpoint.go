package pipeline

import (
	"fmt"
	"math"
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

// optPrefix names optimizer slots inside a checkpoint, apart from the weights.
const optPrefix = "optimizer/"

// checkpointTensors returns the weights followed by the optimizer's slots, in
// a fixed order, as params so one safetensors file holds them all.
func checkpointTensors(params []*nn.Param, optim nn.Optimizer) []*nn.Param {
	out := append([]*nn.Param(nil), params...)
	state := optim.State()
	names := make([]string, 0, len(state))
	for k := range state {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		out = append(out, &nn.Param{Name: optPrefix + k, Shape: []int{len(state[k])}, Data: state[k], Kind: nn.Buffer})
	}
	return out
}

func saveCheckpoint(path string, params []*nn.Param, optim nn.Optimizer, st trainState) error {
	meta := map[string]string{
		"format":          "bayesnas.checkpoint/v1",
		"epoch":           strconv.Itoa(st.Epoch),
		"batch":           strconv.Itoa(st.Batch),
		"step":            strconv.Itoa(st.Step),
		"optimizer_steps": strconv.FormatInt(optim.Steps(), 10),
		// Exact float bits, so the resumed epoch's mean loss is the same number.
		"loss_sum": strconv.FormatUint(math.Float64bits(st.LossSum), 16),
		"correct":  strconv.Itoa(st.Correct),
		"seen":     strconv.Itoa(st.Seen),
	}
	return models.SaveWeights(path, checkpointTensors(params, optim), meta)
}

func loadCheckpoint(path string, params []*nn.Param, optim nn.Optimizer) (trainState, error) {
	var st trainState
	meta, err := models.ReadWeightsMetadata(path)
	if err != nil {
		return st, fmt.Errorf("resume: %w", err)
	}
	if meta["format"] != "bayesnas.checkpoint/v1" {
		return st, fmt.Errorf("resume: %s is not a bayesnas checkpoint (format %q)", path, meta["format"])
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
	steps, err := strconv.ParseInt(meta["optimizer_steps"], 10, 64)
	if err != nil {
		return st, fmt.Errorf("resume: %s: metadata optimizer_steps: %w", path, err)
	}
	if err := models.LoadWeights(path, checkpointTensors(params, optim)); err != nil {
		return st, fmt.Errorf("resume: %w", err)
	}
	optim.SetSteps(steps)
	return st, nil
}
