package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"testing"
	"time"

	"bayesnas/internal/runlock"
	"bayesnas/pipeline"
)

// badCase is one bad input to one subcommand (issue 17, systematic): the
// command must fail with exit code exit, one line naming what is wrong
// (every string of want), no panic, and leave every file of the fixtures'
// run directories and inputs as it was.
type badCase struct {
	class string            // the class of bad input (RELIABILITY.md's table)
	cmd   string            // the subcommand, for the table
	args  []string          // the command line after "bayesnas"
	env   map[string]string // environment variables set for the case
	want  []string          // substrings of the one-line error
	exit  int               // the exit code (pipeline/exitcode.go)
	known string            // a known bug the case still shows: logged, counted, not failed
}

// badFixtures are the valid files and run directories every case is run
// against, and the bad inputs, all under root (snapshotted around each case).
type badFixtures struct {
	root    string
	run     string // a finished tiny training run (exported: model.onnx)
	search  string // a finished tiny search
	profile string // a device profile (a copy of profiles/native-1t.yaml)
	bad     string // bad input files
	scratch string // where outputs of the cases would go (must stay empty)
	other   string // another network's arch.json and weights (other shapes)
	pipeCfg string // a small valid pipeline config
}

func (fx *badFixtures) b(name string) string { return filepath.Join(fx.bad, name) }
func (fx *badFixtures) s(name string) string { return filepath.Join(fx.scratch, name) }
func (fx *badFixtures) r(name string) string { return filepath.Join(fx.run, name) }

