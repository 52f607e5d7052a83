package hwprofile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PluginProtocol is the version of the JSON-lines protocol spoken with device
// plug-ins (PLUGINS.md); every request and answer carries it.
const PluginProtocol = "bayesnas.device/v1"

// DefaultPluginTimeout bounds each request to a plug-in when its spec sets no
// timeout: loading and timing one model, the slowest request, takes seconds.
const DefaultPluginTimeout = 120 * time.Second

// closeGrace is how long Close waits for a plug-in to exit after its stdin
// is closed before killing it. Generous: Node under a loaded 2-core CI
// machine (parallel test packages) took over 2 s to exit cleanly.
const closeGrace = 10 * time.Second

// stderrTail is how much of a plug-in's stderr is kept for error messages.
const stderrTail = 4096

// maxLine bounds one line a plug-in writes on stdout.
const maxLine = 1 << 20

// errExited and errStdoutClosed say a plug-in went away mid-request.
var (
	errExited       = errors.New("exited without answering")
	errStdoutClosed = errors.New("closed its stdout without answering")
)

// ErrUnsupported is wrapped by errors for requests a plug-in does not
// implement (it answered with error code "unsupported").
var ErrUnsupported = errors.New("not supported by this device plug-in")

// PluginSpec says how to start a device plug-in.
type PluginSpec struct {
	// Command is the executable and its arguments. The executable is looked
	// up on PATH, or, when it contains a slash, taken relative to the
	// caller's working directory. The other arguments are passed as they
	// are, and the plug-in runs in a temporary directory: paths in them must
	// be absolute.
	Command []string `yaml:"command" json:"command"`
	// TimeoutSeconds bounds each request; 0 means DefaultPluginTimeout.
	TimeoutSeconds float64 `yaml:"timeout_s,omitempty" json:"timeout_s,omitempty"`
}

// Plugin is a device plug-in process: an executable that answers the
// requests of the protocol in PLUGINS.md, one JSON object per line on its
// stdin and stdout. Requests are serialised. After a protocol violation, a
// crash or a timeout the process is killed and every later call returns an
// error; Close is still needed to remove its working directory.
type Plugin struct {
	name    string // the command, for error messages
	timeout time.Duration
	dir     string // working directory, removed by Close
	cmd     *exec.Cmd
	stdin   *os.File
	stdout  *os.File
	stderr  *tailBuffer
	lines   chan readLine
	done    chan struct{} // closed by Close: stops the reader
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // the process's exit, valid once exited is closed

	mu     sync.Mutex
	nextID int64
	dead   error // the failure that made the plug-in unusable
	closed bool
}

var _ Device = (*Plugin)(nil)

type readLine struct {
	line []byte
	err  error
}

// OpenPlugin starts the plug-in and asks it to describe itself (the
// handshake): a plug-in that does not answer in the protocol's version is
// refused. The context bounds the handshake only.
func OpenPlugin(ctx context.Context, spec PluginSpec) (*Plugin, error) {
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, errors.New("device plug-in: empty command")
	}
	name := strings.Join(spec.Command, " ")
	timeout := DefaultPluginTimeout
	switch t := spec.TimeoutSeconds; {
	case t < 0 || math.IsNaN(t) || math.IsInf(t, 0):
		return nil, fmt.Errorf("plug-in %q: timeout_s is %v; want a positive number of seconds (0 for the default %v)", name, t, DefaultPluginTimeout)
	case t > 0:
		timeout = time.Duration(t * float64(time.Second))
	}
	exe, err := resolveCommand(spec.Command[0])
	if err != nil {
		return nil, fmt.Errorf("plug-in %q: %w", name, err)
	}
	dir, err := os.MkdirTemp("", "bayesnas-plugin-")
	if err != nil {
		return nil, fmt.Errorf("plug-in %q: working directory: %w", name, err)
	}
	p := &Plugin{name: name, timeout: timeout, dir: dir, stderr: &tailBuffer{max: stderrTail},
		lines: make(chan readLine), done: make(chan struct{}), exited: make(chan struct{})}
	if err := p.start(exe, spec.Command[1:]); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("plug-in %q: %w", name, err)
	}
	if _, _, err := p.describe(ctx, true); err != nil {
		p.Close()
		return nil, p.hint(err, spec.Command[1:])
	}
	return p, nil
}

