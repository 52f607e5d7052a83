// Package runlock keeps two commands from writing one run directory at
// once: a run directory written by two trainings ends up mixed (the config of
// one, the weights of the other), and CI caches share run directories
// between jobs.
//
// The lock is an advisory flock(2) on RUN/.lock. The kernel drops it when
// the holding process exits, however it exits (kill -9 included), so a lock
// file left behind by a killed process never blocks the next run: no stale
// lock to clean up, unlike a lock that is the file's existence. The file
// also records the holder's pid and command line, so the second writer can
// say who holds the directory.
//
// flock is taken per open file, not per process: a second Acquire of the
// same directory in the same process fails too. A caller that already holds
// the lock and calls code that would take it again (compress fine-tuning in
// its own output directory) must pass the lock down, not take it twice.
package runlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// File is the lock file inside a run directory.
const File = ".lock"

// ErrLocked is matched (errors.Is) by the error of Acquire when another
// writer holds the directory.
var ErrLocked = errors.New("run directory is locked")

// LockedError says which directory is in use and by whom.
type LockedError struct {
	Dir     string
	PID     int    // 0 when the holder recorded none (yet)
	Command string // the holder's command line, "" when unknown
}

func (e *LockedError) Error() string {
	switch {
	case e.PID > 0 && e.Command != "":
		return fmt.Sprintf("run directory %s is in use by pid %d (%s)", e.Dir, e.PID, e.Command)
	case e.PID > 0:
		return fmt.Sprintf("run directory %s is in use by pid %d", e.Dir, e.PID)
	}
	return fmt.Sprintf("run directory %s is in use by another process", e.Dir)
}

// Is makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Lock is a held run directory lock.
type Lock struct {
	dir string
	f   *os.File
}

// Dir is the locked run directory.
func (l *Lock) Dir() string { return l.dir }

// Acquire locks dir (created if missing) for writing, or fails at once with
// a *LockedError naming the holder: a second writer should stop, not wait
// for a training that may run for hours.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("locking run directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, File)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking run directory %s: %w", dir, err)
	}
	busy, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking run directory %s: %w", dir, err)
	}
	if busy {
		// The holder writes its identity right after locking; a reader that
		// comes in between sees an empty file and says "another process".
		b, _ := os.ReadFile(path)
		f.Close()
		pid, cmd := parseHolder(string(b))
		return nil, &LockedError{Dir: dir, PID: pid, Command: cmd}
	}
	if err := writeHolder(f); err != nil {
		unlock(f)
		f.Close()
		return nil, fmt.Errorf("locking run directory %s: recording the holder in %s: %w", dir, path, err)
	}
	return &Lock{dir: dir, f: f}, nil
}

// Release unlocks the directory. The file stays: removing it would let a
// process that opened it before the removal lock an orphaned inode while a
// third locks a new file, both believing they hold the directory.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Clear the holder first, so no one reads a finished process as the
	// holder; the flock itself is what excludes.
	l.f.Truncate(0)
	err := unlock(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlocking run directory %s: %w", l.dir, err)
	}
	return nil
}

// writeHolder records this process in the lock file: "pid\ncommand line\n".
func writeHolder(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	args := append([]string{filepath.Base(os.Args[0])}, os.Args[1:]...)
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"+strings.Join(args, " ")+"\n"), 0)
	return err
}

func parseHolder(s string) (pid int, cmd string) {
	first, rest, _ := strings.Cut(s, "\n")
	pid, _ = strconv.Atoi(strings.TrimSpace(first))
	return pid, strings.TrimSpace(rest)
}
