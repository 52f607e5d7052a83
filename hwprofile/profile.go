package hwprofile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"bayesnas/internal/atomicfile"
	"bayesnas/internal/textpos"
)

// Schema is the version stamp of profile files; a reader refuses any other
// value rather than guess at a layout it does not know.
const Schema = "bayesnas.profile/v1"

// FusionRules are the kernel boundaries Kernels draws, recorded in every
// profile so that a profile split another way is recognised as such.
var FusionRules = []string{"Conv+Relu", "Flatten+Gemm", "Reshape+Transpose+Reshape"}

// Profile is a device latency profile: what a kernel costs when one runtime
// runs it on one device, measured under one protocol. It is plain data in a
// YAML file (never a pickle: nn-Meter's pickled predictors stopped loading
// after a library upgrade).
type Profile struct {
	Schema  string      `yaml:"schema"`
	Device  DeviceInfo  `yaml:"device"`
	Runtime RuntimeInfo `yaml:"runtime"`
	// Plugin is the command that times models on the device; empty for the
	// built-in ONNX Runtime.
	Plugin   []string        `yaml:"plugin,omitempty,flow"`
	Protocol MeasureProtocol `yaml:"protocol"`
	Fusions  []string        `yaml:"fusions,flow"`
	// OverheadMs is the cost of one inference beyond its kernels: what the
	// runtime spends on a model whose only kernel does nothing.
	OverheadMs float64 `yaml:"overhead_ms"`
	// ReferenceMs is the latency of ReferenceNetwork for the profile's
	// input on the device while the entries were measured: they are all
	// scaled to the machine's speed at that latency, and a later run that
	// times the reference network sees how fast the device is now.
	ReferenceMs float64 `yaml:"reference_ms"`
	// Calibration corrects the sum of kernels measured alone for what they
	// cost inside a network, fitted on whole networks measured with the
	// profile (never on the networks a check reports on): one per space
	// the profile was measured for, and one over all of them (Space "")
	// for networks of no known space.
	Calibration []Calibration `yaml:"calibration,omitempty"`
	// Entries are the kernels' latencies, sorted by key.
	Entries []Entry `yaml:"entries"`
	// Hash is the SHA-256 of the file with this field empty: a profile
	// changed after measurement is refused.
	Hash string `yaml:"hash"`

	idx *index // built on first lookup
}

// MeasureProtocol records how the entries were timed.
type MeasureProtocol struct {
	Protocol `yaml:",inline"`
	// Statistic is what an entry's latency is: StatisticQuietest, or in
	// profiles measured before it "median" (the median over rounds of the
	// median of Repeats runs).
	Statistic string `yaml:"statistic"`
	// Input is the network input (C,H,W) the profile was measured for.
	Input []int  `yaml:"input,flow"`
	Date  string `yaml:"date"`
	Tool  string `yaml:"tool"`
}

// Calibration maps what a network's kernels cost measured alone to what
// they cost inside a network of one space (Space; "" for any network): predicted = OverheadMs + Scale x (sum of
// the kernels' latencies) + PerKernelMs x (number of kernels). Measured
// alone, a kernel finds its weights and input in cache and pays no hand-off
// to the next one; inside a network it does. Both coefficients are fitted
// by least squares on Networks whole networks measured with the profile
// (never the networks a check reports on).
type Calibration struct {
	Space       string  `yaml:"space"`
	Scale       float64 `yaml:"scale"`
	PerKernelMs float64 `yaml:"per_kernel_ms"`
	Networks    int     `yaml:"networks"`
}

// Entry is one kernel's latency, per inference of Protocol.Batch samples.
type Entry struct {
	Key      `yaml:",inline"`
	MedianMs float64 `yaml:"median_ms"`
	P90Ms    float64 `yaml:"p90_ms"`
	Repeats  int     `yaml:"repeats"`
}

// MarshalYAML writes an entry on one line, so a profile of thousands of
// entries stays readable and diffs line by line.
func (e Entry) MarshalYAML() (any, error) {
	type plain Entry
	var n yaml.Node
	if err := n.Encode(plain(e)); err != nil {
		return nil, err
	}
	n.Style = yaml.FlowStyle
	return &n, nil
}

// less orders keys: kind, H, W, C, Out.
func (k Key) less(o Key) int {
	if c := strings.Compare(k.Kind, o.Kind); c != 0 {
		return c
	}
	for _, d := range [][2]int{{k.H, o.H}, {k.W, o.W}, {k.C, o.C}, {k.Out, o.Out}} {
		if d[0] != d[1] {
			return d[0] - d[1]
		}
	}
	return 0
}

