package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// IDX magic numbers: zero, zero, type 0x08 (unsigned byte), dimension count.
const (
	idxImagesMagic = 2051 // 0x00000803: ubyte, 3 dimensions (N, rows, cols)
	idxLabelsMagic = 2049 // 0x00000801: ubyte, 1 dimension (N)
	idxClasses     = 10   // MNIST and Fashion-MNIST both have ten classes
)

// FashionMNISTClasses are the Fashion-MNIST class names by label.
var FashionMNISTClasses = []string{
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}

// MNISTClasses are the MNIST class names (digits) by label.
var MNISTClasses = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

// readMaybeGzip returns the content of path, decompressed when it starts
// with the gzip magic bytes (the name is not trusted: Debian ships .gz files
// and some mirrors ship the same names already decompressed).
func readMaybeGzip(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(raw) < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
		return raw, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("reading %s: bad gzip header: %w", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("reading %s: decompressing gzip: %w", path, err)
	}
	return data, nil
}

// ReadIDX reads an MNIST-family pair of IDX files (images: magic 2051,
// dimensions N x rows x cols; labels: magic 2049, N labels in 0..9), each
// either raw or gzip-compressed. The set has one channel.
func ReadIDX(imagesPath, labelsPath string) (*Set, error) {
	img, err := readMaybeGzip(imagesPath)
	if err != nil {
		return nil, err
	}
	if len(img) < 16 {
		return nil, fmt.Errorf("reading %s: truncated: %d bytes, an IDX image header needs 16", imagesPath, len(img))
	}
	if m := binary.BigEndian.Uint32(img[0:4]); m != idxImagesMagic {
		return nil, fmt.Errorf("reading %s: bad magic number %d, want %d (IDX unsigned-byte images, 3 dimensions)", imagesPath, m, idxImagesMagic)
	}
	n := uint64(binary.BigEndian.Uint32(img[4:8]))
	rows := uint64(binary.BigEndian.Uint32(img[8:12]))
	cols := uint64(binary.BigEndian.Uint32(img[12:16]))
	if n == 0 || rows == 0 || cols == 0 {
		return nil, fmt.Errorf("reading %s: bad dimensions %d images of %dx%d: every dimension must be positive", imagesPath, n, rows, cols)
	}
	body := img[16:]
	per := rows * cols // < 2^64: both factors are below 2^32
	if uint64(len(body))/per < n {
		return nil, fmt.Errorf("reading %s: truncated: header says %d images of %dx%d (%d bytes) but only %d bytes follow", imagesPath, n, rows, cols, n*per, len(body))
	}
	if uint64(len(body)) != n*per {
		return nil, fmt.Errorf("reading %s: %d trailing bytes after %d images of %dx%d", imagesPath, uint64(len(body))-n*per, n, rows, cols)
	}

	lab, err := readMaybeGzip(labelsPath)
	if err != nil {
		return nil, err
	}
	if len(lab) < 8 {
		return nil, fmt.Errorf("reading %s: truncated: %d bytes, an IDX label header needs 8", labelsPath, len(lab))
	}
	if m := binary.BigEndian.Uint32(lab[0:4]); m != idxLabelsMagic {
		return nil, fmt.Errorf("reading %s: bad magic number %d, want %d (IDX unsigned-byte labels, 1 dimension)", labelsPath, m, idxLabelsMagic)
	}
	nl := uint64(binary.BigEndian.Uint32(lab[4:8]))
	labels := lab[8:]
	if uint64(len(labels)) < nl {
		return nil, fmt.Errorf("reading %s: truncated: header says %d labels but only %d bytes follow", labelsPath, nl, len(labels))
	}
	if uint64(len(labels)) != nl {
		return nil, fmt.Errorf("reading %s: %d trailing bytes after %d labels", labelsPath, uint64(len(labels))-nl, nl)
	}
	if nl != n {
		return nil, fmt.Errorf("reading %s: %d labels but %s has %d images", labelsPath, nl, imagesPath, n)
	}
	for i, l := range labels {
		if l >= idxClasses {
			return nil, fmt.Errorf("reading %s: label %d of sample %d out of range 0..%d", labelsPath, l, i, idxClasses-1)
		}
	}
	return &Set{
		Name:    filepath.Base(imagesPath),
		Images:  body,
		Labels:  labels,
		N:       int(n),
		C:       1,
		H:       int(rows),
		W:       int(cols),
		Classes: idxClasses,
	}, nil
}

// findFile returns dir/name or dir/name.gz, whichever exists (raw first).
func findFile(dir, name string) (string, error) {
	for _, p := range []string{filepath.Join(dir, name), filepath.Join(dir, name+".gz")} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("looking for %s: %w", p, err)
		}
	}
	return "", fmt.Errorf("missing file %s (or %s.gz) in %s", name, name, dir)
}

// loadIDXDir loads the four standard MNIST-family files from dir.
func loadIDXDir(name, dir, hint string, classNames []string) (train, test *Set, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("dataset %s: directory %s does not exist%s", name, dir, hint)
		}
		return nil, nil, fmt.Errorf("dataset %s: %w", name, err)
	}
	if !st.IsDir() {
		return nil, nil, fmt.Errorf("dataset %s: %s is not a directory", name, dir)
	}
	load := func(prefix, part string) (*Set, error) {
		ip, err := findFile(dir, prefix+"-images-idx3-ubyte")
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w%s", name, err, hint)
		}
		lp, err := findFile(dir, prefix+"-labels-idx1-ubyte")
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w%s", name, err, hint)
		}
		s, err := ReadIDX(ip, lp)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w", name, err)
		}
		s.Name = name + "-" + part
		s.ClassNames = classNames
		return s, nil
	}
	if train, err = load("train", "train"); err != nil {
		return nil, nil, err
	}
	if test, err = load("t10k", "test"); err != nil {
		return nil, nil, err
	}
	if train.H != test.H || train.W != test.W {
		return nil, nil, fmt.Errorf("dataset %s: train images are %dx%d but test images are %dx%d", name, train.H, train.W, test.H, test.W)
	}
	return train, test, nil
}

// LoadFashionMNIST loads Fashion-MNIST's train and test sets from dir
// (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
// t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]).
func LoadFashionMNIST(dir string) (train, test *Set, err error) {
	hint := fmt.Sprintf(" (on Debian, install the package dataset-fashion-mnist, which puts the files in %s)", DefaultFashionMNISTDir)
	return loadIDXDir("fashion-mnist", dir, hint, FashionMNISTClasses)
}

// LoadMNIST loads MNIST's train and test sets from dir, with the same file
// names as Fashion-MNIST.
func LoadMNIST(dir string) (train, test *Set, err error) {
	return loadIDXDir("mnist", dir, "", MNISTClasses)
}
