package onnxrt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLibraryPathPrecedence(t *testing.T) {
	dir := t.TempDir()
	touch := func(p string) string {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cached := touch(filepath.Join(dir, "cache", "onnxruntime-"+RuntimeVersion, LibraryName))
	fromEnv := touch(filepath.Join(dir, "env", "lib.so"))
	fromConfig := touch(filepath.Join(dir, "cfg", "lib.so"))
	t.Setenv("BAYESNAS_CACHE", filepath.Join(dir, "cache"))

	t.Setenv(EnvLibrary, "")
	if got, err := LibraryPath(""); err != nil || got != cached {
		t.Errorf("cache only: %q, %v; want %q", got, err, cached)
	}
	t.Setenv(EnvLibrary, fromEnv)
	if got, err := LibraryPath(""); err != nil || got != fromEnv {
		t.Errorf("env: %q, %v; want %q", got, err, fromEnv)
	}
	if got, err := LibraryPath(fromConfig); err != nil || got != fromConfig {
		t.Errorf("config: %q, %v; want %q", got, err, fromConfig)
	}
	// An explicit path that does not exist is an error, not a fall-through.
	if _, err := LibraryPath(filepath.Join(dir, "nope.so")); err == nil || !strings.Contains(err.Error(), "configuration onnxruntime.lib") {
		t.Errorf("missing configured library: %v", err)
	}
	t.Setenv(EnvLibrary, filepath.Join(dir, "nope.so"))
	if _, err := LibraryPath(""); err == nil || !strings.Contains(err.Error(), "$"+EnvLibrary) {
		t.Errorf("missing env library: %v", err)
	}
	t.Setenv(EnvLibrary, dir)
	if _, err := LibraryPath(""); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory as library: %v", err)
	}
	t.Setenv(EnvLibrary, "")
	t.Setenv("BAYESNAS_CACHE", filepath.Join(dir, "empty"))
	if _, err := LibraryPath(""); err == nil || !strings.Contains(err.Error(), "scripts/ort.sh") {
		t.Errorf("nothing anywhere: %v, want a hint at scripts/ort.sh", err)
	}
	// XDG_CACHE_HOME is honoured when BAYESNAS_CACHE is unset, as in ort.sh.
	t.Setenv("BAYESNAS_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "xdg"))
	if d, err := CacheDir(); err != nil || d != filepath.Join(dir, "xdg", "bayesnas", "onnxruntime-"+RuntimeVersion) {
		t.Errorf("CacheDir with XDG_CACHE_HOME: %q, %v", d, err)
	}
}

func TestCompareAndPercentile(t *testing.T) {
	want := []float32{1, 2, 3, 0, 0, 5}
	got := []float32{1, 2.0001, 3, 0, 1e-6, 4}
	lab := []int32{2, 1}
	c, err := Compare(got, want, 2, 3, lab, Tolerance{RTol: 1e-3, ATol: 1e-5})
	if err != nil {
		t.Fatal(err)
	}
	if c.Violations != 1 || c.MaxAbsErr != 1 || c.Top1Agreement != 1 || *c.AccuracyOurs != 0.5 {
		t.Errorf("%+v", c)
	}
	if !strings.Contains(c.Worst, "input 1 output 2") {
		t.Errorf("worst %q", c.Worst)
	}
	// NaN never passes.
	c, _ = Compare([]float32{float32(nan())}, []float32{1}, 1, 1, nil, Tolerance{RTol: 1, ATol: 1})
	if c.Violations != 1 {
		t.Errorf("NaN output passed: %+v", c)
	}
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if percentile(s, 0.5) != 5 || percentile(s, 0.9) != 9 || percentile(s[:1], 0.9) != 1 {
		t.Errorf("percentiles %v %v", percentile(s, 0.5), percentile(s, 0.9))
	}
}

func nan() float64 { z := 0.0; return z / z }
