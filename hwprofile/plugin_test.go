package hwprofile

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test plug-ins are this test binary run again with
// GO_WANT_HELPER_PROCESS=1: TestHelperProcess then speaks the protocol in the
// way its mode (the argument after "--") says, well or badly.

// helperCommand is the plug-in command for a helper mode.
func helperCommand(t *testing.T, mode string) []string {
	t.Helper()
	t.Setenv("GO_WANT_HELPER_PROCESS", "1")
	return []string{os.Args[0], "-test.run=^TestHelperProcess$", "--", mode}
}

func openHelper(t *testing.T, mode string, timeout float64) *Plugin {
	t.Helper()
	p, err := OpenPlugin(context.Background(), PluginSpec{Command: helperCommand(t, mode), TimeoutSeconds: timeout})
	if err != nil {
		t.Fatalf("OpenPlugin(%s): %v", mode, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

var testProtocol = Protocol{Batch: 1, Warmup: 2, Repeats: 5}

func TestHelperProcess(t *testing.T) {
	if os.Getenv("GO_WANT_HELPER_PROCESS") != "1" {
		return
	}
	mode := ""
	for i, a := range os.Args {
		if a == "--" && i+1 < len(os.Args) {
			mode = os.Args[i+1]
		}
	}
	os.Exit(helperPlugin(mode))
}

// helperPlugin is a test plug-in; it returns its exit code.
func helperPlugin(mode string) int {
	if mode == "sleep" { // a child the "hang" plug-in leaves behind
		time.Sleep(time.Hour)
		return 0
	}
	wd, _ := os.Getwd()
	fmt.Fprintf(os.Stderr, "helper %s: cwd=%s\n", mode, wd)
	out := bufio.NewWriter(os.Stdout)
	send := func(v any) {
		b, _ := json.Marshal(v)
		out.Write(append(b, '\n'))
		out.Flush()
	}
	raw := func(s string) {
		out.WriteString(s + "\n")
		out.Flush()
	}
	protocol := PluginProtocol
	if mode == "v0" {
		protocol = "bayesnas.device/v0"
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req struct {
			Protocol string
			ID       int64
			Method   string
			Params   struct {
				Model                  string
				Batch, Warmup, Repeats int
			}
		}
		if err := json.Unmarshal(in.Bytes(), &req); err != nil || req.Protocol != PluginProtocol {
			fmt.Fprintf(os.Stderr, "helper: bad request %q\n", in.Text())
			return 2
		}
		answer := func(result any) {
			send(map[string]any{"protocol": protocol, "id": req.ID, "result": result})
		}
		refuse := func(code, msg string) {
			send(map[string]any{"protocol": protocol, "id": req.ID, "error": map[string]string{"code": code, "message": msg}})
		}
		switch req.Method {
		case "describe":
			if mode == "garbage" {
				raw("hello, I am not JSON")
				continue
			}
			answer(map[string]any{
				"device":  DeviceInfo{Name: "helper", CPU: "test CPU", Cores: 2, Governor: "performance"},
				"runtime": RuntimeInfo{Name: "helper-runtime", Version: "1.0", ExecutionProvider: "cpu", IntraOpThreads: 1, InterOpThreads: 1, GraphOptimization: "all"},
			})
		case "time":
			median := 1.5 * float64(req.Params.Batch)
			good := map[string]any{"median_ms": median, "p90_ms": 1.5 * median, "repeats": req.Params.Repeats}
			switch mode {
			case "good", "noexit":
				if strings.Contains(req.Params.Model, "missing") {
					refuse("model", "cannot load "+req.Params.Model+": no such file")
					continue
				}
				answer(good)
			case "crash":
				fmt.Fprintln(os.Stderr, "helper: simulated crash while timing")
				return 3
			case "exit0":
				return 0
			case "hang":
				child := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "--", "sleep")
				child.Stdout = os.Stdout // holds the pipe open after we are killed
				if err := child.Start(); err != nil {
					fmt.Fprintln(os.Stderr, "helper: starting child:", err)
					return 2
				}
				fmt.Fprintf(os.Stderr, "helper: child pid %d\n", child.Process.Pid)
				time.Sleep(time.Hour)
			case "wrongid":
				send(map[string]any{"protocol": protocol, "id": req.ID + 1, "result": good})
			case "nan":
				raw(fmt.Sprintf(`{"protocol":%q,"id":%d,"result":{"median_ms":NaN,"p90_ms":NaN,"repeats":%d}}`, protocol, req.ID, req.Params.Repeats))
			case "null":
				answer(map[string]any{"median_ms": nil, "p90_ms": nil, "repeats": req.Params.Repeats})
			case "negative":
				answer(map[string]any{"median_ms": -1, "p90_ms": 2, "repeats": req.Params.Repeats})
			case "p90low":
				answer(map[string]any{"median_ms": 2, "p90_ms": 1, "repeats": req.Params.Repeats})
			case "repeats":
				answer(map[string]any{"median_ms": 2, "p90_ms": 3, "repeats": req.Params.Repeats - 1})
			case "badtype":
				raw(fmt.Sprintf(`{"protocol":5,"id":%d,"result":{}}`, req.ID))
			case "notobject":
				raw("[1, 2, 3]")
			case "long":
				raw(strings.Repeat("x", 5000))
			case "both":
				send(map[string]any{"protocol": protocol, "id": req.ID, "result": good, "error": map[string]string{"code": "x", "message": "y"}})
			}
		case "predict":
			refuse("unsupported", "this plug-in has no latency model")
		default:
			refuse("unknown_method", "no method "+req.Method)
		}
	}
	if mode == "noexit" {
		time.Sleep(time.Hour) // ignores the end of its input
	}
	return 0
}

func TestPluginGood(t *testing.T) {
	p := openHelper(t, "good", 0)
	ctx := context.Background()
	dev, rt, err := p.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dev.Name != "helper" || dev.Cores != 2 || dev.Governor != "performance" || rt.Name != "helper-runtime" || rt.GraphOptimization != "all" {
		t.Errorf("Describe = %+v, %+v", dev, rt)
	}
	tm, err := p.Time(ctx, "/models/m.onnx", Protocol{Batch: 2, Warmup: 1, Repeats: 7})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Timing{MedianMs: 3, P90Ms: 4.5, Repeats: 7}); tm != want {
		t.Errorf("Time = %+v, want %+v", tm, want)
	}

	// An error answer fails the request, not the plug-in.
	_, err = p.Time(ctx, "/models/missing.onnx", testProtocol)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != "model" || !strings.Contains(err.Error(), "cannot load /models/missing.onnx: no such file") ||
		!strings.Contains(err.Error(), "time /models/missing.onnx") {
		t.Errorf("Time(missing) error = %v", err)
	}
	if _, err := p.Time(ctx, "/models/m.onnx", testProtocol); err != nil {
		t.Errorf("Time after an error answer: %v", err)
	}
	_, err = p.Predict(ctx, "/runs/x/arch.json", 1)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "this plug-in has no latency model") {
		t.Errorf("Predict error = %v, want one wrapping ErrUnsupported", err)
	}
	if _, err := p.Time(ctx, "/models/m.onnx", Protocol{Batch: 0, Repeats: 5}); err == nil {
		t.Error("Time with batch 0: no error")
	}

	// It runs in a fresh directory of its own, removed by Close.
	m := regexp.MustCompile(`cwd=(\S+)`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("no cwd in the plug-in's stderr %q", p.stderr.String())
	}
	if here, _ := os.Getwd(); m[1] == here || m[1] != p.dir {
		t.Errorf("plug-in ran in %s; want its own directory %s", m[1], p.dir)
	}
	if _, err := os.Stat(p.dir); err != nil {
		t.Errorf("working directory gone before Close: %v", err)
	}
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// Without being killed (the race detector's runtime alone takes 1 s to
	// exit).
	if d := time.Since(start); d >= closeGrace {
		t.Errorf("Close took %v; the plug-in exits on EOF", d)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("working directory %s still there after Close (%v)", p.dir, err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.Time(ctx, "/models/m.onnx", testProtocol); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Time after Close: %v", err)
	}
}

func TestPluginRelativeCommand(t *testing.T) {
	cmd := helperCommand(t, "good")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, cmd[0])
	if err != nil {
		t.Skipf("test binary %s not reachable from %s: %v", cmd[0], wd, err)
	}
	if !strings.Contains(rel, "/") {
		rel = "./" + rel
	}
	cmd[0] = rel
	p, err := OpenPlugin(context.Background(), PluginSpec{Command: cmd})
	if err != nil {
		t.Fatalf("OpenPlugin(%q): %v", rel, err)
	}
	p.Close()
}

