package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"bayesnas/internal/runlock"
)

// ManifestFile is the pipeline's manifest in the run directory.
const ManifestFile = "pipeline.json"

// ManifestSchema stamps pipeline.json; a reader refuses any other.
const ManifestSchema = "bayesnas.pipeline/v1"

// Stage statuses in the manifest.
const (
	StatusDone    = "done"
	StatusRunning = "running" // started and not finished: interrupted if no one holds the run directory
	StatusFailed  = "failed"
)

// Manifest is pipeline.json: what each stage consumed and produced, so a
// CI cache of the run directory skips the stages whose inputs and settings
// are unchanged, and a crashed run resumes where it stopped.
type Manifest struct {
	Schema string           `json:"schema"`
	Stages []*StageManifest `json:"stages"`
	// Report is the report.html this invocation wrote (not recorded: the
	// report is rewritten by every run).
	Report string `json:"-"`
}

// StageManifest is one stage's record. The hashes are SHA-256, hex.
type StageManifest struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// InputsHash covers the previous stage's outputs as read from the run
	// directory ("" for the first stage, whose input is the dataset).
	InputsHash string `json:"inputs_sha256"`
	// ConfigHash covers the stage's section of the configuration, and the
	// content of files it names (the device profile).
	ConfigHash string `json:"config_sha256"`
	// OutputsHash covers Outputs: the files of the stage's directories.
	OutputsHash string            `json:"outputs_sha256,omitempty"`
	Outputs     map[string]string `json:"outputs,omitempty"` // path relative to the run directory -> SHA-256
	ToolVersion string            `json:"tool_version"`
	Started     time.Time         `json:"started"`
	Ended       *time.Time        `json:"ended,omitempty"`
	Seconds     float64           `json:"seconds,omitempty"`
}

// ReadManifest reads RUN/pipeline.json; a run directory without one has an
// empty manifest.
func ReadManifest(runDir string) (*Manifest, error) {
	path := filepath.Join(runDir, ManifestFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Manifest{Schema: ManifestSchema}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, Mark(ErrStale, fmt.Errorf("reading %s: %w (delete it to run every stage again)", path, err))
	}
	if m.Schema != ManifestSchema {
		return nil, Mark(ErrStale, fmt.Errorf("reading %s: schema %q, want %q", path, m.Schema, ManifestSchema))
	}
	return &m, nil
}

// write saves the manifest atomically: a crash leaves the old one or the
// new one, never half of it.
func (m *Manifest) write(runDir string) error {
	return writeJSON(filepath.Join(runDir, ManifestFile), m)
}

// Stage is the record of the stage name, nil when it never ran.
func (m *Manifest) Stage(name string) *StageManifest {
	for _, s := range m.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (m *Manifest) set(s *StageManifest) {
	for i, old := range m.Stages {
		if old.Name == s.Name {
			m.Stages[i] = s
			return
		}
	}
	m.Stages = append(m.Stages, s)
	// Stage order, whatever order they ran in.
	sort.SliceStable(m.Stages, func(i, j int) bool { return stageIndex(m.Stages[i].Name) < stageIndex(m.Stages[j].Name) })
}

// hashFiles hashes every file under the directories dirs (relative to
// runDir) but the lock and the temporary files of atomic writes: each
// file's SHA-256 by its path relative to runDir, and one hash over those
// lines in path order. A missing directory hashes as empty.
func hashFiles(runDir string, dirs ...string) (total string, files map[string]string, err error) {
	files = map[string]string{}
	for _, d := range dirs {
		root := filepath.Join(runDir, d)
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && path == root {
				return filepath.SkipDir
			}
			if err != nil {
				return err
			}
			name := e.Name()
			if !e.Type().IsRegular() || name == runlock.File || (strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp")) {
				return nil
			}
			h, err := fileHash(path)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(runDir, path)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)] = h
			return nil
		})
		if err != nil {
			return "", nil, fmt.Errorf("hashing %s: %w", root, err)
		}
	}
	return hashLines(files), files, nil
}

// hashLines is the SHA-256 of "path sha256\n" lines in path order.
func hashLines(files map[string]string) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s %s\n", n, files[n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hashJSON is the SHA-256 of v's JSON form (maps in key order, so the same
// settings always hash the same).
func hashJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("hashing configuration: %w", err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}