// Marshal encodes p with its hash (computed here; p.Hash is set).
func (p *Profile) Marshal() ([]byte, error) {
	slices.SortFunc(p.Entries, func(a, b Entry) int { return a.Key.less(b.Key) })
	slices.SortFunc(p.Calibration, func(a, b Calibration) int { return strings.Compare(a.Space, b.Space) })
	p.idx = nil
	p.Hash = ""
	body, err := p.encode()
	if err != nil {
		return nil, err
	}
	p.Hash = hashOf(body)
	return p.encode()
}

func (p *Profile) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func hashOf(body []byte) string {
	s := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Write writes p to path atomically (a temporary file renamed over it).
func (p *Profile) Write(path string) error {
	b, err := p.Marshal()
	if err != nil {
		return fmt.Errorf("writing profile %s: %w", path, err)
	}
	return atomicfile.Write(path, b)
}

// Read reads and checks a profile file.
func Read(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading profile: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		// One line: a YAML error as FILE:LINE, its first entry only.
		return nil, fmt.Errorf("profile %w", textpos.At(path, err))
	}
	return p, nil
}

// Parse decodes and checks a profile: unknown keys, a missing or other
// schema, a latency that is not a positive finite number, a duplicate
// entry and a hash that does not match the content are errors naming the
// field (and the line).
func Parse(b []byte) (*Profile, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("empty file")
		}
		return nil, textpos.YAMLDecode(err)
	}
	var p Profile
	// Decode again with KnownFields: yaml.Node.Decode has no strict mode.
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(&p); err != nil {
		return nil, textpos.YAMLDecode(err)
	}
	if p.Schema != Schema {
		return nil, fmt.Errorf("schema: %q, want %q", p.Schema, Schema)
	}
	lines := entryLines(&doc)
	line := func(i int) string {
		if i < len(lines) {
			return fmt.Sprintf(" (line %d)", lines[i])
		}
		return ""
	}
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"device.cpu", p.Device.CPU != ""},
		{"device.cores", p.Device.Cores > 0},
		{"runtime.name", p.Runtime.Name != ""},
		{"runtime.version", p.Runtime.Version != ""},
		{"protocol.batch", p.Protocol.Batch > 0},
		{"protocol.repeats", p.Protocol.Repeats > 0},
		{"protocol.statistic", p.Protocol.Statistic == StatisticQuietest || p.Protocol.Statistic == "median"},
		{"protocol.input", len(p.Protocol.Input) == 3 && p.Protocol.Input[0] > 0 && p.Protocol.Input[1] > 0 && p.Protocol.Input[2] > 0},
		{"overhead_ms", finitePositive(p.OverheadMs) || p.OverheadMs == 0},
		{"reference_ms", finitePositive(p.ReferenceMs) || p.ReferenceMs == 0},
		{"entries", len(p.Entries) > 0},
		{"hash", p.Hash != ""},
	} {
		if !f.ok {
			return nil, fmt.Errorf("field %s: missing or invalid", f.name)
		}
	}
	if !slices.Equal(p.Fusions, FusionRules) {
		return nil, fmt.Errorf("fusions: %v, want %v (the profile splits networks into kernels another way)", p.Fusions, FusionRules)
	}
	spaces := map[string]bool{}
	for i, c := range p.Calibration {
		if !finitePositive(c.Scale) {
			return nil, fmt.Errorf("calibration[%d].scale: %v is not a positive finite number", i, c.Scale)
		}
		if !(c.PerKernelMs >= 0) || math.IsInf(c.PerKernelMs, 0) {
			return nil, fmt.Errorf("calibration[%d].per_kernel_ms: %v, want finite and >= 0", i, c.PerKernelMs)
		}
		if spaces[c.Space] {
			return nil, fmt.Errorf("calibration[%d]: space %q calibrated twice", i, c.Space)
		}
		spaces[c.Space] = true
	}
	seen := map[Key]int{}
	for i, e := range p.Entries {
		where := fmt.Sprintf("entries[%d]%s", i, line(i))
		switch {
		case e.Kind == "":
			return nil, fmt.Errorf("%s: kernel is empty", where)
		case e.C < 1 || e.H < 1 || e.W < 1 || e.Out < 0:
			return nil, fmt.Errorf("%s: c, h, w %d, %d, %d and out %d, want positive", where, e.C, e.H, e.W, e.Out)
		case !finitePositive(e.MedianMs):
			return nil, fmt.Errorf("%s: median_ms %v is not a positive finite number", where, e.MedianMs)
		case !finitePositive(e.P90Ms) || e.P90Ms < e.MedianMs:
			return nil, fmt.Errorf("%s: p90_ms %v, want finite and at least median_ms %v", where, e.P90Ms, e.MedianMs)
		case e.Repeats < 1:
			return nil, fmt.Errorf("%s: repeats %d, want >= 1", where, e.Repeats)
		}
		if j, dup := seen[e.Key]; dup {
			return nil, fmt.Errorf("%s: %s already at entries[%d]", where, e.Key, j)
		}
		seen[e.Key] = i
	}
	want := p.Hash
	p.Hash = ""
	body, err := p.encode()
	if err != nil {
		return nil, err
	}
	if got := hashOf(body); got != want {
		return nil, fmt.Errorf("hash: the content hashes to %s, the file says %s (edited after it was measured? re-measure, or `bayesnas profile measure --missing-only` to extend it)", got, want)
	}
	p.Hash = want
	// Upgraded after the hash is checked: the hash is over the file as
	// written. Hash keeps naming that file; Marshal hashes the new keys.
	if p.Entries, err = upgradeEntries(p.Entries, line); err != nil {
		return nil, err
	}
	return &p, nil
}

