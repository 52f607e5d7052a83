package pipeline

import (
	"errors"

	"bayesnas/internal/runlock"
	"bayesnas/onnxrt"
)

// Exit codes of bayesnas, in one place so that CI scripts and the code
// agree on them: a pipeline job retries a locked directory, fails the
// device on a missed budget and rebuilds the cache on stale inputs.
const (
	ExitGeneric    = 1 // anything not listed below
	ExitUsage      = 2 // a bad flag, argument or configuration
	ExitValidation = 3 // ONNX Runtime and our engine disagree beyond tolerance
	ExitBudget     = 4 // the latency budget is missed (predicted by compress, measured by export)
	ExitStale      = 5 // a stage's inputs are missing or stale
	ExitLocked     = 6 // the run directory is in use by another writer
)

// The kinds of error that have their own exit code; match with errors.Is.
var (
	ErrUsage      = errors.New("usage or configuration error")
	ErrValidation = errors.New("validation failed")
	ErrBudget     = errors.New("latency budget missed")
	ErrStale      = errors.New("stage inputs missing or stale")
	ErrLocked     = runlock.ErrLocked
)

// kindError gives err a kind for errors.Is without changing its message:
// main prints the message as the one-line reason, and a prefix such as
// "latency budget missed: " before every message would say it twice.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string        { return e.err.Error() }
func (e *kindError) Unwrap() error        { return e.err }
func (e *kindError) Is(target error) bool { return target == e.kind }

// Mark returns err, matching kind under errors.Is; nil stays nil.
func Mark(kind, err error) error {
	if err == nil || errors.Is(err, kind) {
		return err
	}
	return &kindError{kind: kind, err: err}
}

// ExitCode is the process exit status for err (0 for nil). A lock comes
// first: a run that could not start says so whatever else went wrong.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrLocked):
		return ExitLocked
	case errors.Is(err, ErrUsage):
		return ExitUsage
	case errors.Is(err, ErrStale):
		return ExitStale
	case errors.Is(err, ErrBudget):
		return ExitBudget
	case errors.Is(err, ErrValidation), errors.Is(err, onnxrt.ErrTolerance):
		return ExitValidation
	}
	return ExitGeneric
}
