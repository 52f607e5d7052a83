// Package onnxrt runs exported models in ONNX Runtime (through
// github.com/yalue/onnxruntime_go, which needs cgo) to validate them against
// the engine and to time them. It is the only package of bayesnas that loads
// ONNX Runtime; without cgo it still builds, and Validate says why it cannot
// run.
//
// The shared library is found, in order, at the path given by configuration,
// at $ONNXRUNTIME_LIB, or in the cache directory that scripts/ort.sh fills.
package onnxrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// RuntimeVersion is the ONNX Runtime release whose C API onnxruntime_go
// v1.27.0 speaks; scripts/ort.sh fetches exactly this one.
const RuntimeVersion = "1.24.1"

// EnvLibrary names the environment variable that overrides the library path.
const EnvLibrary = "ONNXRUNTIME_LIB"

// LibraryName is the file scripts/ort.sh puts into CacheDir.
const LibraryName = "libonnxruntime.so.1"

// CacheDir is where scripts/ort.sh keeps the library:
// ${BAYESNAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayesnas}/onnxruntime-1.24.1.
// The script and this function must agree; change both together.
func CacheDir() (string, error) {
	base := os.Getenv("BAYESNAS_CACHE")
	if base == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("locating the cache directory: %w", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		base = filepath.Join(cache, "bayesnas")
	}
	return filepath.Join(base, "onnxruntime-"+RuntimeVersion), nil
}

// LibraryPath resolves the ONNX Runtime shared library: configured (the
// onnxruntime.lib config value) when non-empty, else $ONNXRUNTIME_LIB, else
// the cache directory. A path given explicitly must exist; it is never
// silently replaced by the next candidate. The result is absolute, as
// onnxruntime_go requires.
func LibraryPath(configured string) (string, error) {
	check := func(path, from string) (string, error) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", fmt.Errorf("ONNX Runtime library %s (from %s): %w", path, from, err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return "", fmt.Errorf("ONNX Runtime library (from %s): %w", from, err)
		}
		if st.IsDir() {
			return "", fmt.Errorf("ONNX Runtime library %s (from %s) is a directory, want the %s file", abs, from, LibraryName)
		}
		return abs, nil
	}
	if configured != "" {
		return check(configured, "configuration onnxruntime.lib")
	}
	if env := os.Getenv(EnvLibrary); env != "" {
		return check(env, "$"+EnvLibrary)
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, LibraryName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("ONNX Runtime %s not found: no onnxruntime.lib configured, $%s unset, and %s does not exist; run scripts/ort.sh to fetch it",
			RuntimeVersion, EnvLibrary, path)
	}
	return check(path, "the cache directory")
}
