package dataset

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
)

// Split is a recorded train/validation partition of a set's sample indices.
// It is written into a run directory as JSON; Hash lets a later stage (or a
// resumed run) prove it uses exactly the same partition.
type Split struct {
	Seed  uint64 `json:"seed"`
	Train []int  `json:"train"`
	Val   []int  `json:"val"`
	Hash  string `json:"hash"` // hex sha256 of the index lists, see splitHash
	// MadeBy records what made the split, so that a split left by another
	// configuration is not taken for this one's; nil in records written
	// before it existed (unknown, not wrong).
	MadeBy *SplitOrigin `json:"made_by,omitempty"`
	// TakenFrom is set in a copy of another run's split (the run
	// directory): compression's fine-tuning keeps its trained run's
	// validation images unseen, under a seed of its own.
	TakenFrom string `json:"taken_from,omitempty"`
}

// SplitOrigin is everything that decides a split (SplitTrainVal's
// arguments): the set by name (its size is checked by Check), the
// validation count and the seed.
type SplitOrigin struct {
	Data     string `json:"data"`
	ValCount int    `json:"val_count"`
	Seed     uint64 `json:"seed"`
}

// SplitTrainVal holds out valCount samples of s for validation, stratified
// by class: each class gives its share of valCount (largest remainder, ties
// to the lower class), chosen by a shuffle derived from seed. Both index
// lists are sorted ascending, so the record reads the same however it was
// produced; batchers shuffle them anyway.
func SplitTrainVal(s *Set, valCount int, seed uint64) (Split, error) {
	if err := s.Validate(); err != nil {
		return Split{}, fmt.Errorf("splitting: %w", err)
	}
	if valCount < 0 || valCount >= s.N {
		return Split{}, fmt.Errorf("splitting %s: validation count %d, want 0..%d (the set has %d samples)", s.Name, valCount, s.N-1, s.N)
	}
	byClass := make([][]int, s.Classes)
	for i, l := range s.Labels {
		byClass[l] = append(byClass[l], i)
	}
	quota := make([]int, s.Classes)
	rem := make([]int, s.Classes) // remainder numerators, compared exactly as integers
	given := 0
	for k, idx := range byClass {
		quota[k] = len(idx) * valCount / s.N
		rem[k] = len(idx) * valCount % s.N
		given += quota[k]
	}
	order := make([]int, s.Classes)
	for k := range order {
		order[k] = k
	}
	slices.SortStableFunc(order, func(a, b int) int { return rem[b] - rem[a] })
	for _, k := range order[:valCount-given] {
		quota[k]++
	}

	sp := Split{Seed: seed, Train: make([]int, 0, s.N-valCount), Val: make([]int, 0, valCount),
		MadeBy: &SplitOrigin{Data: s.Name, ValCount: valCount, Seed: seed}}
	for k, idx := range byClass {
		r := derive(tagSplit, seed, uint64(k))
		perm := slices.Clone(idx)
		for i := len(perm) - 1; i > 0; i-- {
			j := r.intn(i + 1)
			perm[i], perm[j] = perm[j], perm[i]
		}
		sp.Val = append(sp.Val, perm[:quota[k]]...)
		sp.Train = append(sp.Train, perm[quota[k]:]...)
	}
	slices.Sort(sp.Train)
	slices.Sort(sp.Val)
	sp.Hash = splitHash(sp.Train, sp.Val)
	return sp, nil
}

// splitHash is sha256 over "train", len, the indices as little-endian
// uint64s, then the same for "val": lengths are included so that moving an
// index from one list to the other always changes the hash.
func splitHash(train, val []int) string {
	h := sha256.New()
	var buf [8]byte
	for _, part := range []struct {
		name string
		idx  []int
	}{{"train", train}, {"val", val}} {
		h.Write([]byte(part.name))
		binary.LittleEndian.PutUint64(buf[:], uint64(len(part.idx)))
		h.Write(buf[:])
		for _, i := range part.idx {
			binary.LittleEndian.PutUint64(buf[:], uint64(i))
			h.Write(buf[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Check verifies that a (recorded) split fits s: the hash matches the index
// lists, and together they cover every sample of s exactly once. A split
// recorded for a set of another size, or edited by hand, is an error.
func (sp Split) Check(s *Set) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("checking split: %w", err)
	}
	if got := splitHash(sp.Train, sp.Val); got != sp.Hash {
		return fmt.Errorf("split for %s: hash %s does not match its index lists (computed %s): the record was altered", s.Name, sp.Hash, got)
	}
	if n := len(sp.Train) + len(sp.Val); n != s.N {
		return fmt.Errorf("split for %s: covers %d samples (%d train + %d val) but the set has %d: it was recorded for another set", s.Name, n, len(sp.Train), len(sp.Val), s.N)
	}
	seen := make([]bool, s.N)
	for _, part := range []struct {
		name string
		idx  []int
	}{{"train", sp.Train}, {"val", sp.Val}} {
		for _, i := range part.idx {
			if i < 0 || i >= s.N {
				return fmt.Errorf("split for %s: %s index %d out of range [0,%d)", s.Name, part.name, i, s.N)
			}
			if seen[i] {
				return fmt.Errorf("split for %s: index %d appears twice", s.Name, i)
			}
			seen[i] = true
		}
	}
	return nil
}
