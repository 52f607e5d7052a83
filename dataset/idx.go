package dataset

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
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

// IDXLimits bounds what an IDX header may claim, so that a corrupt or hostile
// file is refused before anything is allocated for it. Zero fields impose no
// bound beyond MaxBytes.
type IDXLimits struct {
	Rows, Cols int   // the image side every file of the dataset has (0: any)
	MaxImages  int   // most images (and labels) one file may hold
	MaxBytes   int64 // most bytes of pixels one file may hold
}

// DefaultIDXLimits are the limits of ReadIDX: any image size, at most
// 2^30 bytes of pixels (1 GiB) in one file.
var DefaultIDXLimits = IDXLimits{MaxImages: 1 << 30, MaxBytes: 1 << 30}

// MNISTIDXLimits are the limits for the MNIST family (MNIST, Fashion-MNIST and
// their 28x28 look-alikes such as KMNIST and EMNIST): 28x28 images, at most a
// million per file.
var MNISTIDXLimits = IDXLimits{Rows: 28, Cols: 28, MaxImages: 1_000_000, MaxBytes: 1_000_000 * 28 * 28}

// idxReader streams an IDX file, decompressing it when it starts with the
// gzip magic bytes (the name is not trusted: Debian ships .gz files and some
// mirrors ship the same names already decompressed). Nothing beyond the size
// the header states is ever read into memory, so a small gzip file that
// inflates to gigabytes (a decompression bomb) costs no more than its header
// claims, and the claim itself is bounded by the caller.
type idxReader struct {
	path string
	f    *os.File
	r    io.Reader
	gz   bool
	size int64 // the file's size when it is a regular, uncompressed file; else -1
}

func openIDX(path string) (*idxReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("reading %s: is a directory, not an IDX file", path)
	}
	br := bufio.NewReader(f)
	ir := &idxReader{path: path, f: f, r: br, size: -1}
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading %s: bad gzip header: %w", path, err)
		}
		ir.r, ir.gz = zr, true
	} else if st.Mode().IsRegular() {
		ir.size = st.Size()
	}
	return ir, nil
}

func (ir *idxReader) Close() error { return ir.f.Close() }

// readErr describes a read that stopped early: a truncated file, or a
// broken gzip stream.
func (ir *idxReader) readErr(err error, what string) error {
	if ir.gz && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading %s: decompressing gzip: %w", ir.path, err)
	}
	if ir.gz && errors.Is(err, io.ErrUnexpectedEOF) {
		// gzip reports a stream cut inside its blocks as an unexpected EOF too.
		return fmt.Errorf("reading %s: truncated: %s (decompressing gzip: %w)", ir.path, what, err)
	}
	return fmt.Errorf("reading %s: truncated: %s", ir.path, what)
}

// header reads the first n bytes.
func (ir *idxReader) header(n int, kind string) ([]byte, error) {
	h := make([]byte, n)
	if got, err := io.ReadFull(ir.r, h); err != nil {
		return nil, ir.readErr(err, fmt.Sprintf("%d bytes, an IDX %s header needs %d", got, kind, n))
	}
	return h, nil
}

// body reads exactly n bytes after a header of hdr bytes and checks that
// nothing follows them. For an uncompressed regular file the size is checked
// against the file's length before anything is allocated.
func (ir *idxReader) body(hdr int, n uint64, what string) ([]byte, error) {
	if ir.size >= 0 {
		have := uint64(ir.size - int64(hdr))
		if have < n {
			return nil, fmt.Errorf("reading %s: truncated: header says %s (%d bytes) but only %d bytes follow", ir.path, what, n, have)
		}
		if have > n {
			return nil, fmt.Errorf("reading %s: %d trailing bytes after %s", ir.path, have-n, what)
		}
	}
	b := make([]byte, n)
	if got, err := io.ReadFull(ir.r, b); err != nil {
		return nil, ir.readErr(err, fmt.Sprintf("header says %s (%d bytes) but only %d bytes follow", what, n, got))
	}
	var one [1]byte
	if got, err := io.ReadFull(ir.r, one[:]); got > 0 {
		return nil, fmt.Errorf("reading %s: trailing bytes after %s (the file is longer than its header states)", ir.path, what)
	} else if err != nil && err != io.EOF {
		return nil, ir.readErr(err, what)
	}
	return b, nil
}

// ReadIDX reads an MNIST-family pair of IDX files (images: magic 2051,
// dimensions N x rows x cols; labels: magic 2049, N labels in 0..9), each
// either raw or gzip-compressed, within DefaultIDXLimits. The set has one
// channel.
func ReadIDX(imagesPath, labelsPath string) (*Set, error) {
	return ReadIDXLimited(imagesPath, labelsPath, DefaultIDXLimits)
}

// ReadIDXLimited is ReadIDX with the header's claims bounded by lim: a
// header stating more than lim allows is an error naming the file, before
// anything is allocated for its body.
func ReadIDXLimited(imagesPath, labelsPath string, lim IDXLimits) (*Set, error) {
	ir, err := openIDX(imagesPath)
	if err != nil {
		return nil, err
	}
	defer ir.Close()
	img, err := ir.header(16, "image")
	if err != nil {
		return nil, err
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
	if (lim.Rows > 0 && rows != uint64(lim.Rows)) || (lim.Cols > 0 && cols != uint64(lim.Cols)) {
		return nil, fmt.Errorf("reading %s: header says images of %dx%d, this dataset's are %dx%d", imagesPath, rows, cols, lim.Rows, lim.Cols)
	}
	if lim.MaxImages > 0 && n > uint64(lim.MaxImages) {
		return nil, fmt.Errorf("reading %s: header says %d images, more than the %d this dataset allows in one file", imagesPath, n, lim.MaxImages)
	}
	per := rows * cols // < 2^64: both factors are below 2^32
	if per > math.MaxUint64/n || (lim.MaxBytes > 0 && n*per > uint64(lim.MaxBytes)) {
		return nil, fmt.Errorf("reading %s: header says %d images of %dx%d, more than the %d bytes this dataset allows in one file", imagesPath, n, rows, cols, lim.MaxBytes)
	}
	body, err := ir.body(16, n*per, fmt.Sprintf("%d images of %dx%d", n, rows, cols))
	if err != nil {
		return nil, err
	}

	lr, err := openIDX(labelsPath)
	if err != nil {
		return nil, err
	}
	defer lr.Close()
	lab, err := lr.header(8, "label")
	if err != nil {
		return nil, err
	}
	if m := binary.BigEndian.Uint32(lab[0:4]); m != idxLabelsMagic {
		return nil, fmt.Errorf("reading %s: bad magic number %d, want %d (IDX unsigned-byte labels, 1 dimension)", labelsPath, m, idxLabelsMagic)
	}
	nl := uint64(binary.BigEndian.Uint32(lab[4:8]))
	if nl != n {
		return nil, fmt.Errorf("reading %s: %d labels but %s has %d images", labelsPath, nl, imagesPath, n)
	}
	labels, err := lr.body(8, nl, fmt.Sprintf("%d labels", nl))
	if err != nil {
		return nil, err
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
		s, err := ReadIDXLimited(ip, lp, MNISTIDXLimits)
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
