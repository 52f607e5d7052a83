package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"bayesnas/hwprofile"
	"bayesnas/internal/testenv"
	"bayesnas/models"
	"bayesnas/onnxrt"
)

func tinyArch(t *testing.T) string {
	t.Helper()
	b := models.NewGraphBuilder("tiny", "input", [3]int{1, 8, 8})
	x := b.Conv("c1", "input", 8, 3, 1, 1)
	x = b.BN("bn1", x)
	x = b.ReLU("r1", x)
	x = b.Node("pool", models.OpMaxPool, models.Attrs{Kernel: 3, Stride: 2, Pad: 1}, x)
	x = b.Conv("c2", x, 12, 1, 1, 1)
	x = b.Node("gap", models.OpGAP, models.Attrs{}, x)
	x = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 3, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "arch.json")
	if err := g.WriteGraph(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func keys(p *hwprofile.Profile) map[hwprofile.Key]bool {
	m := map[hwprofile.Key]bool{}
	for _, e := range p.Entries {
		m[e.Key] = true
	}
	return m
}

// The built-in device measures a profile that prices the network it was
// measured for; an interrupted measurement resumes with MissingOnly to the
// same set of kernels; an existing profile is not overwritten.
func TestMeasureProfileBuiltin(t *testing.T) {
	if _, err := onnxrt.InitDefault(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	arch := tinyArch(t)
	dir := t.TempDir()
	opt := ProfileMeasureOptions{Out: filepath.Join(dir, "full.yaml"), Networks: ProfileNetworks{Archs: []string{arch}},
		GridStep: 4, Protocol: hwprofile.Protocol{Batch: 1, Warmup: 1, Repeats: 3}, ToolVersion: "test",
		Device: DeviceSpec{Threads: 1}, Rounds: 2, chunk: 2}
	full, err := MeasureProfile(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hwprofile.Read(opt.Out); err != nil {
		t.Fatal(err)
	}
	// Grids: conv c2 (8 -> 12 at 4x4) gets 2 x 3 points, among others.
	if len(full.Entries) < 10 {
		t.Fatalf("%d entries", len(full.Entries))
	}
	pr, err := PredictArch(full, arch, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Nodes) != 5 || !(pr.TotalMs > 0) {
		t.Fatalf("prediction %+v: want 5 kernels and a positive total", pr)
	}
	if _, err := MeasureProfile(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "--missing-only") {
		t.Fatalf("measuring over an existing profile: %v, want a refusal naming --missing-only", err)
	}

	// Interrupted after 4 kernels, then resumed.
	ctx, cancel := context.WithCancel(context.Background())
	opt.Out = filepath.Join(dir, "resumed.yaml")
	// Kernel-rounds: 2 rounds over chunks of 2 kernels, so the 8th is the
	// last of the second chunk, saved before the third is started.
	opt.afterKernel = func(done int) {
		if done == 9 {
			cancel()
		}
	}
	part, err := MeasureProfile(ctx, opt)
	if err == nil || !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted measurement: %v", err)
	}
	saved, err := hwprofile.Read(opt.Out)
	if err != nil {
		t.Fatalf("the interrupted measurement left no valid profile: %v", err)
	}
	if len(saved.Entries) != 4 || len(part.Entries) != 4 {
		t.Fatalf("interrupted after 4 kernels: %d saved, %d returned", len(saved.Entries), len(part.Entries))
	}
	opt.afterKernel = nil
	opt.MissingOnly = true
	resumed, err := MeasureProfile(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	want, got := keys(full), keys(resumed)
	if len(want) != len(got) {
		t.Fatalf("resumed profile has %d kernels, the uninterrupted one %d", len(got), len(want))
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("resumed profile lacks %s", k)
		}
	}
	// Nothing left to measure: the file stays as it was.
	before, _ := os.ReadFile(opt.Out)
	if _, err := MeasureProfile(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(opt.Out)
	if string(before) != string(after) {
		t.Fatal("--missing-only with nothing missing changed the profile")
	}
}

// A profile of a space, calibrated, prices networks of that space it has
// not seen, and check measures them against it: the whole path of
// `bayesnas profile measure --space` and `profile check`, small.
func TestProfileSpaceCheck(t *testing.T) {
	if _, err := onnxrt.InitDefault(""); err != nil {
		testenv.Missing(t, "ONNX Runtime", "bash scripts/ort.sh, or go tool task setup", err)
	}
	out := filepath.Join(t.TempDir(), "proxy.yaml")
	proto := hwprofile.Protocol{Batch: 1, Warmup: 1, Repeats: 2}
	prof, err := MeasureProfile(context.Background(), ProfileMeasureOptions{Out: out,
		Networks: ProfileNetworks{Spaces: named(t, "proxy"), Samples: 2, SampleSeed: 1000},
		GridStep: 8, Protocol: proto, Calibrate: 4, Sessions: 1, Rounds: 1, ToolVersion: "test", Device: DeviceSpec{Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var spaces []string
	for _, c := range prof.Calibration {
		spaces = append(spaces, c.Space)
		if c.Networks < 4 || !(c.Scale > 0) {
			t.Errorf("calibration %+v", c)
		}
	}
	if !slices.Equal(spaces, []string{"", "proxy"}) {
		t.Fatalf("calibrations for %q, want the profile-wide one and proxy's", spaces)
	}
	if !(prof.ReferenceMs > 0) {
		t.Fatalf("reference latency %v", prof.ReferenceMs)
	}
	rep, err := CheckProfile(context.Background(), ProfileCheckOptions{Profile: out, Spaces: named(t, "proxy"), N: 3, Seed: 1,
		Protocol: proto, Sessions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 3 || len(rep.BySpace) != 1 || rep.Runtime.IntraOpThreads != 1 || !(rep.SpeedVsProfile > 0) {
		t.Fatalf("report %+v", rep)
	}
	for _, r := range rep.Rows {
		if !(r.PredictedMs > 0 && r.MeasuredMs > 0 && r.RepeatMs > 0 && r.MACs > 0) {
			t.Fatalf("network %+v", r)
		}
	}
	// A network of a space the profile was not measured for has kernels
	// it cannot price: an error naming the node, not a number.
	_, err = CheckProfile(context.Background(), ProfileCheckOptions{Profile: out, Spaces: named(t, "tree"), N: 1, Seed: 1, Protocol: proto, Sessions: 1})
	if err == nil || !strings.Contains(err.Error(), "cannot price") || !strings.Contains(err.Error(), "node ") {
		t.Fatalf("checking tree networks on a proxy profile: %v", err)
	}
}

func named(t *testing.T, names ...string) []hwprofile.Space {
	t.Helper()
	sp, err := NamedSpaces(names)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}