func execute(t *testing.T, args ...string) {
	t.Helper()
	root := newRoot("")
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	if err := root.Execute(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, errOut.String())
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyRun copies the run directory src to dst, then replaces file (if not
// "") with body: a run with one damaged file.
func copyRun(t *testing.T, src, dst, file string, body []byte) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if file != "" {
		writeFile(t, filepath.Join(dst, file), body)
	}
}

func newBadFixtures(t *testing.T) *badFixtures {
	t.Helper()
	root := t.TempDir()
	fx := &badFixtures{root: root, run: filepath.Join(root, "run"), search: filepath.Join(root, "search"),
		profile: filepath.Join(root, "native-1t.yaml"), bad: filepath.Join(root, "bad"), scratch: filepath.Join(root, "scratch"),
		other: filepath.Join(root, "other")}
	for _, d := range []string{fx.bad, fx.scratch, fx.other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A tiny trained and exported run, and a tiny search.
	trainCfg := filepath.Join(root, "train.yaml")
	writeFile(t, trainCfg, []byte("data:\n  name: synthetic\n  val_count: 64\nmodel:\n  params:\n    blocks_per_stage: 1\n    alpha: 4\n    stem_channels: 4\ntrain:\n  epochs: 1\n  batch: 32\n"))
	execute(t, "train", "--config", trainCfg, "--run-dir", fx.run, "--limit", "128")
	execute(t, "export", "--run", fx.run)
	searchCfg := filepath.Join(root, "search.yaml")
	writeFile(t, searchCfg, []byte(tinySearchYAML))
	execute(t, "search", "--config", searchCfg, "--run-dir", fx.search, "--limit", "64")
	writeFile(t, fx.profile, readFile(t, "../../profiles/native-1t.yaml"))
	fx.pipeCfg = filepath.Join(root, "pipeline.yaml")
	writeFile(t, fx.pipeCfg, []byte("data:\n  name: synthetic\n  val_count: 64\n  limit: 64\nbudget: 0.8x\ndevice:\n  profile: "+fx.profile+"\n"))
	// Another network, of other shapes (input 1x8x8, 3 classes).
	writeSmallNet(t, fx.other)

	arch := readFile(t, fx.r(pipeline.ArchFile))
	weights := readFile(t, fx.r(pipeline.WeightsFile))
	model := readFile(t, fx.r(pipeline.ModelFile))
	prof := readFile(t, fx.profile)
	bad := map[string][]byte{
		"empty.json":          nil,
		"trunc.json":          arch[:len(arch)/2],
		"text.json":           []byte("this is not JSON\n"),
		"type.json":           bytes.Replace(arch, []byte(`"name": "`), []byte(`"name": 5, "x": "`), 1),
		"unknown.json":        bytes.Replace(arch, []byte("{"), []byte(`{"extra_key": 1,`), 1),
		"list.json":           []byte("[1, 2, 3]\n"),
		"empty.yaml":          nil,
		"trunc.yaml":          []byte("train:\n  epochs: [1,\n"),
		"tab.yaml":            []byte("train:\n\tepochs: 3\n"),
		"list.yaml":           []byte("- 1\n- 2\n"),
		"type.yaml":           []byte("train:\n  epochs: three\n"),
		"unknown.yaml":        []byte("train:\n  epoch: 3\n"),
		"threads.yaml":        []byte("threads: 100000\n"),
		"empty.safetensors":   nil,
		"trunc.safetensors":   weights[:len(weights)/2],
		"head.safetensors":    weights[:20],
		"text.safetensors":    []byte("not a safetensors file at all, just text\n"),
		"huge.safetensors":    binary.LittleEndian.AppendUint64(nil, 1<<40),
		"empty.onnx":          nil,
		"trunc.onnx":          model[:len(model)/2],
		"text.onnx":           []byte("not a protobuf\n"),
		"empty-profile.yaml":  nil,
		"trunc-profile.yaml":  prof[:4000],
		"hash-profile.yaml":   bytes.Replace(prof, []byte("overhead_ms: 0.001092"), []byte("overhead_ms: 0.002092"), 1),
		"schema-profile.yaml": bytes.Replace(prof, []byte("schema: bayesnas.profile/v1"), []byte("schema: bayesnas.profile/v9"), 1),
		"text-profile.yaml":   []byte("just some words\n"),
		"empty.config":        nil,
		"trunc.config":        []byte(`{"name": "PyramidTreeNet", "blocks": [{"name": `),
		"list.config":         []byte("[]\n"),
		"type.config":         []byte(`{"name": "PyramidTreeNet", "blocks": 7}`),
		"layer.config":        []byte(`{"name": "PyramidTreeNet", "blocks": [{"name": "WarpBlock", "layers": []}], "classifier": null}`),
		"net.config":          []byte(`{"name": "ResNet50", "blocks": [], "classifier": null}`),
	}
	for name, b := range bad {
		writeFile(t, fx.b(name), b)
	}
	if err := os.MkdirAll(fx.b("dir.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(fx.b("emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fx.b("garbage-mnist/train-images-idx3-ubyte"), []byte("garbage"))
	// Run directories with one damaged file each.
	copyRun(t, fx.run, fx.b("run-weights"), pipeline.WeightsFile, weights[:len(weights)/3])
	copyRun(t, fx.run, fx.b("run-arch"), pipeline.ArchFile, arch[:len(arch)-10])
	copyRun(t, fx.run, fx.b("run-summary"), pipeline.SummaryFile, []byte("{"))
	copyRun(t, fx.run, fx.b("run-config"), pipeline.ConfigFile, []byte(`{"run_dir": 7}`))
	copyRun(t, fx.search, fx.b("search-ckpt"), "checkpoint.safetensors", []byte("x"))
	return fx
}

// fileState is what the snapshot keeps of one path.
type fileState struct {
	dir   bool
	size  int64
	mtime time.Time
	sum   [32]byte
}

// snapshot records every file and directory under root. The run lock file
// is compared by content only: every writer takes the lock (and so touches
// the file), and leaves it empty.
func snapshot(t *testing.T, root string) map[string]fileState {
	t.Helper()
	m := map[string]fileState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{dir: d.IsDir(), size: info.Size(), mtime: info.ModTime()}
		if d.IsDir() {
			st.size, st.mtime = 0, time.Time{}
		} else {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.sum = sha256.Sum256(b)
			if d.Name() == runlock.File {
				st.mtime = time.Time{}
			}
		}
		m[p] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func snapshotDiff(before, after map[string]fileState) []string {
	var diff []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diff = append(diff, "removed "+p)
		case a != b:
			diff = append(diff, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diff = append(diff, "created "+p)
		}
	}
	sort.Strings(diff)
	return diff
}

// runCase runs the whole CLI in-process as main does and returns the error,
// the stdout and stderr, and the panic, if any.
func runCase(args []string) (err error, stdout, stderr string, panicked string) {
	root := newRoot("")
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	// No case may take long: a bad input accepted would train, search or
	// time; stopping it makes it fail the case on its message.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	func() {
		defer func() {
			if r := recover(); r != nil {
				panicked = fmt.Sprintf("%v\n%s", r, debug.Stack())
			}
		}()
		err = root.ExecuteContext(ctx)
	}()
	return err, out.String(), errOut.String(), panicked
}

// TestBadInputs runs every subcommand against a table of bad inputs (issue
// 17, systematic; RELIABILITY.md, "Bad inputs by subcommand"): each must
// exit non-zero with its exit code, print one line starting "bayesnas:"
// that names the file, flag, key or field, not panic, and leave every file
// of the run directories and inputs as it was.
func TestBadInputs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a tiny run and search first")
	}
	fx := newBadFixtures(t)
	cases := badInputCases(fx)
	pristine := filepath.Join(t.TempDir(), "pristine")
	copyRun(t, fx.root, pristine, "", nil)
	var panics, silent, known int
	counts := map[[2]string]int{}
	for i, c := range cases {
		counts[[2]string{c.class, c.cmd}]++
		name := fmt.Sprintf("%03d %s %s", i, c.cmd, c.class)
		t.Run(name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			before := snapshot(t, fx.root)
			err, stdout, stderr, panicked := runCase(c.args)
			var problems []string
			if panicked != "" {
				panics++
				problems = append(problems, "panic: "+panicked)
			}
			for _, s := range []string{stdout, stderr} {
				if strings.Contains(s, "goroutine ") || strings.Contains(s, "panic:") {
					problems = append(problems, "a panic or goroutine trace in the output: "+s)
				}
			}
			if err == nil && panicked == "" {
				silent++
				problems = append(problems, "exit 0 (a silent success)")
			}
			if err != nil {
				msg := err.Error()
				line := "bayesnas: " + msg
				if strings.Contains(msg, "\n") {
					problems = append(problems, fmt.Sprintf("the error is %d lines, want one", strings.Count(msg, "\n")+1))
				}
				for _, w := range c.want {
					if !strings.Contains(line, w) {
						problems = append(problems, fmt.Sprintf("the error does not name %q", w))
					}
				}
				if got := pipeline.ExitCode(err); got != c.exit {
					problems = append(problems, fmt.Sprintf("exit %d, want %d", got, c.exit))
				}
			}
			if diff := snapshotDiff(before, snapshot(t, fx.root)); len(diff) > 0 {
				problems = append(problems, "files changed: "+strings.Join(diff, ", "))
				// The next cases start from the fixtures as they were.
				if err := os.RemoveAll(fx.root); err != nil {
					t.Fatal(err)
				}
				copyRun(t, pristine, fx.root, "", nil)
			}
			if len(problems) == 0 {
				if c.known != "" {
					t.Errorf("bayesnas %s: the known bug (%s) no longer shows: remove its known mark", strings.Join(c.args, " "), c.known)
				}
				return
			}
			report := fmt.Sprintf("bayesnas %s (env %v)\nerror: %v\n%s", strings.Join(c.args, " "), c.env, err, strings.Join(problems, "\n"))
			if c.known != "" {
				known++
				t.Logf("known bug (%s):\n%s", c.known, report)
				return
			}
			t.Error(report)
		})
	}
	classes := map[string]int{}
	var cells []string
	for k, n := range counts {
		classes[k[0]] += n
		cells = append(cells, fmt.Sprintf("%s\t%s\t%d", k[0], k[1], n))
	}
	sort.Strings(cells)
	t.Logf("cases by class and subcommand:\n%s", strings.Join(cells, "\n"))
	var lines []string
	for c, n := range classes {
		lines = append(lines, fmt.Sprintf("%-40s %d", c, n))
	}
	sort.Strings(lines)
	t.Logf("%d cases (%d known bugs, %d panics, %d silent successes) by class:\n%s", len(cases), known, panics, silent, strings.Join(lines, "\n"))
	if len(cases) < 150 {
		t.Errorf("%d cases, want at least 150", len(cases))
	}
}

const (
	exitGeneric = pipeline.ExitGeneric
	exitUsage   = pipeline.ExitUsage
	exitStale   = pipeline.ExitStale
)

