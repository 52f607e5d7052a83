package nn

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// blasReexecMarker is set in the environment of the re-executed process, so
// that a process whose OPENBLAS_CORETYPE somehow did not survive the exec
// does not exec itself forever, and so the log can say who chose the value.
const blasReexecMarker = "BAYESNAS_BLAS_REEXEC"

// EnsureBLASCoreType makes OpenBLAS use kernels that suit this CPU. Debian's
// OpenBLAS 0.3.21 reads OPENBLAS_CORETYPE once, when the library loads, and
// its own detection is unreliable on recent CPUs (it falls back to SSE3
// kernels on some AVX-512 machines), so when the variable is unset this sets
// it and replaces the process with a fresh copy of itself (syscall.Exec).
// A value already in the environment is respected. Call it first thing in
// main, before any work worth losing; it returns a one-line note for the log.
//
// SkylakeX is chosen for AVX-512 CPUs: on the AMD EPYC (Zen 5) development
// machine it passes the GEMM tests and ran 1.4-2x faster than Haswell.
func EnsureBLASCoreType() (note string) {
	if !openBLASLinked {
		return "openblas not linked (pure Go GEMM)"
	}
	if v := os.Getenv("OPENBLAS_CORETYPE"); v != "" {
		if os.Getenv(blasReexecMarker) != "" {
			return fmt.Sprintf("openblas core type %s (set by bayesnas)", v)
		}
		note := fmt.Sprintf("openblas core type %s (from environment)", v)
		if flags, err := cpuFlags("/proc/cpuinfo"); err == nil {
			note += slowerCoreNote(v, blasCoreTypeFor(flags))
		}
		return note
	}
	if os.Getenv(blasReexecMarker) != "" {
		return "openblas core type detected by openblas (re-exec lost OPENBLAS_CORETYPE)"
	}
	flags, err := cpuFlags("/proc/cpuinfo")
	if err != nil {
		return fmt.Sprintf("openblas core type detected by openblas (%v)", err)
	}
	core := blasCoreTypeFor(flags)
	if core == "" {
		return "openblas core type detected by openblas (no AVX2 or AVX-512)"
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Sprintf("openblas core type detected by openblas (cannot find own binary to re-exec: %v)", err)
	}
	env := append(os.Environ(), "OPENBLAS_CORETYPE="+core, blasReexecMarker+"=1")
	err = syscall.Exec(exe, os.Args, env) // returns only on failure
	return fmt.Sprintf("openblas core type detected by openblas (re-exec of %s failed: %v)", exe, err)
}

// blasCoreTypeFor picks the OpenBLAS core type for a set of CPU flags
// (as named in /proc/cpuinfo), or "" to leave OpenBLAS's detection alone.
func blasCoreTypeFor(flags map[string]bool) string {
	switch {
	case flags["avx512f"] && flags["avx512bw"] && flags["avx512vl"] && flags["avx512dq"]:
		return "SkylakeX"
	case flags["avx2"] && flags["fma"]:
		return "Haswell"
	}
	return ""
}

// coreRank orders the core types bayesnas chooses by their speed on the
// CPUs that support them; a core type it does not choose ranks 0.
var coreRank = map[string]int{"Haswell": 1, "SkylakeX": 2}

// slowerCoreNote is what the log adds when the environment's core type env
// is slower than best, the one this CPU could run: on the AMD EPYC (Zen 5)
// development machine OPENBLAS_CORETYPE=Haswell, set by its environment,
// ran 3x3 convolution at 72.6 GFLOP/s against SkylakeX's 120.8, and the
// GEMM reference suite, the conformance suite and the models' tests pass
// under SkylakeX. "" when env is as fast or unknown.
func slowerCoreNote(env, best string) string {
	if best == "" || strings.EqualFold(env, best) || coreRank[best] <= coreRank[canonicalCore(env)] || coreRank[canonicalCore(env)] == 0 {
		return ""
	}
	return fmt.Sprintf("; this CPU supports %s, which runs convolution up to 1.7x faster: unset OPENBLAS_CORETYPE to let bayesnas choose it", best)
}

// canonicalCore spells a core type as coreRank does (OpenBLAS reads the
// variable without regard to case).
func canonicalCore(s string) string {
	for k := range coreRank {
		if strings.EqualFold(k, s) {
			return k
		}
	}
	return s
}

// cpuFlags reads the feature flags of the first CPU in a cpuinfo file.
func cpuFlags(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading cpu flags: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		flags := map[string]bool{}
		for _, fl := range strings.Fields(val) {
			flags[fl] = true
		}
		return flags, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading cpu flags from %s: %w", path, err)
	}
	return nil, fmt.Errorf("reading cpu flags: no flags line in %s", path)
}
