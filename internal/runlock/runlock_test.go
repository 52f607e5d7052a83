package runlock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The helper process: locks the directory in $RUNLOCK_HELPER_DIR, says so
// on stdout, and holds the lock until stdin closes (or it is killed).
func TestMain(m *testing.M) {
	if dir := os.Getenv("RUNLOCK_HELPER_DIR"); dir != "" {
		l, err := Acquire(dir)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		bufio.NewReader(os.Stdin).ReadString('\n')
		l.Release()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holder starts a helper process that holds dir's lock.
func holder(t *testing.T, dir string) (*exec.Cmd, *os.File) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RUNLOCK_HELPER_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper: %q", line)
	}
	return cmd, stdin.(*os.File)
}

// A second writer in the same process (its own open file) fails at once,
// naming the directory and the holder; after Release the directory is free.
func TestSecondWriterFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("second Acquire: %v", err)
	}
	want := fmt.Sprintf("run directory %s is in use by pid %d (%s", dir, os.Getpid(), filepath.Base(os.Args[0]))
	if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("message %q, want one line starting %q", err, want)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	l2.Release()
}

// Another process holds the lock: refused with its pid; it exits normally,
// or is killed with SIGKILL leaving its lock file behind: the directory is
// free either way.
func TestOtherProcess(t *testing.T) {
	for _, kill := range []bool{false, true} {
		dir := t.TempDir()
		cmd, stdin := holder(t, dir)
		_, err := Acquire(dir)
		var le *LockedError
		if !errors.As(err, &le) || le.PID != cmd.Process.Pid || !strings.Contains(le.Command, "-test.run") {
			t.Fatalf("while another process holds it: %v", err)
		}
		if kill {
			cmd.Process.Kill()
		} else {
			stdin.Close()
		}
		cmd.Wait()
		if _, err := os.Stat(filepath.Join(dir, File)); err != nil {
			t.Fatal(err)
		}
		l, err := Acquire(dir)
		if err != nil {
			t.Fatalf("after the holder ended (killed: %v): %v", kill, err)
		}
		l.Release()
	}
}
