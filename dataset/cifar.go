package dataset

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// CIFAR-10 binary format: each record is one label byte then a 32x32 image
// as the red plane, the green plane and the blue plane, each row-major. That
// is already NCHW, so a record's 3072 pixel bytes are copied as they are.
const (
	cifarSide    = 32
	cifarPixels  = 3 * cifarSide * cifarSide
	cifarRecord  = 1 + cifarPixels
	cifarClasses = 10
	// cifarMaxRecords bounds one batch file: CIFAR-10's hold 10,000 records
	// each; a file may hold the whole 60,000 (184 MB), not more.
	cifarMaxRecords = 60_000
)

// readCIFARFile returns the content of a batch file after checking its
// length against the record size and cifarMaxRecords, before anything is
// allocated (a file that is not regular, such as a pipe, is read at most
// one byte past the bound).
func readCIFARFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("reading %s: is a directory, not a CIFAR-10 batch file", p)
	}
	const max = cifarMaxRecords * cifarRecord
	tooLong := func(size int64) error {
		return fmt.Errorf("reading %s: length %d is more than %d CIFAR-10 records (%d bytes), the most one batch file may hold", p, size, cifarMaxRecords, int64(max))
	}
	if st.Mode().IsRegular() {
		if st.Size() > max {
			return nil, tooLong(st.Size())
		}
		if st.Size() == 0 || st.Size()%cifarRecord != 0 {
			return nil, fmt.Errorf("reading %s: length %d is not a positive multiple of the %d-byte CIFAR-10 record (1 label + 3x32x32 pixels)", p, st.Size(), cifarRecord)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if len(data) > max {
		return nil, tooLong(int64(len(data)))
	}
	return data, nil
}

// CIFAR10Classes are the CIFAR-10 class names by label, used when the
// directory has no batches.meta.txt.
var CIFAR10Classes = []string{
	"airplane", "automobile", "bird", "cat", "deer",
	"dog", "frog", "horse", "ship", "truck",
}

// readCIFARBatches reads and concatenates CIFAR-10 binary batch files.
func readCIFARBatches(name string, paths []string) (*Set, error) {
	s := &Set{Name: name, C: 3, H: cifarSide, W: cifarSide, Classes: cifarClasses}
	for _, p := range paths {
		data, err := readCIFARFile(p)
		if err != nil {
			return nil, err
		}
		if len(data) == 0 || len(data)%cifarRecord != 0 {
			return nil, fmt.Errorf("reading %s: length %d is not a positive multiple of the %d-byte CIFAR-10 record (1 label + 3x32x32 pixels)", p, len(data), cifarRecord)
		}
		n := len(data) / cifarRecord
		for i := 0; i < n; i++ {
			rec := data[i*cifarRecord : (i+1)*cifarRecord]
			if rec[0] >= cifarClasses {
				return nil, fmt.Errorf("reading %s: label %d of record %d out of range 0..%d", p, rec[0], i, cifarClasses-1)
			}
		}
		if s.Images == nil {
			// Most callers read 5 training batches of equal size: reserve
			// for all of them at once rather than growing 5 times.
			s.Images = make([]uint8, 0, len(paths)*n*cifarPixels)
			s.Labels = make([]uint8, 0, len(paths)*n)
		}
		for i := 0; i < n; i++ {
			rec := data[i*cifarRecord : (i+1)*cifarRecord]
			s.Labels = append(s.Labels, rec[0])
			s.Images = append(s.Images, rec[1:]...)
		}
		s.N += n
	}
	return s, nil
}

// readCIFARMeta reads class names, one per line, from batches.meta.txt.
func readCIFARMeta(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	if len(names) != cifarClasses {
		return nil, fmt.Errorf("reading %s: %d class names, want %d (one per line)", path, len(names), cifarClasses)
	}
	return names, nil
}

// LoadCIFAR10 loads CIFAR-10's binary version from dir: data_batch_1.bin ..
// data_batch_5.bin (train) and test_batch.bin (test), with class names from
// batches.meta.txt when present. If dir lacks the files but has the
// archive's cifar-10-batches-bin subdirectory, that is used.
func LoadCIFAR10(dir string) (train, test *Set, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("dataset cifar10: directory %s does not exist (it needs the binary version: data_batch_1.bin .. data_batch_5.bin, test_batch.bin)", dir)
		}
		return nil, nil, fmt.Errorf("dataset cifar10: %w", err)
	}
	if !st.IsDir() {
		return nil, nil, fmt.Errorf("dataset cifar10: %s is not a directory", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "test_batch.bin")); err != nil {
		sub := filepath.Join(dir, "cifar-10-batches-bin")
		if _, err := os.Stat(filepath.Join(sub, "test_batch.bin")); err == nil {
			dir = sub
		}
	}
	var trainPaths []string
	for i := 1; i <= 5; i++ {
		trainPaths = append(trainPaths, filepath.Join(dir, fmt.Sprintf("data_batch_%d.bin", i)))
	}
	testPath := filepath.Join(dir, "test_batch.bin")
	for _, p := range append(trainPaths, testPath) {
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, nil, fmt.Errorf("dataset cifar10: missing file %s (the binary version has data_batch_1.bin .. data_batch_5.bin and test_batch.bin)", p)
			}
			return nil, nil, fmt.Errorf("dataset cifar10: %w", err)
		}
	}
	names := CIFAR10Classes
	metaPath := filepath.Join(dir, "batches.meta.txt")
	if _, err := os.Stat(metaPath); err == nil {
		if names, err = readCIFARMeta(metaPath); err != nil {
			return nil, nil, fmt.Errorf("dataset cifar10: %w", err)
		}
	}
	if train, err = readCIFARBatches("cifar10-train", trainPaths); err != nil {
		return nil, nil, fmt.Errorf("dataset cifar10: %w", err)
	}
	if test, err = readCIFARBatches("cifar10-test", []string{testPath}); err != nil {
		return nil, nil, fmt.Errorf("dataset cifar10: %w", err)
	}
	train.ClassNames, test.ClassNames = names, names
	return train, test, nil
}