func TestPluginSpecErrors(t *testing.T) {
	for _, spec := range []PluginSpec{
		{},
		{Command: []string{""}},
		{Command: []string{"no-such-plugin-anywhere-on-path"}},
		{Command: []string{"./no/such/plugin"}},
		{Command: []string{os.Args[0]}, TimeoutSeconds: -1},
	} {
		if p, err := OpenPlugin(context.Background(), spec); err == nil {
			p.Close()
			t.Errorf("OpenPlugin(%+v): no error", spec)
		}
	}
}

// checkDead asserts that a failed plug-in keeps failing, promptly, and can
// be closed.
func checkDead(t *testing.T, p *Plugin) {
	t.Helper()
	start := time.Now()
	if _, err := p.Time(context.Background(), "/models/m.onnx", testProtocol); err == nil || !strings.Contains(err.Error(), "unusable after an earlier failure") {
		t.Errorf("Time on a dead plug-in: %v", err)
	}
	if _, _, err := p.Describe(context.Background()); err == nil {
		t.Error("Describe on a dead plug-in: no error")
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close on a dead plug-in: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("calls on a dead plug-in took %v", d)
	}
	if !processGone(p.cmd.Process.Pid, 0) {
		t.Errorf("plug-in process %d still running", p.cmd.Process.Pid)
	}
}

