package models

import (
	"fmt"
	"sort"
	"strconv"

	"bayesnas/nn"
)

// CheckpointOptimizer names an optimizer inside a checkpoint: its slots are
// stored as tensors "<Name>/<slot>" and its step count as the metadata key
// "<Name>_steps", so one file can hold several optimizers (the search has
// one for the network weights and one for the architecture variables).
type CheckpointOptimizer struct {
	Name string
	Opt  nn.Optimizer
}

// checkpointTensors returns params followed by every optimizer's slots, in
// a fixed order, as params so that one safetensors file holds them all.
func checkpointTensors(params []*nn.Param, opts []CheckpointOptimizer) []*nn.Param {
	out := append([]*nn.Param(nil), params...)
	for _, o := range opts {
		state := o.Opt.State()
		names := make([]string, 0, len(state))
		for k := range state {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			out = append(out, &nn.Param{Name: o.Name + "/" + k, Shape: []int{len(state[k])}, Data: state[k], Kind: nn.Buffer})
		}
	}
	return out
}

// SaveCheckpoint writes params, the optimizers' slots and step counts and
// meta (which must carry a "format" key) to path atomically; the same state
// always gives the same bytes.
func SaveCheckpoint(path string, params []*nn.Param, opts []CheckpointOptimizer, meta map[string]string) error {
	if meta["format"] == "" {
		return fmt.Errorf("writing checkpoint %s: no format in its metadata", path)
	}
	m := make(map[string]string, len(meta)+len(opts))
	for k, v := range meta {
		m[k] = v
	}
	for _, o := range opts {
		m[o.Name+"_steps"] = strconv.FormatInt(o.Opt.Steps(), 10)
	}
	return SaveWeights(path, checkpointTensors(params, opts), m)
}

// LoadCheckpoint checks that path is a checkpoint of the given format, fills
// params and the optimizers' slots and step counts from it, and returns its
// metadata for the caller's own keys.
func LoadCheckpoint(path, format string, params []*nn.Param, opts []CheckpointOptimizer) (map[string]string, error) {
	meta, err := ReadWeightsMetadata(path)
	if err != nil {
		return nil, err
	}
	if meta["format"] != format {
		return nil, fmt.Errorf("%s is not a %s checkpoint (format %q)", path, format, meta["format"])
	}
	steps := make([]int64, len(opts))
	for i, o := range opts {
		key := o.Name + "_steps"
		if steps[i], err = strconv.ParseInt(meta[key], 10, 64); err != nil {
			return nil, fmt.Errorf("%s: metadata %q: %w", path, key, err)
		}
	}
	if err := LoadWeights(path, checkpointTensors(params, opts)); err != nil {
		return nil, err
	}
	for i, o := range opts {
		o.Opt.SetSteps(steps[i])
	}
	return meta, nil
}
