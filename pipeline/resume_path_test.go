package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The same run directory spelt ./runs/x, runs/x/, or absolute resumes; a
// different directory is still refused (issue 17, weak: --resume refused
// the same directory spelt otherwise).
func TestResumeSameDirSpeltOtherwise(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	if err := os.MkdirAll(filepath.Join("runs", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	saved := tinyConfig("runs/x")
	for _, spelt := range []string{"./runs/x", "runs/x/", "runs//x", filepath.Join(base, "runs", "x"), filepath.Join(base, "runs", "x") + "/"} {
		now := tinyConfig(spelt)
		if err := checkResumeConfig("runs/x/config.json", saved, now); err != nil {
			t.Errorf("run_dir %q against %q: %v", spelt, saved.RunDir, err)
		}
	}
	now := tinyConfig("runs/y")
	if err := checkResumeConfig("runs/x/config.json", saved, now); err == nil || !strings.Contains(err.Error(), "setting run_dir differs") {
		t.Errorf("another directory: err = %v, want run_dir named", err)
	}
	saved.Model.Arch, now.Model.Arch = "arch.json", "./arch.json"
	now.RunDir = saved.RunDir
	if err := checkResumeConfig("runs/x/config.json", saved, now); err != nil {
		t.Errorf("model.arch spelt ./arch.json: %v", err)
	}
	// The whole command: interrupted under one spelling, resumed under another.
	if _, err := Train(&countdown{Context: context.Background(), n: 2}, tinyConfig("runs/x"), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: err = %v", err)
	}
	if _, err := Train(context.Background(), tinyConfig("./runs/x/"), Options{Resume: true}); err != nil {
		t.Fatalf("resume as ./runs/x/: %v", err)
	}
}
