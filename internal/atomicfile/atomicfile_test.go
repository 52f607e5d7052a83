package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWhole(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "f.json")
	if err := Write(p, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("second")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "second" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestFailedWriteLeavesOldFileAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Write(p, []byte("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteFunc(p, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v does not wrap the fill error", err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != "old" {
		t.Fatalf("file changed to %q after failed write", got)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary file left behind: %v", ents)
	}
}

// A write killed between creating its temporary file and renaming it leaves
// the temporary behind; the next write of that target (or RemoveStale)
// removes it, and only files of that target's own temporary pattern (issue
// 17, weak: a kill during a checkpoint write left a temporary file for good).
func TestStaleTemporariesRemoved(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "checkpoint.safetensors")
	stale := []string{".checkpoint.safetensors.tmp12345", ".checkpoint.safetensors.tmp9"}
	keep := []string{
		".checkpoint.safetensors.tmp", ".checkpoint.safetensors.tmp12x", ".checkpoint.safetensors.tmpold",
		".config.json.tmp4711", "checkpoint.safetensors.tmp123", ".checkpoint.safetensors.tmp123.bak",
	}
	for _, n := range append(append([]string{}, stale...), keep...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".checkpoint.safetensors.tmp77"), 0o755); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, ".checkpoint.safetensors.tmp77") // a directory: not ours
	if err := Write(p, []byte("ckpt")); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range ents {
		got[e.Name()] = true
	}
	for _, n := range stale {
		if got[n] {
			t.Errorf("stale temporary %s left after the next write", n)
		}
	}
	for _, n := range append(keep, "checkpoint.safetensors") {
		if !got[n] {
			t.Errorf("%s removed, but it is not a temporary of the target", n)
		}
	}
	if len(got) != len(keep)+1 {
		t.Errorf("directory holds %v", got)
	}
	// RemoveStale alone, as resume calls it, and not on a write in flight.
	if err := os.WriteFile(filepath.Join(dir, stale[0]), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err = WriteFunc(p, func(w io.Writer) error {
		if err := RemoveStale(p); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(dir, stale[0])); !os.IsNotExist(err) {
			t.Errorf("RemoveStale left %s: %v", stale[0], err)
		}
		_, err := w.Write([]byte("ckpt2"))
		return err
	})
	if err != nil {
		t.Fatalf("RemoveStale during a write removed that write's own temporary: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "ckpt2" {
		t.Errorf("target holds %q", b)
	}
	if err := RemoveStale(filepath.Join(dir, "missing", "f")); err != nil {
		t.Errorf("missing directory: %v", err)
	}
}
