// Package atomicfile writes files so that a reader, or a run that crashes
// half-way, never sees a partial file: data goes to a temporary file in the
// same directory, is synced, and is renamed over the target.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// inFlight holds the temporary files this process is writing now, which
// RemoveStale must leave alone. (Another process writing the same target is
// excluded by the run directory's lock.)
// mu makes creating a temporary file and recording it in inFlight one step
// as seen by RemoveStale.
var (
	mu       sync.Mutex
	inFlight sync.Map // temporary path -> struct{}
)

// tempPrefix is the start of the name of path's temporary files: the target's
// name, hidden, then ".tmp" and the decimal digits os.CreateTemp adds.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp" }

// isTempOf says whether name is one of the temporary files of a target whose
// tempPrefix is prefix: prefix followed by one or more decimal digits.
func isTempOf(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// RemoveStale removes the temporary files a write of path that was killed
// left in path's directory (only names of its own pattern, never one this
// process is writing now). A missing directory is not an error.
func RemoveStale(path string) error {
	mu.Lock()
	defer mu.Unlock()
	return removeStale(path)
}

func removeStale(path string) error {
	dir, prefix := filepath.Dir(path), tempPrefix(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("removing temporary files of %s: %w", path, err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !isTempOf(e.Name(), prefix) {
			continue
		}
		tmp := filepath.Join(dir, e.Name())
		if _, busy := inFlight.Load(tmp); busy {
			continue
		}
		if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("removing stale temporary file %s: %w", tmp, err)
		}
	}
	return nil
}

// Write writes data to path atomically.
func Write(path string, data []byte) error {
	return WriteFunc(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc streams the output of fill to path atomically. If fill fails, the
// temporary file is removed and path is left as it was. Temporary files of
// path left by an earlier write that was killed are removed first.
func WriteFunc(path string, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	mu.Lock()
	err = removeStale(path)
	var f *os.File
	if err == nil {
		f, err = os.CreateTemp(dir, tempPrefix(path)+"*")
	}
	if err == nil {
		inFlight.Store(f.Name(), struct{}{})
	}
	mu.Unlock()
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer inFlight.Delete(tmp)
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = fill(f); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
