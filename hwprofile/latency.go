package hwprofile

import "slices"

// StatisticQuietest is the statistic of every latency bayesnas measures
// (profile entries, calibration, check, compress and export): each round
// of a measurement times the model Repeats times and keeps the median, and
// the measurement is the lowest of its rounds' medians. On a shared
// machine other tenants slow it by up to 1.7x for seconds at a time; the
// median over rounds follows those spells, the quietest round does not.
// Measured on this project's 2-vCPU VM in a noisy spell (12 networks, 24
// interleaved rounds of 100 runs, `go run ./bench/nodetimes -rounds 24`;
// BENCHMARKS.md): two measurements of 6 rounds agreed within 10 % for 40 %
// of the pairs with the median over rounds and for 96 % with the quietest
// round (12 rounds: 58 % and 100 %). On a dedicated device the rounds
// agree, and it is the median latency.
const StatisticQuietest = "median of the quietest round"

// Quietest aggregates a measurement's round medians (see
// StatisticQuietest); 0 for none.
func Quietest(roundMedians []float64) float64 {
	if len(roundMedians) == 0 {
		return 0
	}
	return slices.Min(roundMedians)
}

// LatencyFile is where the pipeline's export stage writes a LatencyReport
// (in RUN/export) and the report reads it.
const LatencyFile = "latency.json"

// LatencyReport is latency.json: the exported model timed on the device
// against the budget compress pruned it to.
type LatencyReport struct {
	Device  string `json:"device"`
	Profile string `json:"profile"`
	// Budget as given (2.5ms, 0.5x); BudgetMs in milliseconds: a fraction
	// of UnprunedMs, the unpruned network timed in the same rounds as the
	// model, when that was timed.
	Budget      string  `json:"budget,omitempty"`
	BudgetMs    float64 `json:"budget_ms"`
	UnprunedMs  float64 `json:"unpruned_ms,omitempty"`
	PredictedMs float64 `json:"predicted_ms"`
	// MeasuredMs is the lowest of the rounds' medians (StatisticQuietest;
	// the unpruned network's likewise); P90Ms the median of the rounds'
	// 90th percentiles (the noise a single inference sees); Repeats the
	// timed inferences in all.
	MeasuredMs float64 `json:"measured_ms"`
	P90Ms      float64 `json:"p90_ms"`
	Repeats    int     `json:"repeats"`
	Rounds     int     `json:"rounds"`
	Batch      int     `json:"batch"`
	// ReferenceMs is the profile's reference network timed beside the
	// model, against ProfileReferenceMs when the profile was measured: a
	// shared device slower now than then shows here (the verdict is on
	// MeasuredMs as is).
	ReferenceMs        float64 `json:"reference_ms"`
	ProfileReferenceMs float64 `json:"profile_reference_ms"`
	Verdict            string  `json:"verdict"` // pass: measured <= budget; fail
	// Layers, when the device reports per-kernel times.
	Layers []LayerLatency `json:"layers,omitempty"`
}

// LayerLatency is one kernel's predicted and measured time.
type LayerLatency struct {
	Name        string  `json:"name"`
	PredictedMs float64 `json:"predicted_ms"`
	MeasuredMs  float64 `json:"measured_ms"`
}
