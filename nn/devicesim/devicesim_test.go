package devicesim_test

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"bayesnas/nn"
	"bayesnas/nn/devicesim"
	"bayesnas/nn/nntest"
)

// allNaN reports whether every element of s is NaN (and s is not empty).
func allNaN(s []float32) bool {
	for _, v := range s {
		if !math.IsNaN(float64(v)) {
			return false
		}
	}
	return len(s) > 0
}

// TestHostSlicesArePoisoned: a new tensor's host slices hold NaN and its
// contents (zeros) come out through Host; a layer's output read without
// Host is NaN after Forward, and so are its input's host slices (the
// kernel ran on the device copies), while Host gives the CPU's result.
func TestHostSlicesArePoisoned(t *testing.T) {
	be := devicesim.New(1)
	v := be.NewValue("v", []int{2, 3}, true)
	p := be.NewParam("p", nn.Weight, 4)
	if !allNaN(v.Data) || !allNaN(v.Grad) || !allNaN(p.Data) || !allNaN(p.Grad) {
		t.Fatal("a new tensor's host slices are not poisoned")
	}
	if !slices.Equal(v.Host(), make([]float32, 6)) || !slices.Equal(p.HostGrad(), make([]float32, 4)) {
		t.Fatal("a new tensor's contents are not zeros")
	}

	x := nntest.NewInput(be, rand.New(rand.NewPCG(1, 2)), "x", 2, 3, 2, 2)
	want := append([]float32(nil), x.Host()...)
	for i := range want {
		want[i] = max(want[i], 0)
	}
	l, err := be.ReLU(x)
	if err != nil {
		t.Fatal(err)
	}
	l.Forward(true)
	if !allNaN(l.Output().Data) {
		t.Errorf("a layer output's Data read without Host: %v, want NaN", l.Output().Data)
	}
	if !allNaN(x.Data) {
		t.Errorf("the input's host copy after the device ran: %v, want NaN", x.Data)
	}
	if got := l.Output().Host(); !slices.Equal(got, want) {
		t.Errorf("relu through Host: %v, want %v", got, want)
	}
	// SetBatch re-slices; copies still cover the whole allocation.
	x.SetBatch(1)
	if got := x.Host(); len(got) != 12 || allNaN(got) {
		t.Errorf("Host at batch 1: %v", got)
	}
}

// TestWriteWithoutCommitIsLost: a host write reaches the device only
// through Commit (or Set/SetHost), and a layer sees only what was
// committed.
func TestWriteWithoutCommitIsLost(t *testing.T) {
	be := devicesim.New(1)
	p := be.NewParam("p", nn.Weight, 3)
	p.Data[0] = 5
	if got := p.Host(); got[0] != 0 {
		t.Fatalf("an uncommitted write reached the device: %v", got)
	}
	p.Data[0] = 5
	p.Commit()
	if got := p.Host(); got[0] != 5 {
		t.Fatalf("a committed write was lost: %v", got)
	}
	p.Set(2, 7) // the other elements must survive a one-element write
	if got := p.Host(); !slices.Equal(got, []float32{5, 0, 7}) {
		t.Fatalf("after Set(2, 7): %v, want [5 0 7]", got)
	}

	x := be.NewValue("x", []int{1, 3}, true)
	for i := range x.Data {
		x.Data[i] = 1 // not committed: the layer reads zeros
	}
	l, err := be.ReLU(x)
	if err != nil {
		t.Fatal(err)
	}
	l.Forward(true)
	if got := l.Output().Host(); !slices.Equal(got, []float32{0, 0, 0}) {
		t.Fatalf("relu of an uncommitted input: %v, want zeros", got)
	}
	// Gradients the same way: Backward adds into what the device holds.
	x.Grad[0] = 100
	copy(l.Output().HostGrad(), []float32{1, 1, 1})
	l.Output().CommitGrad()
	l.Backward()
	if got := x.HostGrad(); got[0] != 0 {
		t.Fatalf("an uncommitted gradient write reached Backward: %v", got)
	}
}

// TestForeignTensorsRefused: like a device backend, it cannot run on
// memory it did not allocate, and says so (an error, not a panic).
func TestForeignTensorsRefused(t *testing.T) {
	be := devicesim.New(1)
	if _, err := be.ReLU(nn.NewValue("host", []int{1, 2}, true)); err == nil {
		t.Error("a host value was accepted")
	}
	x := be.NewValue("x", []int{2, 3}, true)
	if _, err := be.Linear(x, nn.NewParam("w", nn.Weight, 2, 3), nil); err == nil {
		t.Error("a host parameter was accepted")
	}
	if _, err := be.ReLU(nil); err == nil {
		t.Error("a nil input was accepted")
	}
}

// failed runs check with a testing.TB that records failures instead of
// reporting them, and says whether it failed.
func failed(t *testing.T, check func(tb testing.TB)) (failed bool) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine, as it ends a test
		defer close(done)
		check(r)
	}()
	<-done
	return r.failed
}

type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatal(args ...any) {
	r.failed = true
	runtime.Goexit()
}

// unconvertedReLU is the suite's ReLU forward check as it was written
// before host access was explicit: it reads x.Data and the output's Data.
func unconvertedReLU(be nn.Backend) func(testing.TB) {
	return func(t testing.TB) {
		x := nntest.NewInput(be, rand.New(rand.NewPCG(3, 4)), "x", 2, 3, 4, 5)
		l, err := be.ReLU(x)
		if err != nil {
			t.Fatal(err)
		}
		l.Forward(true)
		for i, v := range x.Data {
			if got := l.Output().Data[i]; got != max(v, 0) {
				t.Fatalf("relu(%g) = %g", v, got)
			}
		}
	}
}

// unconvertedLinear is the suite's linear check with its fixture written
// the old way: the weights filled in Data without Commit, the reference
// computed from what was written.
func unconvertedLinear(be nn.Backend) func(testing.TB) {
	return func(t testing.TB) {
		rng := rand.New(rand.NewPCG(5, 6))
		x := be.NewValue("x", []int{3, 5}, true)
		nntest.RandFill(rng, x.Data)
		x.Commit() // the input right: only the weights' write is lost
		w := be.NewParam("fc.w", nn.Weight, 4, 5)
		nntest.RandFill(rng, w.Data)
		want := nntest.NaiveLinear(x.Host(), w.Data, nil, 3, 5, 4)
		l, err := be.Linear(x, w, nil)
		if err != nil {
			t.Fatal(err)
		}
		l.Forward(true)
		nntest.CompareSlices(t, "linear", l.Output().Host(), want)
	}
}

// TestUnconvertedChecksFail: copies of suite checks with one host access
// left unconverted pass on the CPU backend (where Data is the storage) and
// fail here; the converted suite passes on both (TestConformance).
func TestUnconvertedChecksFail(t *testing.T) {
	for name, check := range map[string]func(nn.Backend) func(testing.TB){
		"read without Host":    unconvertedReLU,
		"write without Commit": unconvertedLinear,
	} {
		if failed(t, check(nn.NewCPU(nn.DefaultGemm(), 1))) {
			t.Errorf("%s: the check fails on the CPU backend; it must be a valid check there", name)
		}
		if !failed(t, check(devicesim.New(1))) {
			t.Errorf("%s: the check passes on devicesim; the simulation does not catch it", name)
		}
	}
}
