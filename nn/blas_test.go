package nn

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBLASCoreTypeFor(t *testing.T) {
	set := func(names ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	cases := []struct {
		flags map[string]bool
		want  string
	}{
		{set("sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"), "SkylakeX"},
		{set("sse2", "avx", "avx2", "fma", "avx512f"), "Haswell"}, // Knights Landing-like: no BW/VL
		{set("sse2", "avx", "avx2", "fma"), "Haswell"},
		{set("sse2", "avx"), ""},
		{set(), ""},
	}
	for _, c := range cases {
		if got := blasCoreTypeFor(c.flags); got != c.want {
			t.Errorf("flags %v: got %q, want %q", c.flags, got, c.want)
		}
	}
}

func TestCPUFlags(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cpuinfo")
	if err := os.WriteFile(p, []byte("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fl, err := cpuFlags(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fl["avx2"] || !fl["fma"] || fl["other"] || len(fl) != 4 {
		t.Errorf("flags of first cpu: got %v", fl)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("processor: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cpuFlags(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("no flags line: got error %v, want one naming %s", err, empty)
	}
	if _, err := cpuFlags(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: got no error")
	}
}

func TestEnsureBLASCoreTypeRespectsEnvironment(t *testing.T) {
	if !openBLASLinked {
		if got := EnsureBLASCoreType(); !strings.Contains(got, "pure Go") {
			t.Errorf("pure-Go build: note %q", got)
		}
		return
	}
	t.Setenv("OPENBLAS_CORETYPE", "Zen")
	t.Setenv(blasReexecMarker, "")
	if got, want := EnsureBLASCoreType(), "openblas core type Zen (from environment)"; got != want {
		t.Errorf("note %q, want %q", got, want)
	}
	t.Setenv(blasReexecMarker, "1")
	if got, want := EnsureBLASCoreType(), "openblas core type Zen (set by bayesnas)"; got != want {
		t.Errorf("note %q, want %q", got, want)
	}
}

// TestEnsureBLASCoreTypeReexec runs this test binary without
// OPENBLAS_CORETYPE: its TestMain must re-exec it once with the core type
// chosen for this CPU, and OpenBLAS must then report that core.
func TestEnsureBLASCoreTypeReexec(t *testing.T) {
	if !openBLASLinked {
		t.Skip("no OpenBLAS linked: nothing to re-exec for")
	}
	flags, err := cpuFlags("/proc/cpuinfo")
	if err != nil {
		t.Skipf("cannot read cpu flags: %v", err)
	}
	want := blasCoreTypeFor(flags)
	if want == "" {
		t.Skip("CPU has neither AVX2 nor AVX-512: no core type is forced")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBLASHelperProcess$", "-test.v")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPENBLAS_CORETYPE=") && !strings.HasPrefix(kv, blasReexecMarker+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "BAYESNAS_BLAS_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, s := range []string{"note: openblas core type " + want + " (set by bayesnas)", "core " + want} {
		if !strings.Contains(string(out), s) {
			t.Errorf("helper output lacks %q:\n%s", s, out)
		}
	}
}

// TestBLASHelperProcess only reports, for TestEnsureBLASCoreTypeReexec.
func TestBLASHelperProcess(t *testing.T) {
	if os.Getenv("BAYESNAS_BLAS_HELPER") != "1" {
		t.Skip("helper process of TestEnsureBLASCoreTypeReexec")
	}
	t.Logf("note: %s", blasNote)
	t.Logf("info: %s", BLASInfo())
}

// The note says when the environment's core type is slower than the CPU's
// best, and only then.
func TestSlowerCoreNote(t *testing.T) {
	for _, tc := range []struct {
		env, best string
		says      bool
	}{
		{"Haswell", "SkylakeX", true}, {"haswell", "SkylakeX", true}, {"SkylakeX", "SkylakeX", false},
		{"skylakex", "SkylakeX", false}, {"SkylakeX", "Haswell", false}, {"Haswell", "", false},
		{"Zen", "SkylakeX", false}, // a core type bayesnas does not rank: no claim
	} {
		got := slowerCoreNote(tc.env, tc.best)
		if (got != "") != tc.says || tc.says && !strings.Contains(got, "unset OPENBLAS_CORETYPE") {
			t.Errorf("env %s, best %s: note %q", tc.env, tc.best, got)
		}
	}
}
