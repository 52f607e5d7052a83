package report

import (
	"strings"
	"testing"

	"bayesnas/hwprofile"
)

// The accuracy-latency plot places the unpruned network where the export
// stage timed it beside the compressed one, else where compress timed it,
// else at its predicted latency.
func TestAccLatencyUnprunedPoint(t *testing.T) {
	in := &inputs{train: &trainSummary{TestAcc: 0.9}, compressed: &trainSummary{TestAcc: 0.88},
		compression: &compression{Before: networkCost{PredictedMs: 3}, Verify: &verification{BaseMeasuredMs: 3.2}},
		latency:     &hwprofile.LatencyReport{UnprunedMs: 3.1, MeasuredMs: 1.7}}
	unpruned := func() point {
		for _, p := range in.accLatencyPoints() {
			if strings.HasPrefix(p.name, "unpruned") {
				return p
			}
		}
		t.Fatal("no unpruned point")
		return point{}
	}
	if p := unpruned(); p.ms != 3.1 || !p.measured {
		t.Fatalf("unpruned at %+v, want 3.1 ms (timed beside the model at export)", p)
	}
	in.latency.UnprunedMs = 0
	if p := unpruned(); p.ms != 3.2 || !p.measured {
		t.Fatalf("unpruned at %+v, want 3.2 ms (timed while compressing)", p)
	}
	in.compression.Verify = nil
	if p := unpruned(); p.ms != 3 || p.measured {
		t.Fatalf("unpruned at %+v, want 3 ms predicted", p)
	}
}