// upgradeEntries rewrites the Split and Concat entries of profiles written
// before those kernels were keyed by piece count and total channels (see
// kernelOf): "Split 10,10" at c 20 (c was the input's channels) becomes
// "Split n=2" at c 20, "Concat 16,16,16,16" at c 16 (c was the first
// input's) "Concat n=4" at c 64, with the same latencies. The old kinds list
// the pieces' channels (digits and commas), which no new kind does, so an
// entry tells by itself which it is and the schema stays v1: a reader that
// predates the change finds no family for its own Split and Concat keys in
// a new file and says so, it never misprices them. The rename is one to one
// for every profile planned from the spaces (their pieces are even). A
// profile measured for an architecture with uneven cuts can hold two
// entries that become one key (8,16 and 16,8 of 24 channels); the new keys
// do not tell them apart, and the evener cut is kept (ties: the first),
// the one a grid measures.
func upgradeEntries(es []Entry, line func(int) string) ([]Entry, error) {
	type kept struct {
		at     int // in out
		spread int // largest minus smallest piece
	}
	old := func(e Entry) (op, list string, ok bool) {
		op, list, ok = strings.Cut(e.Kind, " ")
		return op, list, ok && (op == "Split" || op == "Concat") && !strings.HasPrefix(list, "n=")
	}
	// Entries under new keys win over old ones that upgrade to them.
	byKey := map[Key]kept{}
	var out []Entry
	for _, e := range es {
		if _, _, ok := old(e); !ok {
			byKey[e.Key] = kept{len(out), -1}
			out = append(out, e)
		}
	}
	changed := false
	for i, e := range es {
		op, list, ok := old(e)
		if !ok {
			continue
		}
		var ps []int
		for _, f := range strings.Split(list, ",") {
			v, err := strconv.Atoi(f)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("entries[%d]%s: kernel %q: want %s n=<pieces> or the old %s <channels>,<channels>,...", i, line(i), e.Kind, op, op)
			}
			ps = append(ps, v)
		}
		total := 0
		for _, v := range ps {
			total += v
		}
		if (op == "Split" && e.C != total) || (op == "Concat" && e.C != ps[0]) || e.Out != 0 {
			return nil, fmt.Errorf("entries[%d]%s: %s: c %d and out %d do not fit the pieces %v", i, line(i), e.Kind, e.C, e.Out, ps)
		}
		changed = true
		e.Kind, e.C = fmt.Sprintf("%s n=%d", op, len(ps)), total
		spread := slices.Max(ps) - slices.Min(ps)
		if k, dup := byKey[e.Key]; dup {
			if spread < k.spread {
				out[k.at] = e
				byKey[e.Key] = kept{k.at, spread}
			}
			continue
		}
		byKey[e.Key] = kept{len(out), spread}
		out = append(out, e)
	}
	if !changed {
		return es, nil
	}
	slices.SortFunc(out, func(a, b Entry) int { return a.Key.less(b.Key) })
	return out, nil
}

func finitePositive(v float64) bool { return v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

// entryLines returns the line of each item of the top-level entries list.
func entryLines(doc *yaml.Node) []int {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "entries" {
			var lines []int
			for _, e := range m.Content[i+1].Content {
				lines = append(lines, e.Line)
			}
			return lines
		}
	}
	return nil
}