func badInputCases(fx *badFixtures) []badCase {
	var cs []badCase
	add := func(class, cmd string, exit int, args []string, want ...string) {
		cs = append(cs, badCase{class: class, cmd: cmd, args: args, want: want, exit: exit})
	}
	addEnv := func(class, cmd string, exit int, env map[string]string, args []string, want ...string) {
		cs = append(cs, badCase{class: class, cmd: cmd, args: args, env: env, want: want, exit: exit})
	}
	a := func(s ...string) []string { return s }
	// known marks the case added last as a known bug (logged, not failed);
	// none is left today.
	known := func(why string) { cs[len(cs)-1].known = why }
	_ = known
	const (
		cMissing   = "missing file or directory"
		cDir       = "directory instead of a file"
		cEmpty     = "empty file"
		cCorrupt   = "truncated or corrupt file"
		cType      = "wrong type"
		cRange     = "out-of-range number"
		cUnknown   = "unknown key, flag or name"
		cEnv       = "bad BAYESNAS_* variable"
		cShape     = "arch and weights mismatched"
		cData      = "bad dataset"
		cBudget    = "bad budget"
		cProfile   = "bad profile"
		cStage     = "bad stage"
		cConflict  = "conflicting or missing flags"
		cRunDir    = "wrong run directory"
		cArgs      = "wrong arguments"
		cResume    = "resume with other settings"
		cOutput    = "bad output path"
		cOversized = "oversized network"
	)
	run, search, prof := fx.run, fx.search, fx.profile
	arch, weights, model := fx.r(pipeline.ArchFile), fx.r(pipeline.WeightsFile), fx.r(pipeline.ModelFile)
	otherArch, otherWeights := filepath.Join(fx.other, "arch.json"), filepath.Join(fx.other, "w.safetensors")
	missing := fx.b("missing.json")

	// The whole CLI.
	add(cUnknown, "bayesnas", exitUsage, a("trian"), `unknown command "trian"`)
	add(cUnknown, "bayesnas", exitUsage, a("describe", "--colour"), "--colour")
	add(cUnknown, "bayesnas", exitUsage, a("profile", "mesure"), "mesure")
	add(cConflict, "bayesnas", exitUsage, a("profile"), "measure")
	add(cArgs, "bayesnas", exitUsage, a("version", "extra"), "extra")
	for _, v := range []string{"-1", "NaN", "Inf", "lots"} {
		add(cRange, "bayesnas", exitUsage, a("describe", "--preset", "pyramidnet-default", "--memory-limit-gb", v), "--memory-limit-gb")
	}
	add(cUnknown, "train", exitUsage, a("train", "--config", fx.b("empty.yaml"), "--data", "synthetic", "--run-dir", run, "--log-format", "xml"), "--log-format", "xml")

	// train: the run directory given is the finished run, which no bad
	// input may touch.
	tr := func(extra ...string) []string {
		return append([]string{"train", "--data", "synthetic", "--run-dir", run}, extra...)
	}
	add(cMissing, "train", exitUsage, tr("--config", fx.b("missing.yaml")), "missing.yaml")
	add(cDir, "train", exitUsage, tr("--config", fx.b("emptydir")), "emptydir", "is a directory")
	add(cCorrupt, "train", exitUsage, tr("--config", fx.b("trunc.yaml")), "trunc.yaml:")
	add(cCorrupt, "train", exitUsage, tr("--config", fx.b("tab.yaml")), "tab.yaml:2")
	add(cType, "train", exitUsage, tr("--config", fx.b("list.yaml")), "list.yaml:1")
	add(cType, "train", exitUsage, tr("--config", fx.b("type.yaml")), "epochs")
	add(cUnknown, "train", exitUsage, tr("--config", fx.b("unknown.yaml")), "train.epoch")
	add(cRange, "train", exitUsage, tr("--config", fx.b("threads.yaml")), "threads = 100000")
	for _, fv := range []struct{ flag, val string }{
		{"epochs", "-1"}, {"epochs", "0"}, {"epochs", "1e9x"}, {"batch", "0"}, {"batch", "-32"},
		{"lr", "-0.1"}, {"lr", "0"}, {"lr", "NaN"}, {"lr", "Inf"}, {"limit", "-1"}, {"val-count", "-1"},
		{"threads", "-1"}, {"threads", "100000"}, {"seed", "-1"},
	} {
		key := map[string]string{"epochs": "epochs", "batch": "batch", "lr": "lr", "limit": "limit", "val-count": "val_count", "threads": "threads", "seed": "seed"}[fv.flag]
		add(cRange, "train", exitUsage, tr("--"+fv.flag, fv.val), key)
	}
	for _, kv := range []struct{ key, val string }{
		{"train.momentum", "-0.9"}, {"train.momentum", ".nan"}, {"train.weight_decay", "-1"}, {"train.weight_decay", ".inf"},
		{"train.min_lr", "-1"}, {"train.warmup_epochs", "-2"}, {"train.gamma", ".nan"}, {"train.label_smoothing", "1.5"},
		{"train.eval_batch", "0"}, {"data.augment.crop_pad", "-1"}, {"data.augment.cutout", "-4"}, {"data.limit", "-5"},
		{"train.milestones", "[-1]"}, {"train.lr", "1e400"},
		{"train.distill.alpha", "2"}, {"train.distill.temperature", "-1"},
	} {
		parent, leaf, _ := strings.Cut(kv.key, ".")
		body := parent + ":\n  " + leaf + ": " + kv.val + "\n"
		if strings.Count(kv.key, ".") == 2 {
			p2, l2, _ := strings.Cut(leaf, ".")
			body = parent + ":\n  " + p2 + ":\n    " + l2 + ": " + kv.val + "\n"
		}
		p := fx.b("key-" + strings.ReplaceAll(kv.key, ".", "-") + "-" + strings.Trim(kv.val, ".[]-") + ".yaml")
		_ = os.WriteFile(p, []byte(body), 0o644)
		add(cRange, "train", exitUsage, tr("--config", p), kv.key)
	}
	add(cUnknown, "train", exitUsage, tr("--builder", "resnet"), "resnet")
	add(cUnknown, "train", exitUsage, tr("--optimizer", "adam"), "--optimizer")
	add(cArgs, "train", exitUsage, tr("extra"), "extra")
	addEnv(cEnv, "train", exitUsage, map[string]string{"BAYESNAS_TRAIN_LERNRATE": "0.05"}, tr(), "BAYESNAS_TRAIN_LERNRATE")
	addEnv(cEnv, "train", exitUsage, map[string]string{"BAYESNAS_TRAIN_EPOCHS": "three"}, tr(), "train.epochs")
	addEnv(cEnv, "train", exitUsage, map[string]string{"BAYESNAS_TRAIN_LR": "NaN"}, tr(), "train.lr")
	addEnv(cEnv, "train", exitUsage, map[string]string{"BAYESNAS_THREADS": "100000"}, tr(), "threads")
	addEnv(cEnv, "train", exitUsage, map[string]string{"BAYESNAS_DATA_VAL_COUNT": "-3"}, tr(), "data.val_count")
	// Inputs read after the configuration: a new run directory, which a
	// failed run must not leave behind.
	trNew := func(extra ...string) []string {
		return append([]string{"train", "--data", "synthetic", "--run-dir", fx.s("train-new"), "--epochs", "1", "--limit", "64", "--val-count", "16"}, extra...)
	}
	add(cMissing, "train", exitGeneric, trNew("--arch", missing), "missing.json")
	add(cDir, "train", exitGeneric, trNew("--arch", fx.b("dir.json")), "dir.json")
	add(cEmpty, "train", exitGeneric, trNew("--arch", fx.b("empty.json")), "empty.json")
	add(cCorrupt, "train", exitGeneric, trNew("--arch", fx.b("trunc.json")), "trunc.json:")
	add(cCorrupt, "train", exitGeneric, trNew("--arch", fx.b("text.json")), "text.json:1:")
	add(cType, "train", exitGeneric, trNew("--arch", fx.b("type.json")), "type.json:", "name")
	add(cUnknown, "train", exitGeneric, trNew("--arch", fx.b("unknown.json")), "unknown.json", "extra_key")
	add(cData, "train", exitUsage, trNew("--data", "imagenet"), "imagenet")
	add(cData, "train", exitGeneric, trNew("--data", "mnist", "--data-dir", fx.b("nowhere")), "nowhere")
	add(cData, "train", exitGeneric, trNew("--data", "mnist", "--data-dir", fx.b("emptydir")), "emptydir")
	add(cData, "train", exitGeneric, trNew("--data", "mnist", "--data-dir", fx.b("garbage-mnist")), "train-labels-idx1-ubyte", "garbage-mnist")
	add(cData, "train", exitGeneric, trNew("--data", "cifar10", "--data-dir", fx.b("text.json")), "text.json")
	add(cData, "train", exitUsage, trNew("--val-count", "5000"), "val_count")
	add(cResume, "train", exitUsage, a("train", "--config", filepath.Join(fx.root, "train.yaml"), "--run-dir", run, "--limit", "128", "--resume", "--epochs", "3"), "train.epochs")
	add(cResume, "train", exitUsage, trNew("--resume"), "train-new", "no run to resume")
	add(cRunDir, "train", exitUsage, a("train", "--config", filepath.Join(fx.root, "train.yaml"), "--run-dir", run, "--limit", "128"), run, "--resume")
	add(cRunDir, "train", exitGeneric, trNew("--run-dir", fx.r(pipeline.ArchFile)), pipeline.ArchFile)

	// search: the run directory given is the finished search.
	se := func(extra ...string) []string {
		return append([]string{"search", "--data", "synthetic", "--run-dir", search}, extra...)
	}
	sy := func(name, body string) string {
		p := fx.b("search-" + name + ".yaml")
		_ = os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	add(cMissing, "search", exitUsage, se("--config", fx.b("missing.yaml")), "missing.yaml")
	add(cCorrupt, "search", exitUsage, se("--config", fx.b("trunc.yaml")), "trunc.yaml:")
	add(cType, "search", exitUsage, se("--config", fx.b("list.yaml")), "list.yaml:1")
	add(cUnknown, "search", exitUsage, se("--config", sy("unknown", "search:\n  iteratons: 2\n")), "iteratons")
	add(cUnknown, "search", exitUsage, se("--config", sy("toplevel", "train:\n  epochs: 2\n")), "train.epochs")
	add(cType, "search", exitUsage, se("--config", sy("type", "search:\n  iterations: many\n")), "iterations")
	for _, kv := range []struct{ key, yaml string }{
		{"iterations", "iterations: -1"}, {"batch", "batch: 0"}, {"lr", "lr: -0.1"}, {"arch_lr", "arch_lr: .nan"},
		{"curvature", "curvature: exact"}, {"curvature_batches", "curvature_batches: -1"}, {"warmup_epochs", "warmup_epochs: -1"},
		{"threshold", "derive: {threshold: .nan}"}, {"min_significance", "derive: {min_significance: -2}"},
		{"input", "space: {input: [1, 28]}"}, {"cells", "space: {cells: 0}"}, {"nodes", "space: {nodes: -1}"},
		{"penalty_step", "penalty_step: newton"}, {"lambda_op", "lambda_op: -1"},
	} {
		add(cRange, "search", exitUsage, se("--config", sy("key-"+kv.key, "search:\n  "+kv.yaml+"\n")), kv.key)
	}
	add(cUnknown, "search", exitUsage, se("--space", "darts"), "darts")
	add(cRange, "search", exitUsage, se("--limit", "-1"), "limit")
	add(cData, "search", exitUsage, se("--data", "imagenet"), "imagenet")
	addEnv(cEnv, "search", exitUsage, map[string]string{"BAYESNAS_SEARCH_ITERATIONS": "three"}, se(), "BAYESNAS_SEARCH_ITERATIONS")
	addEnv(cEnv, "search", exitUsage, map[string]string{"BAYESNAS_SEARCH_LERNRATE": "0.1"}, se(), "BAYESNAS_SEARCH_LERNRATE")
	addEnv(cEnv, "search", exitUsage, map[string]string{"BAYESNAS_SEARCH_SPACE_INPUT": "1,x,28"}, se(), "search.space.input")
	add(cRunDir, "search", exitUsage, se("--config", filepath.Join(fx.root, "search.yaml")), search, "--resume")
	add(cResume, "search", exitUsage, se("--config", sy("resume", "search:\n  iterations: 2\n"), "--resume"), "differs", search)

	// derive
	add(cConflict, "derive", exitUsage, a("derive", "--run", search), "--out")
	add(cConflict, "derive", exitUsage, a("derive", "--out", fx.s("d")), "--run")
	add(cMissing, "derive", exitGeneric, a("derive", "--run", fx.b("nowhere"), "--out", fx.s("d")), "nowhere")
	add(cRunDir, "derive", exitGeneric, a("derive", "--run", run, "--out", fx.s("d")), run)
	add(cRunDir, "derive", exitUsage, a("derive", "--run", search, "--out", search), "--out", search)
	add(cRunDir, "derive", exitUsage, a("derive", "--run", search, "--out", run), run)
	add(cCorrupt, "derive", exitGeneric, a("derive", "--run", fx.b("search-ckpt"), "--out", fx.s("d")), "checkpoint.safetensors")
	for _, fv := range []struct{ flag, val string }{{"threshold", "NaN"}, {"threshold", "-1"}, {"threshold", "Inf"}, {"min-significance", "-1"}, {"min-significance", "NaN"}, {"relative", "maybe"}} {
		add(cRange, "derive", exitUsage, a("derive", "--run", search, "--out", fx.s("d"), "--"+fv.flag+"="+fv.val), fv.flag)
	}

	// describe
	de := func(extra ...string) []string { return append([]string{"describe"}, extra...) }
	add(cMissing, "describe", exitGeneric, de("--arch", missing), "missing.json")
	add(cDir, "describe", exitGeneric, de("--arch", fx.b("dir.json")), "dir.json")
	add(cEmpty, "describe", exitGeneric, de("--arch", fx.b("empty.json")), "empty.json")
	add(cCorrupt, "describe", exitGeneric, de("--arch", fx.b("trunc.json")), "trunc.json:")
	add(cCorrupt, "describe", exitGeneric, de("--arch", fx.b("text.json")), "text.json:1:")
	add(cType, "describe", exitGeneric, de("--arch", fx.b("type.json")), "type.json:", "name")
	add(cType, "describe", exitGeneric, de("--arch", fx.b("list.json")), "list.json:")
	add(cUnknown, "describe", exitGeneric, de("--arch", fx.b("unknown.json")), "extra_key")
	add(cUnknown, "describe", exitUsage, de("--preset", "resnet-cifar10"), "resnet")
	add(cUnknown, "describe", exitUsage, de("--preset", "pyramidnet-imagenet"), "imagenet")
	add(cUnknown, "describe", exitUsage, de("--builder", "resnet"), "resnet")
	add(cCorrupt, "describe", exitUsage, de("--builder", "pyramidnet", "--params", `{"alpha": `), "--params")
	add(cUnknown, "describe", exitUsage, de("--builder", "pyramidnet", "--params", `{"alfa": 3}`), "alfa")
	add(cType, "describe", exitUsage, de("--builder", "pyramidnet", "--params", `{"alpha": "wide"}`), "alpha")
	add(cRange, "describe", exitUsage, de("--builder", "pyramidnet", "--params", `{"alpha": -48}`), "alpha")
	add(cRange, "describe", exitUsage, de("--builder", "pyramidnet", "--params", `{"blocks_per_stage": 0}`), "blocks_per_stage")
	add(cConflict, "describe", exitUsage, de(), "--preset", "--arch")
	add(cConflict, "describe", exitUsage, de("--arch", arch, "--preset", "pyramidnet-default"), "--arch", "--preset")
	add(cConflict, "describe", exitUsage, de("--builder", "pyramidnet", "--preset", "pyramidnet-default"), "--builder", "--preset")
	add(cOutput, "describe", exitGeneric, de("--arch", arch, "--out", fx.b("emptydir")), "emptydir")

	// export: --run is the finished run, whose model.onnx must stay.
	add(cMissing, "export", exitGeneric, a("export", "--run", fx.b("nowhere")), "nowhere")
	add(cRunDir, "export", exitGeneric, a("export", "--run", fx.b("emptydir")), "emptydir")
	add(cRunDir, "export", exitGeneric, a("export", "--run", search), search)
	add(cCorrupt, "export", exitGeneric, a("export", "--run", fx.b("run-weights")), "run-weights", pipeline.WeightsFile)
	add(cCorrupt, "export", exitGeneric, a("export", "--run", fx.b("run-arch")), "run-arch", pipeline.ArchFile)
	add(cCorrupt, "export", exitGeneric, a("export", "--run", fx.b("run-summary")), "run-summary", pipeline.SummaryFile)
	add(cType, "export", exitGeneric, a("export", "--run", fx.b("run-config")), "run-config", pipeline.ConfigFile, "run_dir")
	for _, v := range []string{"1", "-1", "99"} {
		add(cRange, "export", exitUsage, a("export", "--run", run, "--opset", v), "opset")
	}
	add(cConflict, "export", exitUsage, a("export"), "--run", "--arch")
	add(cConflict, "export", exitUsage, a("export", "--run", run, "--arch", arch, "--weights", weights), "--run", "--arch")
	add(cConflict, "export", exitUsage, a("export", "--arch", arch, "--out", fx.s("m.onnx")), "--weights")
	add(cConflict, "export", exitUsage, a("export", "--arch", arch, "--weights", weights), "--out")
	add(cConflict, "export", exitUsage, a("export", "--run", run, "--mean", "0.5", "--std", "0.2"), "--mean")
	ex := func(w string, extra ...string) []string {
		return append([]string{"export", "--arch", arch, "--weights", w, "--out", fx.s("m.onnx")}, extra...)
	}
	add(cMissing, "export", exitGeneric, ex(fx.b("missing.safetensors")), "missing.safetensors")
	add(cDir, "export", exitGeneric, ex(fx.b("emptydir")), "emptydir")
	add(cEmpty, "export", exitGeneric, ex(fx.b("empty.safetensors")), "empty.safetensors")
	add(cCorrupt, "export", exitGeneric, ex(fx.b("trunc.safetensors")), "trunc.safetensors")
	add(cCorrupt, "export", exitGeneric, ex(fx.b("head.safetensors")), "head.safetensors")
	add(cCorrupt, "export", exitGeneric, ex(fx.b("text.safetensors")), "text.safetensors")
	add(cCorrupt, "export", exitGeneric, ex(fx.b("huge.safetensors")), "huge.safetensors")
	add(cShape, "export", exitGeneric, ex(otherWeights), "w.safetensors")
	add(cShape, "export", exitGeneric, a("export", "--arch", otherArch, "--weights", weights, "--out", fx.s("m.onnx")), pipeline.WeightsFile)
	add(cCorrupt, "export", exitGeneric, a("export", "--arch", fx.b("trunc.json"), "--weights", weights, "--out", fx.s("m.onnx")), "trunc.json:")
	add(cRange, "export", exitUsage, ex(weights, "--mean", "0.5", "--std", "0"), "--std")
	add(cType, "export", exitUsage, ex(weights, "--mean", "half", "--std", "0.5"), "--mean")
	add(cMissing, "export", exitUsage, a("export", "--run", run, "--config", fx.b("missing.yaml")), "missing.yaml")
	add(cCorrupt, "export", exitUsage, a("export", "--run", run, "--config", fx.b("trunc.yaml")), "trunc.yaml:")
	add(cMissing, "export", exitGeneric, a("export", "--run", run, "--validate", "--onnxruntime-lib", fx.b("libnothing.so")), "libnothing.so")
	for _, fv := range []struct{ flag, val string }{{"batch", "0"}, {"repeats", "0"}, {"test-images", "-1"}, {"threads", "-2"}} {
		add(cRange, "export", exitUsage, a("export", "--run", run, "--validate", "--"+fv.flag, fv.val), fv.flag)
	}

	// validate: the run's model and run directory (validation.json).
	va := func(m string, extra ...string) []string {
		return append([]string{"validate", m, "--run", run}, extra...)
	}
	add(cMissing, "validate", exitGeneric, va(fx.b("missing.onnx")), "missing.onnx")
	add(cDir, "validate", exitGeneric, va(fx.b("emptydir")), "emptydir")
	add(cEmpty, "validate", exitGeneric, va(fx.b("empty.onnx")), "empty.onnx")
	add(cCorrupt, "validate", exitGeneric, va(fx.b("trunc.onnx")), "trunc.onnx")
	add(cCorrupt, "validate", exitGeneric, va(fx.b("text.onnx")), "text.onnx")
	add(cMissing, "validate", exitGeneric, a("validate", model, "--run", fx.s("nowhere")), "nowhere")
	add(cRunDir, "validate", exitGeneric, a("validate", model, "--run", search), search)
	add(cCorrupt, "validate", exitGeneric, a("validate", model, "--run", fx.b("run-weights")), pipeline.WeightsFile)
	add(cConflict, "validate", exitUsage, a("validate", model), "run")
	add(cArgs, "validate", exitUsage, a("validate", "--run", run), "arg")
	add(cArgs, "validate", exitUsage, a("validate", model, model, "--run", run), "arg")
	for _, fv := range []struct{ flag, val string }{{"batch", "0"}, {"batch", "-4"}, {"repeats", "0"}, {"repeats", "-1"}, {"test-images", "-1"}, {"threads", "-1"}} {
		add(cRange, "validate", exitUsage, va(model, "--"+fv.flag, fv.val), fv.flag)
	}
	add(cMissing, "validate", exitGeneric, va(model, "--onnxruntime-lib", fx.b("libnothing.so")), "libnothing.so")
	add(cUnknown, "validate", exitUsage, va(model, "--backend", "magic"), "--backend", "magic")
	add(cUnknown, "export", exitUsage, a("export", "--run", run, "--validate", "--backend", "cuda"), "--backend", "CUDA")
	add(cDir, "validate", exitUsage, va(model, "--config", fx.b("emptydir")), "emptydir")

	// import
	im := func(file string, extra ...string) []string {
		return append([]string{"import", "proxylessnas", file, "--out", fx.s("imported.json")}, extra...)
	}
	add(cMissing, "import", exitGeneric, im(fx.b("missing.config")), "missing.config")
	add(cDir, "import", exitGeneric, im(fx.b("emptydir")), "emptydir")
	add(cEmpty, "import", exitGeneric, im(fx.b("empty.config")), "empty.config")
	add(cCorrupt, "import", exitGeneric, im(fx.b("trunc.config")), "trunc.config")
	add(cType, "import", exitGeneric, im(fx.b("list.config")), "list.config")
	add(cType, "import", exitGeneric, im(fx.b("type.config")), "type.config", "blocks")
	add(cUnknown, "import", exitGeneric, im(fx.b("layer.config")), "layer.config", "WarpBlock")
	add(cUnknown, "import", exitGeneric, im(fx.b("net.config")), "net.config", "ResNet50")
	add(cArgs, "import", exitUsage, a("import", "proxylessnas"), "arg")
	add(cUnknown, "import", exitUsage, a("import", "darts", fx.b("net.config")), "darts")
	add(cConflict, "import", exitUsage, a("import"), "proxylessnas")

	// profile measure: the profile (--out) must stay as it was.
	pm := func(extra ...string) []string {
		return append([]string{"profile", "measure", "--out", fx.s("p.yaml"), "--space", "proxy"}, extra...)
	}
	add(cConflict, "profile measure", exitUsage, a("profile", "measure", "--space", "proxy"), "--out")
	add(cConflict, "profile measure", exitUsage, a("profile", "measure", "--out", fx.s("p.yaml")), "--space")
	add(cUnknown, "profile measure", exitUsage, a("profile", "measure", "--out", fx.s("p.yaml"), "--space", "darts"), "darts")
	add(cMissing, "profile measure", exitGeneric, a("profile", "measure", "--out", fx.s("p.yaml"), "--arch", missing), "missing.json")
	add(cCorrupt, "profile measure", exitGeneric, a("profile", "measure", "--out", fx.s("p.yaml"), "--arch", fx.b("trunc.json")), "trunc.json:")
	add(cMissing, "profile measure", exitGeneric, a("profile", "measure", "--out", fx.s("p.yaml"), "--run", fx.b("nowhere")), "nowhere")
	add(cMissing, "profile measure", exitUsage, a("profile", "measure", "--out", fx.s("p.yaml"), "--search-config", fx.b("missing.yaml")), "missing.yaml")
	add(cUnknown, "profile measure", exitUsage, a("profile", "measure", "--out", fx.s("p.yaml"), "--search-config", fx.b("unknown.yaml")), "train.epoch")
	for _, fv := range []struct{ flag, val string }{
		{"samples", "-1"}, {"grid-step", "-8"}, {"rounds", "0"}, {"sessions", "0"}, {"calibrate", "-1"},
		{"batch", "0"}, {"warmup", "-1"}, {"repeats", "0"}, {"plugin-timeout", "-1"}, {"plugin-timeout", "NaN"}, {"threads", "-1"},
	} {
		add(cRange, "profile measure", exitUsage, pm("--"+fv.flag, fv.val), fv.flag)
	}
	add(cUnknown, "profile measure", exitUsage, pm("--graph-optimization", "max"), "max")
	add(cProfile, "profile measure", exitGeneric, a("profile", "measure", "--out", fx.b("trunc-profile.yaml"), "--space", "proxy", "--missing-only"), "trunc-profile.yaml")
	add(cProfile, "profile measure", exitGeneric, a("profile", "measure", "--out", fx.b("hash-profile.yaml"), "--space", "proxy", "--missing-only"), "hash-profile.yaml")
	add(cOutput, "profile measure", exitGeneric, a("profile", "measure", "--out", fx.b("emptydir"), "--space", "proxy"), "emptydir")

	// profile predict
	pp := func(p, ar string, extra ...string) []string {
		return append([]string{"profile", "predict", "--profile", p, "--arch", ar}, extra...)
	}
	add(cConflict, "profile predict", exitUsage, a("profile", "predict", "--arch", arch), "--profile")
	add(cConflict, "profile predict", exitUsage, a("profile", "predict", "--profile", prof), "--arch")
	add(cMissing, "profile predict", exitGeneric, pp(fx.b("missing-profile.yaml"), arch), "missing-profile.yaml")
	add(cDir, "profile predict", exitGeneric, pp(fx.b("emptydir"), arch), "emptydir")
	add(cEmpty, "profile predict", exitGeneric, pp(fx.b("empty-profile.yaml"), arch), "empty-profile.yaml")
	add(cProfile, "profile predict", exitGeneric, pp(fx.b("trunc-profile.yaml"), arch), "trunc-profile.yaml")
	add(cProfile, "profile predict", exitGeneric, pp(fx.b("hash-profile.yaml"), arch), "hash-profile.yaml", "hash")
	add(cProfile, "profile predict", exitGeneric, pp(fx.b("schema-profile.yaml"), arch), "schema-profile.yaml", "schema")
	add(cProfile, "profile predict", exitGeneric, pp(fx.b("text-profile.yaml"), arch), "text-profile.yaml")
	add(cMissing, "profile predict", exitGeneric, pp(prof, missing), "missing.json")
	add(cCorrupt, "profile predict", exitGeneric, pp(prof, fx.b("trunc.json")), "trunc.json:")
	add(cShape, "profile predict", exitGeneric, pp(prof, arch, "--weights", otherWeights), "w.safetensors")
	add(cCorrupt, "profile predict", exitGeneric, pp(prof, arch, "--weights", fx.b("trunc.safetensors")), "trunc.safetensors")
	add(cShape, "profile predict", exitGeneric, pp(prof, otherArch), "input")

	// profile check
	pc := func(extra ...string) []string { return append([]string{"profile", "check"}, extra...) }
	add(cConflict, "profile check", exitUsage, pc("--space", "proxy"), "--profile")
	add(cConflict, "profile check", exitUsage, pc("--profile", prof), "--space")
	add(cUnknown, "profile check", exitUsage, pc("--profile", prof, "--space", "darts"), "darts")
	add(cMissing, "profile check", exitGeneric, pc("--profile", fx.b("missing-profile.yaml"), "--space", "proxy"), "missing-profile.yaml")
	add(cProfile, "profile check", exitGeneric, pc("--profile", fx.b("trunc-profile.yaml"), "--space", "proxy"), "trunc-profile.yaml")
	for _, fv := range []struct{ flag, val string }{{"n", "0"}, {"n", "-3"}, {"sessions", "0"}, {"repeats", "0"}, {"batch", "-1"}} {
		add(cRange, "profile check", exitUsage, pc("--profile", prof, "--space", "proxy", "--"+fv.flag, fv.val), fv.flag)
	}

	// compress: --run is the finished run; --out a new directory that a
	// failed compression must not create.
	co := func(extra ...string) []string {
		return append([]string{"compress", "--run", run, "--profile", prof, "--budget", "0.5x", "--out", fx.s("c"), "--verify=false", "--epochs", "0"}, extra...)
	}
	for _, b := range []string{"2.5", "-1ms", "0x", "1.5x", "NaNms", "Infms", "0ms", "fast", "0.5 x"} {
		add(cBudget, "compress", exitUsage, co("--budget", b), "budget", b)
	}
	add(cConflict, "compress", exitUsage, a("compress", "--run", run, "--profile", prof, "--out", fx.s("c")), "--budget")
	add(cConflict, "compress", exitUsage, a("compress", "--run", run, "--budget", "0.5x", "--out", fx.s("c")), "--profile")
	add(cConflict, "compress", exitUsage, a("compress", "--run", run, "--profile", prof, "--budget", "0.5x"), "--out")
	add(cUnknown, "compress", exitUsage, co("--method", "magnitude"), "magnitude")
	for _, fv := range []struct{ flag, val string }{
		{"multiple", "0"}, {"multiple", "-8"}, {"epochs", "-1"}, {"lr", "-0.1"}, {"lr", "NaN"}, {"lambda", "-1"}, {"lambda", "NaN"},
		{"reach", "0"}, {"reach", "2"}, {"sparsity-epochs", "-1"}, {"data-limit", "-1"},
		{"distill", "1.5"}, {"distill", "-0.5"}, {"distill", "NaN"}, {"distill-temperature", "0"},
	} {
		add(cRange, "compress", exitUsage, co("--"+fv.flag, fv.val), fv.flag)
	}
	for _, fv := range []struct{ flag, val string }{{"verify-margin", "-0.1"}, {"verify-margin", "NaN"}, {"verify-tries", "0"}, {"rounds", "0"}} {
		add(cRange, "compress", exitUsage, co("--verify=true", "--"+fv.flag, fv.val), fv.flag)
	}
	add(cMissing, "compress", exitGeneric, a("compress", "--run", fx.b("nowhere"), "--profile", prof, "--budget", "0.5x", "--out", fx.s("c")), "nowhere")
	add(cRunDir, "compress", exitGeneric, a("compress", "--run", search, "--profile", prof, "--budget", "0.5x", "--out", fx.s("c")), search)
	add(cRunDir, "compress", exitUsage, a("compress", "--run", run, "--profile", prof, "--budget", "0.5x", "--out", run), "--out")
	add(cRunDir, "compress", exitUsage, a("compress", "--run", run, "--profile", prof, "--budget", "0.5x", "--out", search, "--verify=false"), "--out", search)
	add(cCorrupt, "compress", exitGeneric, co("--run", fx.b("run-weights")), pipeline.WeightsFile)
	add(cProfile, "compress", exitGeneric, co("--profile", fx.b("missing-profile.yaml")), "missing-profile.yaml")
	add(cProfile, "compress", exitGeneric, co("--profile", fx.b("trunc-profile.yaml")), "trunc-profile.yaml")
	add(cProfile, "compress", exitGeneric, co("--profile", fx.b("hash-profile.yaml")), "hash-profile.yaml")
	add(cResume, "compress", exitUsage, co("--resume"), "--resume")

	// pipeline: --run the finished training run (not a pipeline's: every
	// case fails before any stage).
	pi := func(extra ...string) []string {
		return append([]string{"pipeline", "--config", fx.pipeCfg, "--run", run}, extra...)
	}
	py := func(name, body string) string {
		p := fx.b("pipeline-" + name + ".yaml")
		_ = os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	for _, b := range []string{"2.5", "-1ms", "0x", "2x"} {
		add(cBudget, "pipeline", exitUsage, pi("--budget", b), "budget", b)
	}
	addEnv(cBudget, "pipeline", exitUsage, map[string]string{"BAYESNAS_BUDGET": "0x"}, pi(), "budget", "0x")
	add(cStage, "pipeline", exitUsage, pi("--stages", "serach"), "serach")
	add(cStage, "pipeline", exitUsage, pi("--stages", "export,search"), "export")
	add(cStage, "pipeline", exitStale, a("pipeline", "--config", fx.pipeCfg, "--run", fx.s("pipe"), "--stages", "export"), "search")
	add(cProfile, "pipeline", exitUsage, pi("--profile", fx.b("missing-profile.yaml")), "missing-profile.yaml")
	add(cProfile, "pipeline", exitUsage, pi("--profile", fx.b("trunc-profile.yaml")), "trunc-profile.yaml")
	add(cProfile, "pipeline", exitUsage, pi("--profile", fx.b("emptydir")), "emptydir")
	add(cUnknown, "pipeline", exitUsage, pi("--method", "magnitude"), "magnitude")
	add(cCorrupt, "pipeline", exitUsage, pi("--config", fx.b("trunc.yaml")), "trunc.yaml:")
	add(cUnknown, "pipeline", exitUsage, pi("--config", py("unknown", "retrain: {epoch: 3}\n")), "retrain.epoch")
	for _, kv := range []struct{ key, yaml string }{
		{"retrain.epochs", "retrain: {epochs: -1}"}, {"retrain.lr", "retrain: {lr: .nan}"}, {"compress.multiple", "compress: {multiple: 0}"},
		{"compress.epochs", "compress: {epochs: 0}"}, {"compress.verify_margin", "compress: {verify_margin: 0.9}"},
		{"compress.distill", "compress: {distill: 1.5}"}, {"compress.distill_temperature", "compress: {distill_temperature: -4}"},
		{"device.threads", "device: {threads: 100000}"}, {"export.repeats", "export: {repeats: 0}"}, {"search", "search: {iterations: -1}"},
		{"compress.lambda", "compress: {lambda: -1}"}, {"export.opset", "export: {opset: 99}"}, {"export.test_images", "export: {test_images: -1}"},
	} {
		add(cRange, "pipeline", exitUsage, pi("--config", py("key-"+kv.key, "data: {name: synthetic, val_count: 16, limit: 64}\nbudget: 0.8x\n"+kv.yaml+"\n"), "--profile", prof), kv.key)
	}
	add(cRange, "pipeline", exitUsage, pi("--limit", "-1"), "limit")
	add(cData, "pipeline", exitUsage, pi("--data", "imagenet"), "imagenet")
	addEnv(cEnv, "pipeline", exitUsage, map[string]string{"BAYESNAS_RETRAIN_LERNRATE": "0.1"}, pi(), "BAYESNAS_RETRAIN_LERNRATE")
	addEnv(cEnv, "pipeline", exitUsage, map[string]string{"BAYESNAS_COMPRESS_EPOCHS": "one"}, pi(), "compress.epochs")

	// A misspelt BAYESNAS_* variable, for every command (a CI job sets them
	// once for all its steps).
	typo := map[string]string{"BAYESNAS_CAHCE": "/tmp"}
	addEnv(cEnv, "describe", exitUsage, typo, de("--arch", arch), "BAYESNAS_CAHCE")
	addEnv(cEnv, "export", exitUsage, typo, a("export", "--run", run), "BAYESNAS_CAHCE")
	addEnv(cEnv, "validate", exitUsage, typo, va(model), "BAYESNAS_CAHCE")
	addEnv(cEnv, "derive", exitUsage, typo, a("derive", "--run", search, "--out", fx.s("d")), "BAYESNAS_CAHCE")
	addEnv(cEnv, "import", exitUsage, typo, im(fx.b("net.config")), "BAYESNAS_CAHCE")
	addEnv(cEnv, "profile predict", exitUsage, typo, pp(prof, arch), "BAYESNAS_CAHCE")
	addEnv(cEnv, "compress", exitUsage, typo, co(), "BAYESNAS_CAHCE")
	addEnv(cEnv, "profile measure", exitUsage, typo, pm(), "BAYESNAS_CAHCE")

	// Networks too large to compile: refused before allocating.
	huge := fx.b("huge.json")
	hugeArch := regexp.MustCompile(`"out_channels": *[0-9]+`).ReplaceAll(readFileOrNil(arch), []byte(`"out_channels": 2000000`))
	_ = os.WriteFile(huge, hugeArch, 0o644)
	add(cOversized, "train", exitGeneric, trNew("--arch", huge), "huge.json", "GiB")
	add(cOversized, "export", exitGeneric, a("export", "--arch", huge, "--weights", weights, "--out", fx.s("m.onnx")), "huge.json")
	add(cOversized, "profile predict", exitGeneric, pp(prof, huge), "huge.json")
	return cs
}

func readFileOrNil(p string) []byte {
	b, _ := os.ReadFile(p)
	return b
}
