package dataset

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/internal/allocs"
)

// cifarPixel is the value the test writes at channel c, row y, column x of
// record i: distinct across channels and positions so misplacement shows.
func cifarPixel(i, c, y, x int) byte { return byte(i*31 + c*85 + y*7 + x*3) }

// cifarRecords builds n records in the binary format: label byte, then the
// R plane, G plane, B plane, each row-major, written pixel by pixel from
// (c, y, x) independently of the reader's layout.
func cifarRecords(n, first int, label func(i int) byte) []byte {
	var out []byte
	for i := first; i < first+n; i++ {
		out = append(out, label(i))
		for c := 0; c < 3; c++ {
			for y := 0; y < 32; y++ {
				for x := 0; x < 32; x++ {
					out = append(out, cifarPixel(i, c, y, x))
				}
			}
		}
	}
	return out
}

// writeCIFARDir writes 5 training batches of per records and a test batch of
// per records.
func writeCIFARDir(t *testing.T, dir string, per int) {
	t.Helper()
	lab := func(i int) byte { return byte(i % 10) }
	for b := 1; b <= 5; b++ {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("data_batch_%d.bin", b)), cifarRecords(per, (b-1)*per, lab))
	}
	writeFile(t, filepath.Join(dir, "test_batch.bin"), cifarRecords(per, 1000, lab))
}

func TestLoadCIFAR10(t *testing.T) {
	const per = 4
	dir := t.TempDir()
	writeCIFARDir(t, dir, per)
	train, test, err := Load("cifar10", dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.N != 5*per || test.N != per || train.C != 3 || train.H != 32 || train.W != 32 || train.Classes != 10 {
		t.Fatalf("train N=%d test N=%d shape %dx%dx%d", train.N, test.N, train.C, train.H, train.W)
	}
	if err := train.Validate(); err != nil {
		t.Fatal(err)
	}
	check := func(s *Set, first int) {
		for i := 0; i < s.N; i++ {
			if int(s.Labels[i]) != (first+i)%10 {
				t.Fatalf("%s: label %d is %d, want %d", s.Name, i, s.Labels[i], (first+i)%10)
			}
			for c := 0; c < 3; c++ {
				for y := 0; y < 32; y++ {
					for x := 0; x < 32; x++ {
						got := s.Images[((i*3+c)*32+y)*32+x]
						if want := cifarPixel(first+i, c, y, x); got != want {
							t.Fatalf("%s: sample %d c=%d y=%d x=%d is %d, want %d", s.Name, i, c, y, x, got, want)
						}
					}
				}
			}
		}
	}
	check(train, 0)
	check(test, 1000)
	if train.ClassNames[0] != "airplane" || train.ClassNames[9] != "truck" {
		t.Fatalf("default class names %v", train.ClassNames)
	}

	// Class names from batches.meta.txt, and the archive's subdirectory.
	root := t.TempDir()
	sub := filepath.Join(root, "cifar-10-batches-bin")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCIFARDir(t, sub, 2)
	names := "a0\na1\na2\na3\na4\na5\na6\na7\na8\na9\n\n"
	writeFile(t, filepath.Join(sub, "batches.meta.txt"), []byte(names))
	train, _, err = LoadCIFAR10(root)
	if err != nil {
		t.Fatal(err)
	}
	if train.N != 10 || train.ClassNames[3] != "a3" {
		t.Fatalf("subdirectory load: N=%d names %v", train.N, train.ClassNames)
	}
}

func TestLoadCIFAR10Errors(t *testing.T) {
	lab := func(i int) byte { return byte(i % 10) }
	cases := []struct {
		name   string
		mutate func(dir string)
		file   string
		want   string
	}{
		{"missing batch", func(dir string) { os.Remove(filepath.Join(dir, "data_batch_3.bin")) },
			"data_batch_3.bin", "missing file"},
		{"missing test", func(dir string) { os.Remove(filepath.Join(dir, "test_batch.bin")) },
			"test_batch.bin", "missing file"},
		{"bad length", func(dir string) {
			writeFile(t, filepath.Join(dir, "data_batch_2.bin"), cifarRecords(3, 0, lab)[:3*cifarRecord-5])
		}, "data_batch_2.bin", "not a positive multiple of the 3073-byte"},
		{"empty file", func(dir string) { writeFile(t, filepath.Join(dir, "test_batch.bin"), nil) },
			"test_batch.bin", "length 0"},
		{"label too big", func(dir string) {
			writeFile(t, filepath.Join(dir, "data_batch_5.bin"), cifarRecords(3, 0, func(i int) byte { return byte(9 + i) }))
		}, "data_batch_5.bin", "label 10 of record 1 out of range 0..9"},
		{"short meta", func(dir string) { writeFile(t, filepath.Join(dir, "batches.meta.txt"), []byte("cat\ndog\n")) },
			"batches.meta.txt", "2 class names, want 10"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCIFARDir(t, dir, 3)
			tc.mutate(dir)
			_, _, err := LoadCIFAR10(dir)
			path := filepath.Join(dir, tc.file)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v should name %s and say %q", err, path, tc.want)
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "nowhere")
	_, _, err := LoadCIFAR10(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing directory: %v", err)
	}
	if _, _, err := Load("cifar10", ""); err == nil || !strings.Contains(err.Error(), "no directory") {
		t.Fatalf("cifar10 without directory: %v", err)
	}
}

// A batch file longer than any CIFAR-10 batch is refused by its length,
// before it is read into memory.
func TestLoadCIFAR10FileTooLong(t *testing.T) {
	dir := t.TempDir()
	writeCIFARDir(t, dir, 3)
	p := filepath.Join(dir, "data_batch_4.bin")
	// A sparse file of 60,001 all-zero records (label 0): valid records,
	// one more than a batch file may hold.
	if err := os.Truncate(p, (cifarMaxRecords+1)*cifarRecord); err != nil {
		t.Fatal(err)
	}
	var err error
	if a := allocs.During(func() { _, _, err = LoadCIFAR10(dir) }); a > 8<<20 {
		t.Errorf("loading allocated %d bytes, want under 8 MiB", a)
	}
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "the most one batch file may hold") {
		t.Fatalf("error %v should name %s and its bound", err, p)
	}
}