// resolveCommand makes the executable's path absolute, since the plug-in
// runs in another directory.
func resolveCommand(exe string) (string, error) {
	if strings.ContainsRune(exe, filepath.Separator) || strings.ContainsRune(exe, '/') {
		abs, err := filepath.Abs(exe)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("executable: %w", err)
		}
		return abs, nil
	}
	path, err := exec.LookPath(exe)
	if err != nil {
		return "", err
	}
	return filepath.Abs(path)
}

func (p *Plugin) start(exe string, args []string) error {
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = p.dir
	cmd.Stdin = inR
	cmd.Stdout = outW
	cmd.Stderr = p.stderr
	// Bounds how long Wait copies stderr after the process exits, should a
	// child of the plug-in still hold it open.
	cmd.WaitDelay = time.Second
	ownProcessGroup(cmd)
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return err
	}
	p.cmd, p.stdin, p.stdout = cmd, inW, outR
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	go p.read()
	return nil
}

// read delivers the plug-in's stdout line by line until EOF, an error or
// Close.
func (p *Plugin) read() {
	r := bufio.NewReaderSize(p.stdout, 64<<10)
	send := func(l readLine) bool {
		select {
		case p.lines <- l:
			return true
		case <-p.done:
			return false
		}
	}
	for {
		var line []byte
		for {
			chunk, err := r.ReadSlice('\n')
			line = append(line, chunk...)
			if err == bufio.ErrBufferFull {
				if len(line) > maxLine {
					send(readLine{err: fmt.Errorf("wrote a line longer than %d bytes: %s", maxLine, quote(line))})
					return
				}
				continue
			}
			if err != nil {
				if len(line) > 0 && err == io.EOF {
					if !send(readLine{line: line}) {
						return
					}
				}
				send(readLine{err: err})
				return
			}
			break
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // blank lines are allowed between messages
		}
		if !send(readLine{line: line}) {
			return
		}
	}
}

// request is one line sent to the plug-in.
type request struct {
	Protocol string `json:"protocol"`
	ID       int64  `json:"id"`
	Method   string `json:"method"`
	Params   any    `json:"params,omitempty"`
}

