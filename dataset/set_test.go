package dataset

import (
	"math"
	"strings"
	"testing"
)

func TestStatsAgainstNaive(t *testing.T) {
	s, err := Synthetic(37, 3, 5, 4, 4, 9)
	if err != nil {
		t.Fatal(err)
	}
	mean, std := s.Stats()
	plane := s.H * s.W
	for c := 0; c < s.C; c++ {
		// Two-pass float64 reference over the values in [0,1].
		var vals []float64
		for i := 0; i < s.N; i++ {
			for _, v := range s.Images[(i*s.C+c)*plane : (i*s.C+c+1)*plane] {
				vals = append(vals, float64(v)/255)
			}
		}
		m := 0.0
		for _, v := range vals {
			m += v
		}
		m /= float64(len(vals))
		variance := 0.0
		for _, v := range vals {
			variance += (v - m) * (v - m)
		}
		sd := math.Sqrt(variance / float64(len(vals)))
		if math.Abs(float64(mean[c])-m) > 1e-6 || math.Abs(float64(std[c])-sd) > 1e-6 {
			t.Errorf("channel %d: Stats %v %v, reference %v %v", c, mean[c], std[c], m, sd)
		}
	}
	// Hand-made: one channel of 0 and 255 in equal numbers: mean 0.5, std 0.5.
	h := &Set{N: 2, C: 1, H: 1, W: 2, Classes: 1, Images: []uint8{0, 255, 255, 0}, Labels: []uint8{0, 0}}
	mean, std = h.Stats()
	if mean[0] != 0.5 || std[0] != 0.5 {
		t.Errorf("hand-made set: mean %v std %v, want 0.5 0.5", mean[0], std[0])
	}
}

func TestValidateAndSubset(t *testing.T) {
	good := func() *Set {
		return &Set{Name: "hand", N: 2, C: 1, H: 2, W: 1, Classes: 3, Images: []uint8{1, 2, 3, 4}, Labels: []uint8{2, 0}}
	}
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		mutate func(s *Set)
		want   string
	}{
		{func(s *Set) { s.Images = s.Images[:3] }, "len(Images) = 3"},
		{func(s *Set) { s.Labels = s.Labels[:1] }, "len(Labels) = 1"},
		{func(s *Set) { s.Labels[1] = 3 }, "label of sample 1 is 3"},
		{func(s *Set) { s.W = 0 }, "non-positive"},
		{func(s *Set) { s.ClassNames = []string{"a"} }, "1 class names for 3 classes"},
	}
	for _, b := range bad {
		s := good()
		b.mutate(s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), "hand") {
			t.Errorf("error %v should name the set and say %q", err, b.want)
		}
	}
	sub, err := good().Subset("rev", []int{1, 0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if sub.N != 3 || string(sub.Images) != string([]uint8{3, 4, 1, 2, 3, 4}) || string(sub.Labels) != string([]uint8{0, 2, 0}) {
		t.Fatalf("subset images %v labels %v", sub.Images, sub.Labels)
	}
	if _, err := good().Subset("x", []int{2}); err == nil || !strings.Contains(err.Error(), "index 2") {
		t.Fatalf("out-of-range subset: %v", err)
	}
}

func TestLoadNames(t *testing.T) {
	_, _, err := Load("imagenet", "")
	if err == nil || !strings.Contains(err.Error(), "imagenet") || !strings.Contains(err.Error(), "fashion-mnist") {
		t.Fatalf("unknown dataset: %v", err)
	}
	train, test, err := Load("synthetic", "")
	if err != nil {
		t.Fatal(err)
	}
	if train.N != syntheticTrain || test.N != syntheticTest || train.C != 1 || train.H != 28 || train.W != 28 || train.Classes != 10 {
		t.Fatalf("synthetic preset: %d/%d samples of %dx%dx%d", train.N, test.N, train.C, train.H, train.W)
	}
}

// nearestCentroidAccuracy trains a nearest-class-mean classifier on train
// and returns its accuracy on test: a cheap proof that a set is learnable.
func nearestCentroidAccuracy(train, test *Set) float64 {
	per := train.SampleSize()
	cent := make([]float64, train.Classes*per)
	counts := train.LabelCounts()
	for i := 0; i < train.N; i++ {
		l := int(train.Labels[i])
		for p, v := range train.Images[i*per : (i+1)*per] {
			cent[l*per+p] += float64(v) / float64(counts[l])
		}
	}
	correct := 0
	for i := 0; i < test.N; i++ {
		best, bestD := -1, math.Inf(1)
		for k := 0; k < train.Classes; k++ {
			d := 0.0
			for p, v := range test.Images[i*per : (i+1)*per] {
				e := float64(v) - cent[k*per+p]
				d += e * e
			}
			if d < bestD {
				best, bestD = k, d
			}
		}
		if best == int(test.Labels[i]) {
			correct++
		}
	}
	return float64(correct) / float64(test.N)
}

func TestSynthetic(t *testing.T) {
	a, err := Synthetic(500, 3, 12, 10, 5, 42)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Synthetic(500, 3, 12, 10, 5, 42)
	c, _ := Synthetic(500, 3, 12, 10, 5, 43)
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if string(a.Images) != string(b.Images) || string(a.Labels) != string(b.Labels) {
		t.Fatal("same seed gave different sets")
	}
	if string(a.Images) == string(c.Images) {
		t.Fatal("different seeds gave the same images")
	}
	for k, n := range a.LabelCounts() {
		if n != 100 {
			t.Fatalf("class %d has %d samples, want 100 (balanced)", k, n)
		}
	}
	// Learnable: a nearest-centroid classifier beats chance (20%) by far;
	// with labels shuffled independently of images it must not.
	train, test, err := splitHeadTail(a, 400)
	if err != nil {
		t.Fatal(err)
	}
	acc := nearestCentroidAccuracy(train, test)
	t.Logf("nearest-centroid accuracy %.3f", acc)
	if acc < 0.9 {
		t.Errorf("nearest-centroid accuracy %.3f, want >= 0.9", acc)
	}
	trainS, testS, _ := splitHeadTail(&Set{Name: "shuffled", N: a.N, C: a.C, H: a.H, W: a.W, Classes: a.Classes, Images: a.Images, Labels: c.Labels}, 400)
	if acc := nearestCentroidAccuracy(trainS, testS); acc > 0.45 {
		t.Errorf("accuracy %.3f with unrelated labels: the test would pass on anything", acc)
	}
	for _, bad := range [][5]int{{0, 1, 2, 2, 2}, {5, 0, 2, 2, 2}, {5, 1, 2, 2, 0}, {5, 1, 2, 2, 300}} {
		if _, err := Synthetic(bad[0], bad[1], bad[2], bad[3], bad[4], 1); err == nil || !strings.Contains(err.Error(), "synthetic") {
			t.Errorf("Synthetic%v: error %v", bad, err)
		}
	}
}
