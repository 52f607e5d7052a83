package hwprofile

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

// roundsDevice times every model at a fixed latency by kind (from the file
// name Measure gives it), twice as slow in every round but one: a shared
// machine whose other tenants are busy most of the time.
type roundsDevice struct{ calls map[string]int }

func (d *roundsDevice) Describe(context.Context) (DeviceInfo, RuntimeInfo, error) {
	return DeviceInfo{Name: "fake", CPU: "fake", Cores: 1}, RuntimeInfo{Name: "fake", Version: "1"}, nil
}

func (d *roundsDevice) Time(_ context.Context, path string, p Protocol) (Timing, error) {
	kind, _, _ := strings.Cut(filepath.Base(path), "-")
	ms := map[string]float64{"overhead": 0.01, "reference": 0.3, "kernel": 0.5}[kind]
	if kind != "overhead" {
		if d.calls[kind]%3 != 1 {
			ms *= 2
		}
		d.calls[kind]++
	}
	return Timing{MedianMs: ms, P90Ms: ms, Repeats: p.Repeats}, nil
}

func (d *roundsDevice) Close() error { return nil }

// An entry is the quietest of its rounds (StatisticQuietest): the median
// over three rounds, two of them slow, would be the slow time.
func TestMeasureKeepsQuietestRound(t *testing.T) {
	dev := &roundsDevice{calls: map[string]int{}}
	jobs := []Job{{Key: Key{Kind: "Relu", C: 1, H: 1, W: 1}, Model: overheadModel()}}
	p, err := Measure(context.Background(), dev, jobs, nil, MeasureOptions{
		Protocol: Protocol{Batch: 1, Warmup: 1, Repeats: 10}, Rounds: 3, Input: []int{1, 28, 28}, Tool: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Protocol.Statistic != StatisticQuietest || p.ReferenceMs != 0.3 {
		t.Fatalf("statistic %q, reference %v ms: want %q and the quietest round 0.3", p.Protocol.Statistic, p.ReferenceMs, StatisticQuietest)
	}
	if len(p.Entries) != 1 || math.Abs(p.Entries[0].MedianMs-0.49) > 1e-9 {
		t.Fatalf("entries %+v: want 0.5 - 0.01 ms of overhead, the quietest round", p.Entries)
	}
}
