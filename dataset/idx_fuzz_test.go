package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math/bits"
	"os"
	"path/filepath"
	"testing"

	"bayesnas/internal/allocs"
)

// idxFuzzLimits keeps the fuzzer's gzip inputs, whose claims are bounded by
// the limits rather than by the file, from allocating much per input.
var idxFuzzLimits = IDXLimits{MaxImages: 1 << 12, MaxBytes: 1 << 20}

// idxFile is an IDX file: the header's 32-bit words, then the body.
func idxFile(words []uint32, body []byte) []byte {
	b := make([]byte, 4*len(words), 4*len(words)+len(body))
	for i, w := range words {
		binary.BigEndian.PutUint32(b[4*i:], w)
	}
	return append(b, body...)
}

// FuzzReadIDX reads an IDX image file and an IDX label file, the image file
// gzip-compressed when gz is set (so that the fuzzer mutates what is inside
// the stream, not the stream), with ReadIDXLimited at idxFuzzLimits and,
// for uncompressed files, also with ReadIDX at DefaultIDXLimits.
//
// It asserts: no panic; bad input is an error; a set that is returned is
// consistent (Set.Validate, N*H*W image bytes, N labels each 0..9) and both
// limits agree on it; allocation stays below 4 x the input's bytes +
// min(what the header claims, idxFuzzLimits.MaxBytes) + 1 MiB. (For a gzip
// file the body the header claims is allocated before it is inflated, so the
// bound includes the claim; it is capped by the limit, not by the file.)
func FuzzReadIDX(f *testing.F) {
	pixels := make([]byte, 3*4*5)
	for i := range pixels {
		pixels[i] = byte(7 * i)
	}
	img := idxFile([]uint32{idxImagesMagic, 3, 4, 5}, pixels)
	lab := idxFile([]uint32{idxLabelsMagic, 3}, []byte{0, 9, 4})
	f.Add(img, lab, false)
	f.Add(img, lab, true)
	f.Add(img[:20], lab, false)                                                          // truncated body
	f.Add(idxFile([]uint32{idxImagesMagic, 1 << 20, 28, 28}, nil), lab, true)            // claims 784 MB
	f.Add(idxFile([]uint32{idxImagesMagic, 3, 0xffffffff, 0xffffffff}, nil), lab, false) // overflowing claim
	f.Add(img, idxFile([]uint32{idxLabelsMagic, 3}, []byte{0, 10, 4}), false)            // label out of range
	f.Add(img, idxFile([]uint32{idxLabelsMagic, 2}, []byte{0, 1}), false)                // count mismatch
	f.Add(append(img, 0), lab, true)                                                     // trailing byte

	f.Fuzz(func(t *testing.T, images, labels []byte, gz bool) {
		dir := t.TempDir()
		ip, lp := filepath.Join(dir, "images"), filepath.Join(dir, "labels")
		onDisk := images
		if gz {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(images)
			zw.Close()
			onDisk = buf.Bytes()
		}
		if err := os.WriteFile(ip, onDisk, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(lp, labels, 0o644); err != nil {
			t.Fatal(err)
		}
		claim := uint64(0) // what the header claims, capped by the limit
		if len(images) >= 16 {
			nr := uint64(binary.BigEndian.Uint32(images[4:])) * uint64(binary.BigEndian.Uint32(images[8:]))
			hi, lo := bits.Mul64(nr, uint64(binary.BigEndian.Uint32(images[12:])))
			claim = uint64(idxFuzzLimits.MaxBytes)
			if hi == 0 {
				claim = min(lo, claim)
			}
		}
		var s *Set
		var err error
		alloc := allocs.During(func() { s, err = ReadIDXLimited(ip, lp, idxFuzzLimits) })
		if bound := 4*uint64(len(images)+len(labels)) + claim + 1<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for %d + %d input bytes (header claims %d): bound %d", alloc, len(images), len(labels), claim, bound)
		}
		if err != nil {
			if s != nil {
				t.Fatalf("error %v with a set", err)
			}
		} else {
			if verr := s.Validate(); verr != nil {
				t.Fatalf("returned an invalid set: %v", verr)
			}
			if s.C != 1 || len(s.Images) != s.N*s.H*s.W || len(s.Labels) != s.N {
				t.Fatalf("set %d images of %dx%dx%d with %d pixel bytes and %d labels", s.N, s.C, s.H, s.W, len(s.Images), len(s.Labels))
			}
			for i, l := range s.Labels {
				if l >= idxClasses {
					t.Fatalf("label %d of sample %d", l, i)
				}
			}
		}
		if gz {
			return
		}
		d, derr := ReadIDX(ip, lp)
		switch {
		case err == nil && derr != nil:
			t.Fatalf("accepted within %+v but refused within the defaults: %v", idxFuzzLimits, derr)
		case err == nil && (d.N != s.N || d.H != s.H || d.W != s.W || !bytes.Equal(d.Images, s.Images) || !bytes.Equal(d.Labels, s.Labels)):
			t.Fatalf("the two limits read different sets")
		}
	})
}
