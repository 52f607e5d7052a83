package hwprofile

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleProfile() *Profile {
	p := &Profile{Schema: Schema,
		Device:  DeviceInfo{Name: "test", CPU: "Test CPU 3000", Cores: 2, Governor: "performance"},
		Runtime: RuntimeInfo{Name: "onnxruntime", Version: "1.24.1", ExecutionProvider: "cpu", IntraOpThreads: 1, InterOpThreads: 1, GraphOptimization: "all"},
		Protocol: MeasureProtocol{Protocol: Protocol{Batch: 1, Warmup: 10, Repeats: 100}, Statistic: "median",
			Input: []int{1, 28, 28}, Date: "2026-12-02", Tool: "test"},
		Fusions:     append([]string(nil), FusionRules...),
		OverheadMs:  0.0012,
		Calibration: []Calibration{{Space: "tree", Scale: 1.1, PerKernelMs: 0.0003, Networks: 20}, {Scale: 1.2, Networks: 60}},
	}
	conv := "Conv+Relu k=3 s=1 p=1 d=1 g=1 bias"
	for _, c := range []int{8, 16, 24} {
		for _, o := range []int{8, 16} {
			ms := 0.001 * float64(c*o) / 8
			p.Entries = append(p.Entries, Entry{Key: Key{Kind: conv, C: c, H: 14, W: 14, Out: o}, MedianMs: ms, P90Ms: 1.5 * ms, Repeats: 100})
		}
	}
	for _, c := range []int{8, 16, 32} {
		ms := 0.0001 * float64(c)
		p.Entries = append(p.Entries, Entry{Key: Key{Kind: "Relu", C: c, H: 14, W: 14}, MedianMs: ms, P90Ms: ms, Repeats: 100})
	}
	return p
}

func TestRoundTripByteForByte(t *testing.T) {
	p := sampleProfile()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(b)
	if err != nil {
		t.Fatalf("parsing what Marshal wrote: %v\n%s", err, b)
	}
	b2, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("re-marshalled profile differs:\n%s\n---\n%s", b, b2)
	}
	// The file written atomically reads back the same.
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := q.Write(path); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, b) {
		t.Fatal("Write wrote other bytes than Marshal")
	}
	if _, err := Read(path); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\n  - {kernel: ") {
		t.Errorf("entries are not one per line:\n%s", b)
	}
}

func TestParseErrors(t *testing.T) {
	b, err := sampleProfile().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	firstEntry := good[strings.Index(good, "  - {kernel:"):]
	firstEntry = firstEntry[:strings.Index(firstEntry, "\n")]
	for _, c := range []struct {
		name, text, want string
	}{
		{"unknown key", strings.Replace(good, "overhead_ms:", "colour: red\noverhead_ms:", 1), "field colour not found"},
		{"wrong schema", strings.Replace(good, Schema, "bayesnas.profile/v9", 1), "schema"},
		{"truncated", good[:len(good)/2], ""},
		{"empty", "", "empty"},
		{"negative latency", strings.Replace(good, firstEntry, strings.Replace(firstEntry, "median_ms: ", "median_ms: -", 1), 1), "entries[0] (line"},
		{"NaN latency", strings.Replace(good, firstEntry, strings.Replace(firstEntry, "median_ms: 0.008", "median_ms: .nan", 1), 1), "median_ms NaN"},
		{"p90 below median", strings.Replace(good, firstEntry, strings.Replace(firstEntry, "p90_ms: 0.012", "p90_ms: 0.0001", 1), 1), "p90_ms"},
		{"edited value", strings.Replace(good, firstEntry, strings.Replace(firstEntry, "median_ms: 0.008", "median_ms: 0.009", 1), 1), "hash"},
		{"missing device", strings.Replace(good, "cpu: Test CPU 3000", "cpu: \"\"", 1), "device.cpu"},
		{"other fusions", strings.Replace(good, "Conv+Relu, ", "", 1), "fusions"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Read(path)
			if err == nil {
				t.Fatalf("no error for %s", c.name)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q: want the file name and %q", err, c.want)
			}
		})
	}
}

func TestInterpolation(t *testing.T) {
	p := sampleProfile()
	conv := "Conv+Relu k=3 s=1 p=1 d=1 g=1 bias"
	// Exact on every grid point.
	for _, e := range p.Entries {
		ms, how, err := p.Price(e.Key)
		if err != nil || how != PricedExact || ms != e.MedianMs {
			t.Fatalf("%s: %v %s %v, want exactly %v", e.Key, ms, how, err, e.MedianMs)
		}
	}
	// Between grid points: bilinear, and monotone where the grid is.
	prev := 0.0
	for c := 8; c <= 24; c++ {
		for o := 8; o <= 16; o++ {
			ms, _, err := p.Price(Key{Kind: conv, C: c, H: 14, W: 14, Out: o})
			if err != nil {
				t.Fatal(err)
			}
			// The grid is c*o/8 microseconds: bilinear interpolation of a
			// bilinear function is exact.
			if want := 0.001 * float64(c*o) / 8; math.Abs(ms-want) > 1e-12 {
				t.Fatalf("c=%d o=%d: %v, want %v", c, o, ms, want)
			}
			if o == 12 {
				if ms < prev {
					t.Fatalf("not monotone in c at c=%d: %v < %v", c, ms, prev)
				}
				prev = ms
			}
		}
	}
	prev = 0
	for c := 8; c <= 32; c++ {
		ms, how, err := p.Price(Key{Kind: "Relu", C: c, H: 14, W: 14})
		if err != nil {
			t.Fatal(err)
		}
		if c != 8 && c != 16 && c != 32 && how != PricedInterpolated {
			t.Fatalf("c=%d priced %s", c, how)
		}
		if ms < prev {
			t.Fatalf("Relu not monotone at c=%d", c)
		}
		prev = ms
	}
	// A network's odd width among the grid points (as a profile measured
	// for a network holds): a query beside it still finds a full bracket of
	// grid corners.
	odd := Key{Kind: conv, C: 20, H: 14, W: 14, Out: 12}
	p.Entries = append(p.Entries, Entry{Key: odd, MedianMs: 0.001 * 20 * 12 / 8, P90Ms: 1, Repeats: 1})
	p.idx = nil
	ms, how, err := p.Price(Key{Kind: conv, C: 18, H: 14, W: 14, Out: 12})
	if err != nil || how != PricedInterpolated || math.Abs(ms-0.001*18*12/8) > 1e-12 {
		t.Fatalf("beside an odd width: %v %s %v, want %v", ms, how, err, 0.001*18*12/8)
	}
	// Outside the grid, another map size, another kind: errors naming the
	// nearest keys, never a default.
	for _, k := range []Key{
		{Kind: conv, C: 32, H: 14, W: 14, Out: 8},
		{Kind: conv, C: 8, H: 7, W: 7, Out: 8},
		{Kind: "Conv+Relu k=5 s=1 p=2 d=1 g=1 bias", C: 8, H: 14, W: 14, Out: 8},
		{Kind: "Relu", C: 4, H: 14, W: 14},
	} {
		_, _, err := p.Price(k)
		if err == nil || !strings.Contains(err.Error(), "nearest keys: "+conv) && !strings.Contains(err.Error(), "nearest keys: Relu") {
			t.Fatalf("%s: error %v, want one naming the nearest keys", k, err)
		}
	}
}

