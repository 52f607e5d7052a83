package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/internal/allocs"
	"bayesnas/internal/testenv"
)

// idxBytes encodes an IDX file: magic, dimensions, then body.
func idxBytes(magic uint32, dims []uint32, body []byte) []byte {
	var buf bytes.Buffer
	binary.Write(&buf, binary.BigEndian, magic)
	for _, d := range dims {
		binary.Write(&buf, binary.BigEndian, d)
	}
	buf.Write(body)
	return buf.Bytes()
}

func gzipBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tinyIDX returns n images of rows x cols whose pixel k of image i is
// (7*i + k) mod 256, and labels i mod 10.
func tinyIDX(n, rows, cols int) (images, labels []byte) {
	images = make([]byte, n*rows*cols)
	for i := 0; i < n; i++ {
		for k := 0; k < rows*cols; k++ {
			images[i*rows*cols+k] = byte(7*i + k)
		}
	}
	labels = make([]byte, n)
	for i := range labels {
		labels[i] = byte(i % 10)
	}
	return images, labels
}

func TestReadIDXRawAndGzip(t *testing.T) {
	const n, rows, cols = 13, 3, 5
	images, labels := tinyIDX(n, rows, cols)
	imgFile := idxBytes(idxImagesMagic, []uint32{n, rows, cols}, images)
	labFile := idxBytes(idxLabelsMagic, []uint32{n}, labels)
	dir := t.TempDir()
	cases := []struct {
		name           string
		imgData, label []byte
	}{
		{"raw", imgFile, labFile},
		{"gzip", gzipBytes(t, imgFile), gzipBytes(t, labFile)},
		{"mixed", imgFile, gzipBytes(t, labFile)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Names deliberately say nothing about compression: detection
			// is by magic bytes.
			ip := writeFile(t, filepath.Join(dir, tc.name+"-img"), tc.imgData)
			lp := writeFile(t, filepath.Join(dir, tc.name+"-lab"), tc.label)
			s, err := ReadIDX(ip, lp)
			if err != nil {
				t.Fatal(err)
			}
			if s.N != n || s.C != 1 || s.H != rows || s.W != cols || s.Classes != 10 {
				t.Fatalf("shape N=%d C=%d H=%d W=%d classes=%d, want %d 1 %d %d 10", s.N, s.C, s.H, s.W, s.Classes, n, rows, cols)
			}
			if !bytes.Equal(s.Images, images) || !bytes.Equal(s.Labels, labels) {
				t.Fatal("pixels or labels differ from what was written")
			}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReadIDXErrors(t *testing.T) {
	const n, rows, cols = 4, 2, 3
	images, labels := tinyIDX(n, rows, cols)
	goodImg := idxBytes(idxImagesMagic, []uint32{n, rows, cols}, images)
	goodLab := idxBytes(idxLabelsMagic, []uint32{n}, labels)
	badLabels := append([]byte(nil), labels...)
	badLabels[2] = 10
	truncatedGzip := gzipBytes(t, goodImg)
	truncatedGzip = truncatedGzip[:len(truncatedGzip)-12]
	cases := []struct {
		name     string
		img, lab []byte
		badFile  string // "img" or "lab": the file the message must name
		want     string
	}{
		{"images magic", idxBytes(2049, []uint32{n, rows, cols}, images), goodLab, "img", "bad magic number 2049, want 2051"},
		{"labels magic", goodImg, idxBytes(2051, []uint32{n}, labels), "lab", "bad magic number 2051, want 2049"},
		{"zero rows", idxBytes(idxImagesMagic, []uint32{n, 0, cols}, nil), goodLab, "img", "bad dimensions"},
		{"images truncated", goodImg[:len(goodImg)-1], goodLab, "img", "truncated"},
		{"images header truncated", goodImg[:10], goodLab, "img", "truncated"},
		{"images trailing", append(append([]byte(nil), goodImg...), 0), goodLab, "img", "trailing bytes"},
		{"labels truncated", goodImg, goodLab[:len(goodLab)-1], "lab", "truncated"},
		{"count mismatch", goodImg, idxBytes(idxLabelsMagic, []uint32{n - 1}, labels[:n-1]), "lab", "3 labels but"},
		{"label out of range", goodImg, idxBytes(idxLabelsMagic, []uint32{n}, badLabels), "lab", "label 10 of sample 2 out of range"},
		{"gzip truncated", truncatedGzip, goodLab, "img", "decompressing gzip"},
	}
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ip := writeFile(t, filepath.Join(dir, "img"+string(rune('a'+i))), tc.img)
			lp := writeFile(t, filepath.Join(dir, "lab"+string(rune('a'+i))), tc.lab)
			_, err := ReadIDX(ip, lp)
			if err == nil {
				t.Fatal("no error")
			}
			path := ip
			if tc.badFile == "lab" {
				path = lp
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q should name %s and say %q", err, path, tc.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		ip := filepath.Join(dir, "nope")
		_, err := ReadIDX(ip, filepath.Join(dir, "nope2"))
		if err == nil || !strings.Contains(err.Error(), ip) || !os.IsNotExist(unwrapAll(err)) {
			t.Fatalf("error %v should name %s and wrap a not-exist error", err, ip)
		}
	})
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// writeIDXDir writes the four MNIST-family files (gzip or raw) into dir.
func writeIDXDir(t *testing.T, dir string, nTrain, nTest int, gz bool) {
	t.Helper()
	for _, part := range []struct {
		prefix string
		n      int
	}{{"train", nTrain}, {"t10k", nTest}} {
		images, labels := tinyIDX(part.n, 28, 28)
		img := idxBytes(idxImagesMagic, []uint32{uint32(part.n), 28, 28}, images)
		lab := idxBytes(idxLabelsMagic, []uint32{uint32(part.n)}, labels)
		ext := ""
		if gz {
			img, lab, ext = gzipBytes(t, img), gzipBytes(t, lab), ".gz"
		}
		writeFile(t, filepath.Join(dir, part.prefix+"-images-idx3-ubyte"+ext), img)
		writeFile(t, filepath.Join(dir, part.prefix+"-labels-idx1-ubyte"+ext), lab)
	}
}

func TestLoadIDXDirs(t *testing.T) {
	gzDir, rawDir := t.TempDir(), t.TempDir()
	writeIDXDir(t, gzDir, 30, 20, true)
	writeIDXDir(t, rawDir, 30, 20, false)

	train, test, err := LoadFashionMNIST(gzDir)
	if err != nil {
		t.Fatal(err)
	}
	if train.N != 30 || test.N != 20 || train.Name != "fashion-mnist-train" || test.Name != "fashion-mnist-test" {
		t.Fatalf("got %s N=%d, %s N=%d", train.Name, train.N, test.Name, test.N)
	}
	if train.ClassNames[0] != "T-shirt/top" || train.ClassNames[9] != "Ankle boot" {
		t.Fatalf("class names %v", train.ClassNames)
	}
	train, test, err = Load("mnist", rawDir)
	if err != nil {
		t.Fatal(err)
	}
	if train.N != 30 || test.N != 20 || train.ClassNames[7] != "7" {
		t.Fatalf("mnist: N=%d/%d names %v", train.N, test.N, train.ClassNames)
	}

	missing := filepath.Join(t.TempDir(), "absent")
	_, _, err = LoadFashionMNIST(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "dataset-fashion-mnist") {
		t.Fatalf("missing directory: error %v should name it and the Debian package", err)
	}
	if err := os.Remove(filepath.Join(gzDir, "t10k-labels-idx1-ubyte.gz")); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadFashionMNIST(gzDir)
	if err == nil || !strings.Contains(err.Error(), "t10k-labels-idx1-ubyte") || !strings.Contains(err.Error(), gzDir) || !strings.Contains(err.Error(), "dataset-fashion-mnist") {
		t.Fatalf("missing file: error %v should name the file, directory and package", err)
	}
	_, _, err = Load("mnist", "")
	if err == nil || !strings.Contains(err.Error(), "no directory") {
		t.Fatalf("mnist without directory: %v", err)
	}
}

// TestRealFashionMNIST checks the Debian package's files, when installed.
func TestRealFashionMNIST(t *testing.T) {
	if _, err := os.Stat(filepath.Join(DefaultFashionMNISTDir, "train-images-idx3-ubyte.gz")); err != nil {
		testenv.Missing(t, "Fashion-MNIST in "+DefaultFashionMNISTDir, "apt-get install dataset-fashion-mnist, or go tool task setup", err)
	}
	train, test, err := Load("fashion-mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    *Set
		n    int
		each int
	}{{train, 60000, 6000}, {test, 10000, 1000}} {
		if c.s.N != c.n || c.s.C != 1 || c.s.H != 28 || c.s.W != 28 || c.s.Classes != 10 {
			t.Fatalf("%s: N=%d C=%d H=%d W=%d classes=%d, want %d 1 28 28 10", c.s.Name, c.s.N, c.s.C, c.s.H, c.s.W, c.s.Classes, c.n)
		}
		for k, cnt := range c.s.LabelCounts() {
			if cnt != c.each {
				t.Errorf("%s: class %d (%s) has %d samples, want %d", c.s.Name, k, c.s.ClassNames[k], cnt, c.each)
			}
		}
	}
	// Published training-set statistics: mean 0.2860, std 0.3530.
	mean, std := train.Stats()
	if d := mean[0] - 0.2860; d > 5e-4 || d < -5e-4 {
		t.Errorf("train mean %.5f, want 0.2860", mean[0])
	}
	if d := std[0] - 0.3530; d > 5e-4 || d < -5e-4 {
		t.Errorf("train std %.5f, want 0.3530", std[0])
	}
	t.Logf("Fashion-MNIST train mean %.6f std %.6f", mean[0], std[0])
}

// A small gzip file that inflates far beyond what its header states (a
// decompression bomb) is refused after reading what the header states, and
// a header claiming more than the dataset allows, or more than a raw file
// holds, is refused before its body is allocated.
func TestReadIDXBoundedByHeader(t *testing.T) {
	dir := t.TempDir()
	const n = 100
	images, labels := tinyIDX(n, 28, 28)
	lp := writeFile(t, filepath.Join(dir, "labels"), idxBytes(idxLabelsMagic, []uint32{n}, labels))

	// 64 MiB of zeros after a header stating 100 images of 28x28 (78 KB).
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zw.Write(idxBytes(idxImagesMagic, []uint32{n, 28, 28}, images))
	zeros := make([]byte, 1<<20)
	for i := 0; i < 64; i++ {
		zw.Write(zeros)
	}
	zw.Close()
	bombPath := writeFile(t, filepath.Join(dir, "bomb.gz"), bomb.Bytes())
	var err error
	if a := allocs.During(func() { _, err = ReadIDXLimited(bombPath, lp, MNISTIDXLimits) }); a > 8<<20 {
		t.Errorf("reading a gzip bomb of %d bytes allocated %d bytes, want under 8 MiB", bomb.Len(), a)
	}
	if err == nil || !strings.Contains(err.Error(), bombPath) || !strings.Contains(err.Error(), "trailing bytes") {
		t.Errorf("gzip bomb: error %v, want trailing bytes naming %s", err, bombPath)
	}

	cases := []struct {
		name string
		data []byte
		want string
	}{
		// A raw file whose header claims a million images but holds 100:
		// the file's length is checked before 784 MB are allocated.
		{"raw claims more than it holds", idxBytes(idxImagesMagic, []uint32{1_000_000, 28, 28}, images), "truncated: header says 1000000 images"},
		{"gzip claims more than allowed", gzipBytes(t, idxBytes(idxImagesMagic, []uint32{4_000_000, 28, 28}, images)), "more than the 1000000 this dataset allows"},
		{"wrong image size", idxBytes(idxImagesMagic, []uint32{n, 2800, 2800}, nil), "this dataset's are 28x28"},
	}
	for _, tc := range cases {
		p := writeFile(t, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")), tc.data)
		if a := allocs.During(func() { _, err = ReadIDXLimited(p, lp, MNISTIDXLimits) }); a > 8<<20 {
			t.Errorf("%s: allocated %d bytes, want under 8 MiB", tc.name, a)
		}
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q naming %s", tc.name, err, tc.want, p)
		}
	}
	// Without limits a header's claim is still bounded by DefaultIDXLimits.
	p := writeFile(t, filepath.Join(dir, "huge.gz"), gzipBytes(t, idxBytes(idxImagesMagic, []uint32{1 << 20, 1 << 10, 1 << 10}, nil)))
	if _, err := ReadIDX(p, lp); err == nil || !strings.Contains(err.Error(), "more than the 1073741824 bytes") {
		t.Errorf("a header claiming 1 TiB: error %v", err)
	}
}
