// Package dataset reads image classification sets (IDX for MNIST and
// Fashion-MNIST, the CIFAR-10 binary format, a generated synthetic set),
// records train/validation splits, and turns samples into normalised,
// augmented float32 batches deterministically.
//
// Images stay as raw bytes in memory (Fashion-MNIST is 47 MB as bytes, four
// times that as float32) and are converted only when a batch is filled.
package dataset

import (
	"fmt"
	"math"
	"strings"
)

// Set is a labelled image set held as raw pixel bytes.
type Set struct {
	Name       string
	Images     []uint8 // N*C*H*W bytes, NCHW: sample i starts at i*C*H*W
	Labels     []uint8 // N labels, each < Classes
	N, C, H, W int
	Classes    int
	ClassNames []string // len Classes
}

// SampleSize is the number of bytes (and of float32 values in a batch) of
// one sample.
func (s *Set) SampleSize() int { return s.C * s.H * s.W }

// Validate checks that the fields of s agree with each other, so code
// handed a hand-built Set fails with an error rather than an index panic.
func (s *Set) Validate() error {
	if s == nil {
		return fmt.Errorf("dataset: nil set")
	}
	name := s.Name
	if name == "" {
		name = "(unnamed)"
	}
	switch {
	case s.N <= 0:
		return fmt.Errorf("dataset %s: N = %d, want > 0", name, s.N)
	case s.C <= 0 || s.H <= 0 || s.W <= 0:
		return fmt.Errorf("dataset %s: sample shape %dx%dx%d (CxHxW) has a non-positive dimension", name, s.C, s.H, s.W)
	case s.Classes <= 0 || s.Classes > 256:
		return fmt.Errorf("dataset %s: Classes = %d, want 1..256 (labels are bytes)", name, s.Classes)
	case len(s.Images) != s.N*s.SampleSize():
		return fmt.Errorf("dataset %s: len(Images) = %d, want N*C*H*W = %d", name, len(s.Images), s.N*s.SampleSize())
	case len(s.Labels) != s.N:
		return fmt.Errorf("dataset %s: len(Labels) = %d, want N = %d", name, len(s.Labels), s.N)
	case s.ClassNames != nil && len(s.ClassNames) != s.Classes:
		return fmt.Errorf("dataset %s: %d class names for %d classes", name, len(s.ClassNames), s.Classes)
	}
	for i, l := range s.Labels {
		if int(l) >= s.Classes {
			return fmt.Errorf("dataset %s: label of sample %d is %d, want < %d classes", name, i, l, s.Classes)
		}
	}
	return nil
}

// Stats returns the per-channel mean and (population) standard deviation of
// the pixel values scaled to [0,1]. It counts byte values in a histogram, so
// the sums are exact integers and the result does not depend on summation
// order.
func (s *Set) Stats() (mean, std []float32) {
	plane := s.H * s.W
	mean = make([]float32, s.C)
	std = make([]float32, s.C)
	for c := 0; c < s.C; c++ {
		var hist [256]uint64
		for i := 0; i < s.N; i++ {
			off := (i*s.C + c) * plane
			for _, v := range s.Images[off : off+plane] {
				hist[v]++
			}
		}
		var sum, sumSq, count float64
		for v, k := range hist {
			fk := float64(k)
			count += fk
			sum += fk * float64(v)
			sumSq += fk * float64(v) * float64(v)
		}
		if count == 0 {
			continue
		}
		m := sum / count
		variance := sumSq/count - m*m
		if variance < 0 {
			variance = 0
		}
		mean[c] = float32(m / 255)
		std[c] = float32(math.Sqrt(variance) / 255)
	}
	return mean, std
}

// LabelCounts returns how many samples each class has.
func (s *Set) LabelCounts() []int {
	counts := make([]int, s.Classes)
	for _, l := range s.Labels {
		if int(l) < len(counts) {
			counts[l]++
		}
	}
	return counts
}

// Subset copies the samples at indices (in that order) into a new set.
func (s *Set) Subset(name string, indices []int) (*Set, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(indices) == 0 {
		return nil, fmt.Errorf("dataset %s: empty subset %q", s.Name, name)
	}
	per := s.SampleSize()
	out := &Set{
		Name: name, N: len(indices), C: s.C, H: s.H, W: s.W,
		Classes: s.Classes, ClassNames: s.ClassNames,
		Images: make([]uint8, len(indices)*per),
		Labels: make([]uint8, len(indices)),
	}
	for j, i := range indices {
		if i < 0 || i >= s.N {
			return nil, fmt.Errorf("dataset %s: subset %q: index %d (position %d) out of range [0,%d)", s.Name, name, i, j, s.N)
		}
		copy(out.Images[j*per:(j+1)*per], s.Images[i*per:(i+1)*per])
		out.Labels[j] = s.Labels[i]
	}
	return out, nil
}

// Indices returns 0..N-1, for batching a whole set.
func (s *Set) Indices() []int {
	idx := make([]int, s.N)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// DefaultFashionMNISTDir is where the Debian package dataset-fashion-mnist
// installs the files.
const DefaultFashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// Names lists the names Load accepts.
var Names = []string{"fashion-mnist", "mnist", "cifar10", "synthetic"}

// Synthetic preset used by Load("synthetic"): Fashion-MNIST's shape so that
// configurations written for it run unchanged, small enough for smoke runs.
const (
	syntheticTrain = 1024
	syntheticTest  = 256
	syntheticSeed  = 1
)

// Load returns the train and test sets of a named dataset. dir may be empty
// for "fashion-mnist" (the Debian package's directory) and is ignored for
// "synthetic"; "mnist" and "cifar10" need it.
func Load(name, dir string) (train, test *Set, err error) {
	switch strings.ToLower(name) {
	case "fashion-mnist", "fashion_mnist", "fashionmnist":
		if dir == "" {
			dir = DefaultFashionMNISTDir
		}
		return LoadFashionMNIST(dir)
	case "mnist":
		if dir == "" {
			return nil, nil, fmt.Errorf("dataset mnist: no directory given (it needs train-images-idx3-ubyte[.gz] and the other IDX files)")
		}
		return LoadMNIST(dir)
	case "cifar10", "cifar-10":
		if dir == "" {
			return nil, nil, fmt.Errorf("dataset cifar10: no directory given (it needs data_batch_1.bin .. data_batch_5.bin and test_batch.bin)")
		}
		return LoadCIFAR10(dir)
	case "synthetic":
		all, err := Synthetic(syntheticTrain+syntheticTest, 1, 28, 28, 10, syntheticSeed)
		if err != nil {
			return nil, nil, err
		}
		return splitHeadTail(all, syntheticTrain)
	}
	return nil, nil, fmt.Errorf("dataset: unknown dataset %q (known: %s)", name, strings.Join(Names, ", "))
}

// splitHeadTail cuts a set into its first n samples and the rest.
func splitHeadTail(s *Set, n int) (head, tail *Set, err error) {
	idx := s.Indices()
	if head, err = s.Subset(s.Name+"-train", idx[:n]); err != nil {
		return nil, nil, err
	}
	if tail, err = s.Subset(s.Name+"-test", idx[n:]); err != nil {
		return nil, nil, err
	}
	return head, tail, nil
}