// Split and Concat entries of profiles written with per-piece keys load
// under piece-count keys with their latencies; where two old cuts become
// one key the evener is kept, and an entry already under the new key wins.
func TestParseUpgradesPieceKeys(t *testing.T) {
	p := sampleProfile()
	e := func(kind string, c, hw int, ms float64) Entry {
		return Entry{Key: Key{Kind: kind, C: c, H: hw, W: hw}, MedianMs: ms, P90Ms: ms, Repeats: 9}
	}
	p.Entries = append(p.Entries,
		e("Split 10,10", 20, 14, 0.001),
		e("Concat 16,16,16,16", 16, 7, 0.002),
		e("Split 4,20", 24, 7, 0.003), // uneven: loses to 12,12
		e("Split 12,12", 24, 7, 0.004),
		e("Split 16,8", 24, 7, 0.005),
		e("Concat 8,8", 8, 4, 0.006), // already measured under the new key
		e("Concat n=2", 16, 4, 0.007),
	)
	b, err := p.Marshal() // written as they are: Marshal does not upgrade
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "'Split 10,10'") {
		t.Fatalf("the old keys were not written:\n%s", b)
	}
	q, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if q.Hash != p.Hash {
		t.Fatalf("hash %s, want the file's %s", q.Hash, p.Hash)
	}
	want := map[Key]float64{
		{Kind: "Split n=2", C: 20, H: 14, W: 14}:                                 0.001,
		{Kind: "Concat n=4", C: 64, H: 7, W: 7}:                                  0.002,
		{Kind: "Split n=2", C: 24, H: 7, W: 7}:                                   0.004,
		{Kind: "Concat n=2", C: 16, H: 4, W: 4}:                                  0.007,
		{Kind: "Relu", C: 8, H: 14, W: 14}:                                       0.0008,
		{Kind: "Conv+Relu k=3 s=1 p=1 d=1 g=1 bias", C: 8, H: 14, W: 14, Out: 8}: 0.008,
	}
	got := map[Key]float64{}
	for _, e := range q.Entries {
		if strings.Contains(e.Kind, ",") {
			t.Errorf("%s not upgraded", e.Key)
		}
		got[e.Key] = e.MedianMs
	}
	if len(q.Entries) != len(p.Entries)-3 {
		t.Errorf("%d entries, want %d (three merged)", len(q.Entries), len(p.Entries)-3)
	}
	for k, ms := range want {
		if got[k] != ms {
			t.Errorf("%s: %v, want %v", k, got[k], ms)
		}
	}
	// Written again, the new keys round-trip byte for byte.
	b2, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(b2)
	if err != nil {
		t.Fatal(err)
	}
	b3, err := r.Marshal()
	if err != nil || !bytes.Equal(b2, b3) {
		t.Fatalf("upgraded profile does not round-trip (%v)", err)
	}
	// Old keys that do not add up are errors naming the entry.
	p.Entries = append(p.Entries[:len(p.Entries)-7], e("Split 10,12", 20, 14, 0.001))
	if b, err = p.Marshal(); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(b); err == nil || !strings.Contains(err.Error(), "entries[") || !strings.Contains(err.Error(), "Split 10,12") {
		t.Fatalf("error %v, want one naming the entry", err)
	}
}

// The committed profiles (written before the upgrade) load, every Split
// and Concat entry under its new key with its latency, none lost.
func TestCommittedProfilesUpgrade(t *testing.T) {
	paths, err := filepath.Glob("../profiles/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no profiles (%v)", err)
	}
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(raw), "\n  - {kernel: "); n != len(p.Entries) {
			t.Errorf("%s: %d entries in the file, %d loaded", path, n, len(p.Entries))
		}
		pieces := 0
		for _, e := range p.Entries {
			if strings.HasPrefix(e.Kind, "Split ") || strings.HasPrefix(e.Kind, "Concat ") {
				pieces++
				if !strings.Contains(e.Kind, " n=") {
					t.Errorf("%s: %s not upgraded", path, e.Key)
				}
			}
		}
		if pieces == 0 {
			t.Errorf("%s: no Split or Concat entries", path)
		}
	}
}
