package stats

import (
	"math"
	"testing"
)

func TestSpearman(t *testing.T) {
	if r := Spearman([]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}); math.Abs(r-1) > 1e-12 {
		t.Errorf("identical order: %g", r)
	}
	if r := Spearman([]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}); math.Abs(r+1) > 1e-12 {
		t.Errorf("reversed order: %g", r)
	}
	if r := Spearman([]float64{1, 1, 2}, []float64{5, 5, 7}); math.Abs(r-1) > 1e-12 {
		t.Errorf("ties: %g", r)
	}
	// Brute force on a small case: Pearson's correlation of the ranks
	// written out by hand (x ranks 1,3,2,4; y ranks 2,1,3,4).
	x, y := []float64{0.1, 0.9, 0.5, 2}, []float64{5, 1, 7, 8}
	rx, ry := []float64{1, 3, 2, 4}, []float64{2, 1, 3, 4}
	var sxy, sxx, syy float64
	for i := range rx {
		sxy += (rx[i] - 2.5) * (ry[i] - 2.5)
		sxx += (rx[i] - 2.5) * (rx[i] - 2.5)
		syy += (ry[i] - 2.5) * (ry[i] - 2.5)
	}
	if r, want := Spearman(x, y), sxy/math.Sqrt(sxx*syy); math.Abs(r-want) > 1e-12 {
		t.Errorf("Spearman = %g, want %g", r, want)
	}
	if r := Spearman([]float64{1, 1, 1}, []float64{1, 2, 3}); r != 0 {
		t.Errorf("constant sample: %g, want 0", r)
	}
}

func TestMedian(t *testing.T) {
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("odd: %g", m)
	}
	v := []float64{4, 1, 3, 2}
	if m := Median(v); m != 2.5 {
		t.Errorf("even: %g", m)
	}
	if v[0] != 4 {
		t.Error("Median sorted its argument")
	}
}
