package hwprofile

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"bayesnas/internal/allocs"
)

// answerPlugin is a Plugin whose process has already exited and whose
// stdout held out: its read loop has run to the end, so call finds every
// line (and the end of stdout) queued, and nothing is started or killed.
func answerPlugin(t *testing.T, out []byte) *Plugin {
	dir := t.TempDir()
	stdoutPath := filepath.Join(dir, "stdout")
	if err := os.WriteFile(stdoutPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, err := os.Open(stdoutPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close() })
	stdin, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	p := &Plugin{name: "fuzz", timeout: time.Minute, dir: dir, cmd: &exec.Cmd{}, stdin: stdin, stdout: stdout,
		stderr: &tailBuffer{max: stderrTail}, lines: make(chan readLine, bytes.Count(out, []byte("\n"))+2),
		done: make(chan struct{}), exited: make(chan struct{})}
	close(p.exited)
	p.read()
	return p
}

// FuzzPluginAnswer feeds a device plug-in's stdout to the describe, time
// and predict requests (call: line framing and the JSON-lines envelope;
// describe, Time and Predict: their results), each the first request, id 1.
//
// It asserts: no panic; a bad answer is an error, and every error but a
// RemoteError (the plug-in refusing the request, which leaves it usable)
// marks the plug-in dead; an accepted answer has the values the protocol
// requires (a runtime name and version, non-negative counts; median_ms
// finite > 0, p90_ms >= median_ms, repeats as asked; total_ms finite > 0);
// allocation stays below 16 x the output's bytes + 1 MiB.
func FuzzPluginAnswer(f *testing.F) {
	const env = `{"protocol":"bayesnas.device/v1","id":1,`
	f.Add([]byte(env + `"result":{"device":{"name":"d","cpu":"c","cores":2},"runtime":{"name":"ort","version":"1.2"}}}` + "\n"))
	f.Add([]byte("\n  \n" + env + `"result":{"median_ms":1.5,"p90_ms":2,"repeats":7}}` + "\n"))
	f.Add([]byte(env + `"result":{"total_ms":0.25}}`))
	f.Add([]byte(env + `"error":{"code":"unsupported","message":"no"}}` + "\n"))
	f.Add([]byte(env + `"result":{"median_ms":NaN}}` + "\n"))
	f.Add([]byte(`{"protocol":"bayesnas.device/v0","id":1,"result":{}}` + "\n"))
	f.Add([]byte(env + `"result":1,"error":{}} {}` + "\n"))

	f.Fuzz(func(t *testing.T, out []byte) {
		ctx := context.Background()
		pr := Protocol{Batch: 1, Warmup: 0, Repeats: 7}
		for _, req := range []string{"describe", "time", "predict"} {
			p := answerPlugin(t, out)
			var err error
			alloc := allocs.During(func() {
				switch req {
				case "describe":
					var d DeviceInfo
					var r RuntimeInfo
					if d, r, err = p.Describe(ctx); err == nil && (r.Name == "" || r.Version == "" || d.Cores < 0 || r.IntraOpThreads < 0 || r.InterOpThreads < 0) {
						t.Fatalf("accepted %+v %+v", d, r)
					}
				case "time":
					var tm Timing
					if tm, err = p.Time(ctx, "/m.onnx", pr); err == nil && !(tm.MedianMs > 0 && tm.P90Ms >= tm.MedianMs && !math.IsInf(tm.P90Ms, 0) && tm.Repeats == pr.Repeats) {
						t.Fatalf("accepted %+v", tm)
					}
				case "predict":
					var ms float64
					if ms, err = p.Predict(ctx, "/g.json", 1); err == nil && !(ms > 0 && !math.IsInf(ms, 0)) {
						t.Fatalf("accepted %v", ms)
					}
				}
			})
			if bound := 16*uint64(len(out)) + 1<<20; alloc > bound {
				t.Fatalf("%s: allocated %d bytes for %d output bytes: bound %d", req, alloc, len(out), bound)
			}
			var re *RemoteError
			switch {
			case err == nil && p.dead != nil:
				t.Fatalf("%s: succeeded on a dead plug-in", req)
			case err != nil && errors.As(err, &re) && p.dead != nil:
				t.Fatalf("%s: a refusal (%v) killed the plug-in", req, err)
			case err != nil && !errors.As(err, &re) && p.dead == nil:
				t.Fatalf("%s: the plug-in stays usable after %v", req, err)
			}
			close(p.done)
		}
	})
}