func TestPluginCrash(t *testing.T) {
	p := openHelper(t, "crash", 0)
	_, err := p.Time(context.Background(), "/models/m.onnx", testProtocol)
	if err == nil {
		t.Fatal("no error from a plug-in that crashed")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{os.Args[0], "time /models/m.onnx", "exit status 3", "helper: simulated crash while timing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	checkDead(t, p)
}

func TestPluginHang(t *testing.T) {
	p := openHelper(t, "hang", 0.5)
	start := time.Now()
	_, err := p.Time(context.Background(), "/models/m.onnx", testProtocol)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Time on a hanging plug-in returned after %v; timeout 0.5 s", d)
	}
	if err == nil {
		t.Fatal("no error from a plug-in that hangs")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{os.Args[0], "time /models/m.onnx", "no answer within the timeout of 500ms", "killed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// The child it started is killed with it.
	m := regexp.MustCompile(`child pid (\d+)`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("error %q does not quote the plug-in's stderr", err)
	}
	child, _ := strconv.Atoi(m[1])
	if !processGone(child, 5*time.Second) {
		t.Errorf("the hanging plug-in's child %d is still running", child)
	}
	checkDead(t, p)
}

func TestPluginContextCancelledBefore(t *testing.T) {
	p := openHelper(t, "good", 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Time(ctx, "/models/m.onnx", testProtocol); !errors.Is(err, context.Canceled) {
		t.Errorf("Time with a cancelled context: %v", err)
	}
	if _, err := p.Time(context.Background(), "/models/m.onnx", testProtocol); err != nil {
		t.Errorf("Time after a request that was never sent: %v", err)
	}
}

func TestPluginContextDeadline(t *testing.T) {
	p := openHelper(t, "hang", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := p.Time(ctx, "/models/m.onnx", testProtocol)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Time past the context's deadline: %v", err)
	}
	checkDead(t, p)
}

// TestPluginBadHandshake: plug-ins that fail the handshake are refused.
func TestPluginBadHandshake(t *testing.T) {
	for _, c := range []struct{ mode, want string }{
		{"garbage", "not one JSON object: `hello, I am not JSON`"},
		{"v0", "plug-in speaks bayesnas.device/v0, want bayesnas.device/v1"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			p, err := OpenPlugin(context.Background(), PluginSpec{Command: helperCommand(t, c.mode)})
			if err == nil {
				p.Close()
				t.Fatal("no error")
			}
			for _, want := range []string{os.Args[0], "describe (handshake)", c.want, "cwd="} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestPluginBadAnswers: answers to time that break the protocol or make no
// sense kill the plug-in with an error that says what was wrong.
func TestPluginBadAnswers(t *testing.T) {
	for _, c := range []struct {
		mode string
		want []string
	}{
		{"wrongid", []string{"answered with id 3 to request id 2: `{"}},
		{"nan", []string{"not JSON", "NaN and Infinity are not JSON numbers", `"median_ms":NaN`}},
		{"null", []string{"median_ms is missing or null"}},
		{"negative", []string{"median_ms is -1; want a finite number > 0"}},
		{"p90low", []string{"p90_ms is 1 with median_ms 2"}},
		{"repeats", []string{"repeats is 4; 5 were asked for"}},
		{"notobject", []string{"not one JSON object: `[1, 2, 3]`"}},
		{"long", []string{"`xxxxxxxxxx", "... (5000 bytes)"}},
		{"both", []string{"both a result and an error"}},
		{"badtype", []string{"does not decode", `"protocol":5`}},
		{"exit0", []string{"without answering (exit status 0)"}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			p := openHelper(t, c.mode, 0)
			_, err := p.Time(context.Background(), "/models/m.onnx", testProtocol)
			if err == nil {
				t.Fatal("no error")
			}
			t.Logf("error: %v", err)
			for _, want := range append([]string{os.Args[0], "time /models/m.onnx"}, c.want...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			checkDead(t, p)
		})
	}
}

func TestPluginCloseKillsStubborn(t *testing.T) {
	p := openHelper(t, "noexit", 0)
	start := time.Now()
	err := p.Close()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("did not exit within %v", closeGrace)) {
		t.Errorf("Close of a plug-in that ignores EOF: %v", err)
	}
	if d := time.Since(start); d < closeGrace || d > closeGrace+3*time.Second {
		t.Errorf("Close took %v; want about %v", d, closeGrace)
	}
	if !processGone(p.cmd.Process.Pid, 0) {
		t.Errorf("plug-in process %d still running after Close", p.cmd.Process.Pid)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("working directory %s still there after Close (%v)", p.dir, err)
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 10}
	b.Write([]byte("0123456789abc"))
	b.Write([]byte("de"))
	if got := b.String(); got != "56789abcde" {
		t.Errorf("tail = %q", got)
	}
}
