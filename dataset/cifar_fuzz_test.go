package dataset

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/internal/allocs"
)

// FuzzReadCIFAR reads a CIFAR-10 batch file (readCIFARBatches, the file
// given once or, when twice is set, as two batches) and a batches.meta.txt
// (readCIFARMeta).
//
// It asserts: no panic; bad input is an error; a set that is returned is
// consistent (Set.Validate, 3x32x32, the file's records in order with
// labels 0..9) and class names are 10 non-empty trimmed lines; allocation
// stays below 8 x the input's bytes + 1 MiB (the file is read once, the set
// holds its pixels once per batch).
func FuzzReadCIFAR(f *testing.F) {
	rec := make([]byte, cifarRecord)
	for i := range rec {
		rec[i] = byte(i)
	}
	rec[0] = 7
	meta := []byte(strings.Join(CIFAR10Classes, "\n") + "\n")
	f.Add(rec, meta, false)
	f.Add(rec, meta, true)
	f.Add(rec[:cifarRecord-1], []byte("a\nb\n"), false)      // short record, 2 names
	f.Add(append([]byte{10}, rec[1:]...), []byte(""), false) // label out of range
	f.Add([]byte{}, []byte(" \n\r\n"), false)

	f.Fuzz(func(t *testing.T, batch, meta []byte, twice bool) {
		dir := t.TempDir()
		bp, mp := filepath.Join(dir, "data_batch_1.bin"), filepath.Join(dir, "batches.meta.txt")
		if err := os.WriteFile(bp, batch, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(mp, meta, 0o644); err != nil {
			t.Fatal(err)
		}
		paths := []string{bp}
		if twice {
			paths = append(paths, bp)
		}
		var s *Set
		var names []string
		var err, merr error
		alloc := allocs.During(func() {
			s, err = readCIFARBatches("fuzz", paths)
			names, merr = readCIFARMeta(mp)
		})
		if bound := 8*uint64(len(batch)+len(meta)) + 1<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for %d + %d input bytes: bound %d", alloc, len(batch), len(meta), bound)
		}
		if err == nil {
			s.ClassNames = CIFAR10Classes
			if verr := s.Validate(); verr != nil {
				t.Fatalf("returned an invalid set: %v", verr)
			}
			n := len(batch) / cifarRecord
			if s.C != 3 || s.H != 32 || s.W != 32 || s.N != len(paths)*n || len(s.Labels) != s.N || len(s.Images) != s.N*cifarPixels {
				t.Fatalf("set %d images of %dx%dx%d with %d pixel bytes and %d labels from %d bytes", s.N, s.C, s.H, s.W, len(s.Images), len(s.Labels), len(batch))
			}
			for i := range s.N {
				r := batch[(i%n)*cifarRecord:]
				if s.Labels[i] != r[0] || s.Labels[i] >= cifarClasses || !bytes.Equal(s.Images[i*cifarPixels:(i+1)*cifarPixels], r[1:cifarRecord]) {
					t.Fatalf("record %d read wrongly", i)
				}
			}
		}
		if merr == nil {
			if len(names) != cifarClasses {
				t.Fatalf("%d class names", len(names))
			}
			for _, n := range names {
				if n == "" || n != strings.TrimSpace(n) {
					t.Fatalf("class name %q", n)
				}
			}
		}
	})
}
