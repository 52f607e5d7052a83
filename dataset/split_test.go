package dataset

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestSplitTrainVal(t *testing.T) {
	s, err := Synthetic(1000, 1, 4, 4, 10, 5)
	if err != nil {
		t.Fatal(err)
	}
	a, err := SplitTrainVal(s, 100, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := SplitTrainVal(s, 100, 7)
	c, _ := SplitTrainVal(s, 100, 8)
	if !slices.Equal(a.Train, b.Train) || !slices.Equal(a.Val, b.Val) || a.Hash != b.Hash {
		t.Fatal("same seed gave different splits")
	}
	if slices.Equal(a.Val, c.Val) || a.Hash == c.Hash {
		t.Fatal("different seeds gave the same split")
	}
	if len(a.Val) != 100 || len(a.Train) != 900 {
		t.Fatalf("sizes %d/%d, want 900/100", len(a.Train), len(a.Val))
	}
	seen := make([]int, s.N)
	for _, i := range a.Train {
		seen[i]++
	}
	perClass := make([]int, s.Classes)
	for _, i := range a.Val {
		seen[i]++
		perClass[s.Labels[i]]++
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("index %d appears %d times across train and val", i, n)
		}
	}
	for k, n := range perClass {
		if n != 10 {
			t.Errorf("class %d has %d validation samples, want 10 (stratified)", k, n)
		}
	}
	if err := a.Check(s); err != nil {
		t.Fatal(err)
	}

	// The JSON record round-trips and still checks.
	data, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back Split
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Seed != a.Seed || back.Hash != a.Hash || !slices.Equal(back.Train, a.Train) || !slices.Equal(back.Val, a.Val) {
		t.Fatal("JSON round trip changed the split")
	}
	if err := back.Check(s); err != nil {
		t.Fatal(err)
	}

	// A split recorded for this set is refused on a set of another size.
	other, _ := Synthetic(1001, 1, 4, 4, 10, 5)
	if err := a.Check(other); err == nil || !strings.Contains(err.Error(), "covers 1000 samples") || !strings.Contains(err.Error(), "1001") {
		t.Fatalf("wrong-size set: %v", err)
	}
	small, _ := Synthetic(999, 1, 4, 4, 10, 5)
	if err := a.Check(small); err == nil {
		t.Fatal("split of 1000 accepted on a set of 999")
	}
	// Editing the record without recomputing the hash is caught.
	edited := back
	edited.Val = slices.Clone(back.Val)
	edited.Val[0], edited.Train = edited.Train[0], slices.Clone(back.Train)
	if err := edited.Check(s); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("edited split: %v", err)
	}
	// Moving an index between the lists changes the hash.
	if splitHash(a.Train[1:], append([]int{a.Train[0]}, a.Val...)) == a.Hash {
		t.Fatal("hash ignores which list an index is in")
	}

	// Uneven classes: quotas sum to valCount and follow class sizes.
	uneven := &Set{Name: "uneven", N: 10, C: 1, H: 1, W: 1, Classes: 3,
		Images: make([]uint8, 10), Labels: []uint8{0, 0, 0, 0, 0, 0, 1, 1, 1, 2}}
	sp, err := SplitTrainVal(uneven, 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, 3)
	for _, i := range sp.Val {
		counts[uneven.Labels[i]]++
	}
	// Shares 3, 1.5, 0.5: class 1 and 2 tie on remainder, the lower class wins.
	if !slices.Equal(counts, []int{3, 2, 0}) {
		t.Errorf("uneven quotas %v, want [3 2 0]", counts)
	}
	for _, bad := range []int{-1, 10, 11} {
		if _, err := SplitTrainVal(uneven, bad, 1); err == nil || !strings.Contains(err.Error(), "validation count") || !strings.Contains(err.Error(), "uneven") {
			t.Errorf("valCount %d: %v", bad, err)
		}
	}
	if sp0, err := SplitTrainVal(uneven, 0, 1); err != nil || len(sp0.Val) != 0 || len(sp0.Train) != 10 {
		t.Errorf("valCount 0: %v %v", sp0, err)
	}
}