// response is one line received; pointers tell absent fields from zero ones.
type response struct {
	Protocol *string          `json:"protocol"`
	ID       *json.RawMessage `json:"id"`
	Result   json.RawMessage  `json:"result"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// RemoteError is an error a plug-in answered with.
type RemoteError struct {
	Code, Message string
}

func (e *RemoteError) Error() string {
	if e.Code == "" {
		return e.Message
	}
	return fmt.Sprintf("%s (code %q)", e.Message, e.Code)
}

// Is makes errors.Is(err, ErrUnsupported) true for code "unsupported".
func (e *RemoteError) Is(target error) bool {
	return target == ErrUnsupported && e.Code == "unsupported"
}

// call sends one request and returns its result. what names the request in
// errors ("time /abs/model.onnx").
func (p *Plugin) call(ctx context.Context, method string, params any, what string) (json.RawMessage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("plug-in %q: %s: plug-in is closed", p.name, what)
	}
	if p.dead != nil {
		return nil, fmt.Errorf("plug-in %q: %s: plug-in is unusable after an earlier failure: %w", p.name, what, p.dead)
	}
	if err := ctx.Err(); err != nil { // nothing sent: the plug-in stays usable
		return nil, fmt.Errorf("plug-in %q: %s: %w", p.name, what, err)
	}
	p.nextID++
	id := p.nextID
	b, err := json.Marshal(request{Protocol: PluginProtocol, ID: id, Method: method, Params: params})
	if err != nil {
		return nil, fmt.Errorf("plug-in %q: %s: %w", p.name, what, err)
	}
	b = append(b, '\n')

	deadline := time.Now().Add(p.timeout)
	ctxDeadline := false
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	// A plug-in that stops reading its stdin cannot block us past the deadline.
	p.stdin.SetWriteDeadline(deadline)
	if _, err := p.stdin.Write(b); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ctxDeadline {
				return nil, p.fail(what, "did not read its stdin: %w; killed it", context.DeadlineExceeded)
			}
			return nil, p.fail(what, "did not read its stdin within the timeout of %v (timeout_s); killed it", p.timeout)
		}
		return nil, p.fail(what, "could not send the request (%v)%s", err, p.exitText(time.Second))
	}

	var line []byte
	select {
	case l := <-p.lines:
		if l.err != nil {
			return nil, p.readFailure(what, l.err)
		}
		line = l.line
	case <-p.exited:
		// Whatever it wrote before exiting is already in the pipe.
		select {
		case l := <-p.lines:
			if l.err != nil {
				return nil, p.readFailure(what, l.err)
			}
			line = l.line
		case <-time.After(200 * time.Millisecond):
			return nil, p.fail(what, "%w%s", errExited, p.exitText(0))
		}
	case <-timer.C:
		if ctxDeadline {
			return nil, p.fail(what, "no answer: %w; killed it", context.DeadlineExceeded)
		}
		return nil, p.fail(what, "no answer within the timeout of %v (timeout_s); killed it", p.timeout)
	case <-ctx.Done():
		return nil, p.fail(what, "no answer: %w; killed it", ctx.Err())
	}

	var resp response
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&resp); err != nil || dec.More() {
		var hint string
		if bytes.Contains(line, []byte("NaN")) || bytes.Contains(line, []byte("Infinity")) {
			hint = " (NaN and Infinity are not JSON numbers)"
		}
		switch {
		case err == nil || !bytes.HasPrefix(bytes.TrimSpace(line), []byte("{")):
			return nil, p.fail(what, "wrote a line that is not one JSON object%s: %s", hint, quote(line))
		case json.Valid(line):
			return nil, p.fail(what, "wrote an answer that does not decode (%v): %s", err, quote(line))
		}
		return nil, p.fail(what, "wrote a line that is not JSON (%v)%s: %s", err, hint, quote(line))
	}
	if resp.Protocol == nil || *resp.Protocol != PluginProtocol {
		got := "no protocol"
		if resp.Protocol != nil {
			got = *resp.Protocol
		}
		return nil, p.fail(what, "plug-in speaks %s, want %s: %s", got, PluginProtocol, quote(line))
	}
	if resp.ID == nil || string(*resp.ID) != fmt.Sprint(id) {
		got := "no id"
		if resp.ID != nil {
			got = "id " + string(*resp.ID)
		}
		return nil, p.fail(what, "answered with %s to request id %d: %s", got, id, quote(line))
	}
	hasResult := len(resp.Result) > 0 && string(resp.Result) != "null"
	switch {
	case resp.Error != nil && hasResult:
		return nil, p.fail(what, "answered with both a result and an error: %s", quote(line))
	case resp.Error != nil:
		// The plug-in is still usable: it refused one request.
		re := &RemoteError{Code: resp.Error.Code, Message: resp.Error.Message}
		if re.Message == "" {
			re.Message = "error without a message"
		}
		return nil, fmt.Errorf("plug-in %q: %s: %w", p.name, what, re)
	case !hasResult:
		return nil, p.fail(what, "answered with neither a result nor an error: %s", quote(line))
	}
	return resp.Result, nil
}

// readFailure reports stdout closing or failing.
func (p *Plugin) readFailure(what string, err error) error {
	if err == io.EOF {
		return p.fail(what, "%w%s", errStdoutClosed, p.exitText(time.Second))
	}
	return p.fail(what, "%v", err)
}

// fail marks the plug-in dead, kills it, and returns the error, with the
// tail of its stderr. Called with p.mu held.
func (p *Plugin) fail(what, format string, args ...any) error {
	p.kill()
	err := fmt.Errorf("plug-in %q: %s: %w", p.name, what, fmt.Errorf(format, args...))
	if tail := p.stderr.String(); tail != "" {
		err = &withStderr{err: err, stderr: tail}
	}
	p.dead = err
	return err
}

// exitText waits up to d for the process to exit and describes how it did.
func (p *Plugin) exitText(d time.Duration) string {
	select {
	case <-p.exited:
	default:
		select {
		case <-p.exited:
		case <-time.After(d):
			return ""
		}
	}
	if p.waitErr == nil {
		return " (exit status 0)"
	}
	return fmt.Sprintf(" (%v)", p.waitErr)
}

// kill stops the process (and any children in its process group) and waits
// for it.
func (p *Plugin) kill() {
	select {
	case <-p.exited:
		killGroup(p.cmd) // children that outlived it
		return
	default:
	}
	killGroup(p.cmd)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
}

// hint adds a note to a handshake failure when an argument is a relative
// path that exists here: the plug-in ran in its own directory.
func (p *Plugin) hint(err error, args []string) error {
	if !errors.Is(err, errExited) && !errors.Is(err, errStdoutClosed) {
		return err
	}
	for _, a := range args {
		if a == "" || filepath.IsAbs(a) || strings.HasPrefix(a, "-") {
			continue
		}
		if _, statErr := os.Stat(a); statErr == nil {
			return fmt.Errorf("%w\n(the argument %q is a relative path: plug-ins run in a temporary directory, so give it as an absolute path)", err, a)
		}
	}
	return err
}

// Describe asks the plug-in what it is.
func (p *Plugin) Describe(ctx context.Context) (DeviceInfo, RuntimeInfo, error) {
	return p.describe(ctx, false)
}

func (p *Plugin) describe(ctx context.Context, handshake bool) (DeviceInfo, RuntimeInfo, error) {
	what := "describe"
	if handshake {
		what = "describe (handshake)"
	}
	res, err := p.call(ctx, "describe", nil, what)
	if err != nil {
		return DeviceInfo{}, RuntimeInfo{}, err
	}
	var d struct {
		Device  *DeviceInfo  `json:"device"`
		Runtime *RuntimeInfo `json:"runtime"`
	}
	if err := json.Unmarshal(res, &d); err != nil {
		return DeviceInfo{}, RuntimeInfo{}, p.locked(func() error {
			return p.fail(what, "result does not decode (%v): %s", err, quote(res))
		})
	}
	var problem string
	switch {
	case d.Device == nil:
		problem = "has no device"
	case d.Runtime == nil:
		problem = "has no runtime"
	case d.Runtime.Name == "":
		problem = "has no runtime.name"
	case d.Runtime.Version == "":
		problem = "has no runtime.version"
	case d.Device.Cores < 0 || d.Runtime.IntraOpThreads < 0 || d.Runtime.InterOpThreads < 0:
		problem = "has a negative core or thread count"
	}
	if problem != "" {
		return DeviceInfo{}, RuntimeInfo{}, p.locked(func() error {
			return p.fail(what, "result %s: %s", problem, quote(res))
		})
	}
	return *d.Device, *d.Runtime, nil
}

// locked runs f with p.mu held.
func (p *Plugin) locked(f func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return f()
}

type timeParams struct {
	Model   string `json:"model"`
	Batch   int    `json:"batch"`
	Warmup  int    `json:"warmup"`
	Repeats int    `json:"repeats"`
}

// Time asks the plug-in to time the model. A relative modelPath is made
// absolute first.
func (p *Plugin) Time(ctx context.Context, modelPath string, pr Protocol) (Timing, error) {
	if pr.Batch < 1 || pr.Warmup < 0 || pr.Repeats < 1 {
		return Timing{}, fmt.Errorf("plug-in %q: time %s: protocol batch %d, warmup %d, repeats %d; want batch >= 1, warmup >= 0, repeats >= 1",
			p.name, modelPath, pr.Batch, pr.Warmup, pr.Repeats)
	}
	abs, err := filepath.Abs(modelPath)
	if err != nil {
		return Timing{}, err
	}
	what := "time " + abs
	res, err := p.call(ctx, "time", timeParams{Model: abs, Batch: pr.Batch, Warmup: pr.Warmup, Repeats: pr.Repeats}, what)
	if err != nil {
		return Timing{}, err
	}
	var t struct {
		Median  *float64 `json:"median_ms"`
		P90     *float64 `json:"p90_ms"`
		Repeats *int     `json:"repeats"`
	}
	if err := json.Unmarshal(res, &t); err != nil {
		return Timing{}, p.locked(func() error { return p.fail(what, "result does not decode (%v): %s", err, quote(res)) })
	}
	var problem string
	switch {
	case t.Median == nil:
		problem = "median_ms is missing or null (JavaScript's JSON.stringify writes NaN as null)"
	case !(*t.Median > 0) || math.IsInf(*t.Median, 0):
		problem = fmt.Sprintf("median_ms is %v; want a finite number > 0", *t.Median)
	case t.P90 == nil:
		problem = "p90_ms is missing or null (JavaScript's JSON.stringify writes NaN as null)"
	case math.IsInf(*t.P90, 0) || !(*t.P90 >= *t.Median):
		problem = fmt.Sprintf("p90_ms is %v with median_ms %v; want a finite number >= median_ms", *t.P90, *t.Median)
	case t.Repeats == nil:
		problem = "repeats is missing"
	case *t.Repeats != pr.Repeats:
		problem = fmt.Sprintf("repeats is %d; %d were asked for", *t.Repeats, pr.Repeats)
	}
	if problem != "" {
		// The plug-in broke its contract: its other numbers are not
		// trusted either.
		return Timing{}, p.locked(func() error { return p.fail(what, "%s: %s", problem, quote(res)) })
	}
	return Timing{MedianMs: *t.Median, P90Ms: *t.P90, Repeats: *t.Repeats}, nil
}

// Predict asks the plug-in to predict the latency of the network in the
// architecture file at graphPath (bayesnas's graph JSON) at the given batch
// size, in milliseconds, from its own model of the device. Plug-ins need not
// implement it: the error then wraps ErrUnsupported.
func (p *Plugin) Predict(ctx context.Context, graphPath string, batch int) (float64, error) {
	if batch < 1 {
		return 0, fmt.Errorf("plug-in %q: predict %s: batch %d; want >= 1", p.name, graphPath, batch)
	}
	abs, err := filepath.Abs(graphPath)
	if err != nil {
		return 0, err
	}
	what := "predict " + abs
	res, err := p.call(ctx, "predict", struct {
		Graph string `json:"graph"`
		Batch int    `json:"batch"`
	}{abs, batch}, what)
	if err != nil {
		return 0, err
	}
	var r struct {
		Total *float64 `json:"total_ms"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return 0, p.locked(func() error { return p.fail(what, "result does not decode (%v): %s", err, quote(res)) })
	}
	if r.Total == nil || !(*r.Total > 0) || math.IsInf(*r.Total, 0) {
		return 0, p.locked(func() error {
			return p.fail(what, "total_ms is missing, null or not a finite number > 0: %s", quote(res))
		})
	}
	return *r.Total, nil
}

