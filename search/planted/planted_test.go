package planted

import (
	"slices"
	"testing"

	"bayesnas/models"
	"bayesnas/search"
)

func TestPairWins(t *testing.T) {
	wins, pairs := PairWins([]float64{3, 1}, []float64{2, 1, 0})
	// 3 beats all three; 1 loses to 2, ties 1, beats 0.
	if wins != 4.5 || pairs != 6 {
		t.Errorf("PairWins = %g of %g, want 4.5 of 6", wins, pairs)
	}
}

func TestTeacher(t *testing.T) {
	a, b := Teacher(3, PoolOps), Teacher(3, PoolOps)
	if !slices.EqualFunc(a.Normal, b.Normal, edgeEqual) || !slices.EqualFunc(a.Reduce, b.Reduce, edgeEqual) {
		t.Fatal("the same seed gave two teachers")
	}
	for _, cell := range [][]models.ProxyEdge{a.Normal, a.Reduce} {
		if len(cell) != a.Nodes {
			t.Errorf("cell %v: want one in-edge per intermediate node (%d)", cell, a.Nodes)
		}
		for i, e := range cell {
			if e.To != i+2 || e.From >= e.To || len(e.Ops) != 1 || !slices.Contains(PoolOps, e.Ops[0]) {
				t.Errorf("edge %+v", e)
			}
		}
	}
}

func edgeEqual(a, b models.ProxyEdge) bool {
	return a.From == b.From && a.To == b.To && slices.Equal(a.Ops, b.Ops)
}

func TestRecovery(t *testing.T) {
	teacher := Teacher(1, PoolOps)
	d := &search.Derivation{Normal: teacher.Normal, Reduce: teacher.Reduce}
	if p, r, k := Recovery(teacher, d); p != 1 || r != 1 || k != 2*teacher.Nodes {
		t.Errorf("the teacher itself: precision %g, recall %g, kept %d", p, r, k)
	}
	// One extra op on the first normal edge: precision drops, recall stays.
	extra := slices.Clone(teacher.Normal)
	e := extra[0]
	for _, op := range PoolOps {
		if !slices.Contains(e.Ops, op) {
			e.Ops = append(slices.Clone(e.Ops), op)
			break
		}
	}
	extra[0] = e
	d.Normal = extra
	if p, r, k := Recovery(teacher, d); p != 0.8 || r != 1 || k != 5 {
		t.Errorf("one extra op: precision %g, recall %g, kept %d; want 0.8, 1, 5", p, r, k)
	}
}
