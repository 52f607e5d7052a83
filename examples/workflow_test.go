// Package examples holds files for other tools (a CI workflow) and the tests
// that keep them valid.
package examples

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
	"go.yaml.in/yaml/v3"
)

const workflow = "github-actions/bayesnas.yml"

// lint runs actionlint over src and returns its problems, one per line.
func lint(t *testing.T, src []byte) (int, string) {
	t.Helper()
	var out bytes.Buffer
	l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{Oneline: true})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.Lint(workflow, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(errs), out.String()
}

// The example workflow passes actionlint (syntax, expressions and their
// types, the inputs of the well-known actions, matrix references).
func TestWorkflowLints(t *testing.T) {
	src, err := os.ReadFile(workflow)
	if err != nil {
		t.Fatal(err)
	}
	if n, out := lint(t, src); n > 0 {
		t.Fatalf("actionlint: %d problems in %s:\n%s", n, workflow, out)
	}
	// The linter is really checking: a misspelt matrix key and an input
	// upload-artifact does not have are both caught.
	bad := bytes.Replace(src, []byte("matrix.device"), []byte("matrix.devise"), 1)
	bad = bytes.Replace(bad, []byte("if-no-files-found: error"), []byte("if-no-file-found: error"), 1)
	if n, out := lint(t, bad); n < 2 {
		t.Fatalf("actionlint found %d problems in a broken workflow, want 2:\n%s", n, out)
	}
}

// actionlint cannot know this repository: the devices the workflow runs on
// are the committed profiles, the pipeline runs as a built binary (go run
// turns every exit status into 1, and the workflow acts on the pipeline's
// codes), and the model and the report are uploaded.
func TestWorkflowFitsTheRepository(t *testing.T) {
	src, err := os.ReadFile(workflow)
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Jobs map[string]struct {
			Strategy struct {
				Matrix struct {
					Include []map[string]string `yaml:"include"`
				} `yaml:"matrix"`
			} `yaml:"strategy"`
			Steps []struct {
				Uses string            `yaml:"uses"`
				Run  string            `yaml:"run"`
				With map[string]string `yaml:"with"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(src, &wf); err != nil {
		t.Fatal(err)
	}
	job, ok := wf.Jobs["pipeline"]
	if !ok {
		t.Fatalf("%s has no pipeline job", workflow)
	}
	devices := map[string]bool{}
	for _, m := range job.Strategy.Matrix.Include {
		p := m["profile"]
		if _, err := os.Stat(filepath.Join("..", p)); err != nil {
			t.Errorf("matrix device %s: profile %q is not in the repository: %v", m["device"], p, err)
		}
		devices[m["device"]] = true
	}
	for _, d := range []string{"native-1t", "native-2t", "wasm-1t"} {
		if !devices[d] {
			t.Errorf("the matrix lacks device %s", d)
		}
	}
	var runs, uploads, cacheKeys []string
	for _, s := range job.Steps {
		runs = append(runs, s.Run)
		switch {
		case strings.HasPrefix(s.Uses, "actions/upload-artifact@"):
			uploads = append(uploads, s.With["path"])
		case strings.HasPrefix(s.Uses, "actions/cache"):
			cacheKeys = append(cacheKeys, s.With["key"])
		}
	}
	all := strings.Join(runs, "\n")
	if !strings.Contains(all, "bin/bayesnas pipeline --run") || strings.Contains(all, "go run ./cmd/bayesnas pipeline") {
		t.Errorf("the pipeline step must run the built binary (go run loses the exit status):\n%s", all)
	}
	for _, code := range []string{"2)", "3)", "4)", "5)", "6)"} {
		if !strings.Contains(all, code) {
			t.Errorf("the pipeline step does not report exit status %s", strings.TrimSuffix(code, ")"))
		}
	}
	up := strings.Join(uploads, "\n")
	for _, f := range []string{"model.onnx", "report.html", "report.md", "report/"} {
		if !strings.Contains(up, f) {
			t.Errorf("no upload of %s", f)
		}
	}
	if len(cacheKeys) == 0 {
		t.Error("the run directory is not cached")
	}
	for _, k := range cacheKeys {
		if !strings.Contains(k, "configs/pipeline.yaml") || !strings.Contains(k, "matrix.profile") {
			t.Errorf("cache key %q: want it keyed on the config and the profile", k)
		}
	}
}