// Close closes the plug-in's stdin, which asks it to exit, kills it if it
// has not within 2 s, and removes its working directory. It waits for a
// request in progress to end (cancel its context to cut it short). Closing a
// plug-in that failed is fine; closing twice is a no-op.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var err error
	p.stdin.Close()
	select {
	case <-p.exited:
		killGroup(p.cmd) // children it left behind
	case <-time.After(closeGrace):
		p.kill()
		if p.dead == nil {
			err = fmt.Errorf("plug-in %q: did not exit within %v of its stdin closing; killed it", p.name, closeGrace)
		}
	}
	close(p.done)
	p.stdout.Close()
	if rmErr := os.RemoveAll(p.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("plug-in %q: removing its working directory: %w", p.name, rmErr)
	}
	return err
}

// quote shows a line in an error message, shortened.
func quote(b []byte) string {
	const max = 200
	s := strings.TrimRight(string(b), "\r\n")
	var more string
	if len(s) > max {
		s, more = s[:max], fmt.Sprintf("... (%d bytes)", len(s))
	}
	if strconv.CanBackquote(s) { // JSON reads better without escaped quotes
		return "`" + s + "`" + more
	}
	return strconv.Quote(s) + more
}

// withStderr appends a plug-in's stderr tail to an error message.
type withStderr struct {
	err    error
	stderr string
}

func (e *withStderr) Error() string {
	return fmt.Sprintf("%v\nplug-in stderr (last %d bytes at most):\n%s", e.err, stderrTail, strings.TrimRight(e.stderr, "\n"))
}

func (e *withStderr) Unwrap() error { return e.err }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
