package pipeline

import (
	"errors"
	"math"
	"testing"

	"bayesnas/compress"
	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/nn"
)

// macsLatency prices a network by its MACs: a stand-in profile.
type macsLatency struct{}

func (macsLatency) LatencyMs(g *models.Graph, _ []*nn.Param) (float64, error) {
	n, err := g.Count()
	if err != nil {
		return 0, err
	}
	return float64(n.MACs) / 1e6, nil
}

// Verification on a device the profile under-predicts (measured = 1.4 x
// predicted + a fixed cost): the first selection misses, the re-selections
// converge to one under the goal, and every try is recorded; a device no
// selection can satisfy is ErrBudget. Over-prediction loosens the selection
// toward the goal.
func TestVerifyOnDevice(t *testing.T) {
	g, err := models.PyramidNet(models.PyramidNetConfig{BlocksPerStage: 2, Alpha: 24, Groups: 2, StemChannels: 16,
		Input: [3]int{1, 16, 16}, Classes: 10})
	if err != nil {
		t.Fatal(err)
	}
	params, err := export.RandomParams(g, 1)
	if err != nil {
		t.Fatal(err)
	}
	lat := macsLatency{}
	base, err := lat.LatencyMs(g, params)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		scale, plus float64
	}{{"under-predicts", 1.4, 0.02 * base}, {"over-predicts", 0.6, 0}} {
		baseMeasured := tc.scale*base + tc.plus
		ver := &Verification{BaseMeasuredMs: baseMeasured, BasePredictedMs: base, Margin: 0.05, GoalMs: 0.5 * baseMeasured * 0.95}
		// A fraction budget's goal follows the unpruned network timed
		// beside each selection: the device runs every other call 1.5x
		// slower, both networks alike.
		calls := 0
		device := func(g *models.Graph, p []*nn.Param, _ float64) (VerifyTry, error) {
			ms, err := lat.LatencyMs(g, p)
			calls++
			slow := 1 + 0.5*float64(calls%2)
			return VerifyTry{MeasuredMs: slow * (tc.scale*ms + tc.plus), BaseMs: slow * baseMeasured, GoalMs: slow * ver.GoalMs}, err
		}
		// The first target is the goal itself, as if the profile's error
		// on the unpruned network told nothing (the fixed cost makes it
		// wrong on smaller ones anyway).
		bopt := compress.BudgetOptions{Latency: lat, BudgetMs: ver.GoalMs, Multiple: 4,
			Groups: compress.GroupOptions{ProtectStem: true}}
		reselect := func(b compress.BudgetOptions) (*compress.Selection, error) {
			return compress.Greedy(g, params, nil, "l1", b)
		}
		sel, err := reselect(bopt)
		if err != nil || !sel.MetBudget {
			t.Fatalf("%s: first selection: %v, %+v", tc.name, err, sel)
		}
		chosen, budget, err := verifyOnDevice(device, ver, g, params, sel, bopt, reselect, 6)
		if err != nil {
			t.Fatalf("%s: %v (tries %+v)", tc.name, err, ver.Tries)
		}
		if len(ver.Tries) < 2 {
			t.Fatalf("%s: the first selection (measured %.4f, goal %.4f) was kept without a re-selection", tc.name, ver.Tries[0].MeasuredMs, ver.GoalMs)
		}
		got := ver.Tries[ver.Chosen]
		pred, _ := lat.LatencyMs(g, params) // sanity: the graph itself is untouched
		if pred != base || !got.MetGoal || got.MeasuredMs > got.GoalMs || got.GoalMs != ver.GoalMs || math.Abs(budget-got.PredictedBudgetMs) > 1e-6 || len(chosen.Removed) != got.Removed {
			t.Fatalf("%s: chosen %+v, budget %v, goal %v, removed %d", tc.name, got, budget, ver.GoalMs, len(chosen.Removed))
		}
		// The chosen network is the slowest one under the goal.
		for _, tr := range ver.Tries {
			if tr.MetGoal && tr.MeasuredMs/tr.GoalMs > got.MeasuredMs/got.GoalMs {
				t.Fatalf("%s: chose %+v over %+v", tc.name, got, tr)
			}
		}
		if tc.scale > 1 && ver.Tries[0].MetGoal {
			t.Fatalf("%s: the first selection met the goal on a device 1.4x slower than predicted: %+v", tc.name, ver.Tries[0])
		}
		if tc.scale < 1 && got.MeasuredMs < 0.8*got.GoalMs {
			t.Fatalf("%s: the selection was not loosened toward the goal: %+v (goal %.4f, tries %+v)", tc.name, got, ver.GoalMs, ver.Tries)
		}
		t.Logf("%s: %d tries, chosen measured %.4f against goal %.4f", tc.name, len(ver.Tries), got.MeasuredMs, ver.GoalMs)
	}
	// A device far slower than any selection can make up for.
	slow := func(g *models.Graph, p []*nn.Param, _ float64) (VerifyTry, error) {
		return VerifyTry{MeasuredMs: 10 * base, GoalMs: base}, nil
	}
	ver := &Verification{GoalMs: base, Margin: 0.05}
	bopt := compress.BudgetOptions{Latency: lat, BudgetMs: 0.5 * base, Multiple: 4, Groups: compress.GroupOptions{ProtectStem: true}}
	reselect := func(b compress.BudgetOptions) (*compress.Selection, error) { return compress.Uniform(g, params, b) }
	sel, _ := reselect(bopt)
	if _, _, err := verifyOnDevice(slow, ver, g, params, sel, bopt, reselect, 4); !errors.Is(err, ErrBudget) || len(ver.Tries) == 0 {
		t.Fatalf("a device no selection satisfies: %v, tries %+v", err, ver.Tries)
	}
}
