package models

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"bayesnas/nn"
)

// tinyGraph uses every op once or more; its shapes and counts are worked out
// by hand in the tests below.
func tinyGraph() *Graph {
	b := NewGraphBuilder("tiny", "x", [3]int{4, 8, 8})
	b.Node("c1", OpConv, Attrs{OutChannels: 8, Kernel: 3, Stride: 1, Pad: 1, Dilation: 1, Groups: 2, Bias: true}, "x")
	b.BN("b1", "c1")
	b.ReLU("r1", "b1")
	b.Node("sh", OpShuffle, Attrs{Groups: 2}, "r1")
	b.Node("s1", OpSlice, Attrs{Start: 0, End: 4}, "sh")
	b.Node("s2", OpSlice, Attrs{Start: 4, End: 8}, "sh")
	b.Node("cat", OpConcat, Attrs{}, "s2", "s1")
	b.Node("mp", OpMaxPool, Attrs{Kernel: 3, Stride: 2, Pad: 1}, "cat")
	b.Node("ap", OpAvgPool, Attrs{Kernel: 2, Stride: 2, CountIncludePad: true}, "cat")
	b.Node("ws", OpWSum, Attrs{}, "mp", "ap")
	b.Node("pc", OpPadCh, Attrs{OutChannels: 12}, "ws")
	b.Node("c2", OpConv, Attrs{OutChannels: 12, Kernel: 3, Stride: 1, Pad: 2, Dilation: 2, Groups: 4}, "ws")
	b.Node("ad", OpAdd, Attrs{}, "pc", "c2")
	b.Node("dp", OpDropPath, Attrs{P: 0.2}, "ad")
	b.Node("gp", OpGAP, Attrs{}, "dp")
	b.Node("do", OpDropout, Attrs{P: 0.5}, "gp")
	b.Node("fc", OpLinear, Attrs{OutChannels: 5, Bias: true}, "do")
	g, err := b.Finish("fc", nil)
	if err != nil {
		panic(err)
	}
	return g
}

func TestInferShapesTiny(t *testing.T) {
	shapes, err := tinyGraph().InferShapes()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int{
		"x": {4, 8, 8}, "c1": {8, 8, 8}, "b1": {8, 8, 8}, "r1": {8, 8, 8}, "sh": {8, 8, 8},
		"s1": {4, 8, 8}, "s2": {4, 8, 8}, "cat": {8, 8, 8},
		"mp": {8, 4, 4}, // (8+2-3)/2+1
		"ap": {8, 4, 4}, "ws": {8, 4, 4}, "pc": {12, 4, 4},
		"c2": {12, 4, 4}, // (4+4-5)/1+1
		"ad": {12, 4, 4}, "dp": {12, 4, 4}, "gp": {12, 1, 1}, "do": {12, 1, 1}, "fc": {5},
	}
	if len(shapes) != len(want) {
		t.Errorf("%d shapes, want %d", len(shapes), len(want))
	}
	for name, w := range want {
		if !slices.Equal(shapes[name], w) {
			t.Errorf("%s: shape %v, want %v", name, shapes[name], w)
		}
	}
}

func TestParamSpecsTiny(t *testing.T) {
	specs, err := tinyGraph().ParamSpecs()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range specs {
		got = append(got, fmt.Sprintf("%s%v:%s", s.Name, s.Shape, kindName(s.Kind)))
	}
	want := []string{
		"c1.weight[8 2 3 3]:weight", "c1.bias[8]:nodecay",
		"b1.weight[8]:nodecay", "b1.bias[8]:nodecay", "b1.running_mean[8]:buffer", "b1.running_var[8]:buffer",
		"ws.w0[1]:arch", "ws.w1[1]:arch",
		"c2.weight[12 2 3 3]:weight",
		"fc.weight[5 12]:weight", "fc.bias[5]:nodecay",
	}
	if !slices.Equal(got, want) {
		t.Errorf("param specs\n got %q\nwant %q", got, want)
	}
}

func TestCountTiny(t *testing.T) {
	c, err := tinyGraph().Count()
	if err != nil {
		t.Fatal(err)
	}
	// c1: 8*(4/2)*3*3 + 8 bias = 152; b1: 8+8; c2: 12*(8/4)*3*3 = 216; fc: 5*12+5 = 65.
	if c.Params != 152+16+216+65 {
		t.Errorf("params %d, want %d", c.Params, 152+16+216+65)
	}
	if c.Buffers != 16 || c.ArchVars != 2 {
		t.Errorf("buffers %d, arch vars %d, want 16 and 2", c.Buffers, c.ArchVars)
	}
	// c1: 8*8*8 outputs * 2*9 each; c2: 12*4*4 * 2*9; fc: 12*5.
	wantMACs := int64(8*8*8*18 + 12*4*4*18 + 60)
	if c.MACs != wantMACs {
		t.Errorf("MACs %d, want %d", c.MACs, wantMACs)
	}
	if len(c.Nodes) != 17 || c.Nodes[0].Name != "c1" || c.Nodes[0].MACs != 9216 || c.Nodes[0].Params != 152 {
		t.Errorf("per-node breakdown starts %+v (of %d)", c.Nodes[0], len(c.Nodes))
	}
	var sum int64
	for _, n := range c.Nodes {
		sum += n.Params
	}
	if sum != c.Params {
		t.Errorf("per-node params sum to %d, total %d", sum, c.Params)
	}
}

// TestValidationErrors mutates the tiny graph one fault at a time and checks
// that the error names the node and the problem.
func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(g *Graph)
		want   []string
	}{
		{"format", func(g *Graph) { g.Format = "v0" }, []string{`format "v0"`}},
		{"input rank", func(g *Graph) { g.Input.Shape = []int{4, 8} }, []string{`input "x"`, "3 dimensions"}},
		{"input zero", func(g *Graph) { g.Input.Shape = []int{4, 0, 8} }, []string{`input "x"`, "< 1"}},
		{"conv stride", func(g *Graph) { g.Node("c1").Attrs.Stride = 0 }, []string{`"c1"`, "stride = 0"}},
		{"conv dilation", func(g *Graph) { g.Node("c2").Attrs.Dilation = 0 }, []string{`"c2"`, "dilation = 0"}},
		{"conv groups", func(g *Graph) { g.Node("c1").Attrs.Groups = 0 }, []string{`"c1"`, "groups = 0"}},
		{"conv groups divide", func(g *Graph) { g.Node("c1").Attrs.Groups = 3 }, []string{`"c1"`, "groups 3 must divide"}},
		{"conv kernel too big", func(g *Graph) { g.Node("c2").Attrs.Pad = 0 }, []string{`"c2"`, "larger than padded input"}},
		{"bn eps", func(g *Graph) { g.Node("b1").Attrs.Eps = 0 }, []string{`"b1"`, "eps"}},
		{"bn momentum", func(g *Graph) { g.Node("b1").Attrs.Momentum = 0 }, []string{`"b1"`, "momentum"}},
		{"unknown op", func(g *Graph) { g.Node("r1").Op = "gelu" }, []string{`"r1"`, `unknown op "gelu"`}},
		{"no op", func(g *Graph) { g.Node("r1").Op = "" }, []string{`"r1"`, "no op"}},
		{"unknown input", func(g *Graph) { g.Node("r1").Inputs = []string{"nope"} }, []string{`"r1"`, `unknown input "nope"`}},
		{"order", func(g *Graph) { g.Node("r1").Inputs = []string{"sh"} }, []string{`"r1"`, "topological"}},
		{"duplicate", func(g *Graph) { g.Node("s2").Name = "s1" }, []string{`"s1"`, "duplicate"}},
		{"duplicate input name", func(g *Graph) { g.Node("c1").Name = "x" }, []string{`"x"`, "duplicate"}},
		{"input count", func(g *Graph) { g.Node("r1").Inputs = []string{"b1", "c1"} }, []string{`"r1"`, "2 inputs, want 1"}},
		{"add count", func(g *Graph) { g.Node("ad").Inputs = []string{"pc"} }, []string{`"ad"`, "at least 2"}},
		{"add shapes", func(g *Graph) { g.Node("ad").Inputs = []string{"ws", "c2"} }, []string{`"ad"`, `"c2"`, "[12 4 4]", "[8 4 4]"}},
		{"concat sizes", func(g *Graph) { g.Node("ap").Op = OpConcat; g.Node("ap").Inputs = []string{"mp", "s1"} }, []string{`"ap"`, "8x8", "4x4"}},
		{"slice range", func(g *Graph) { g.Node("s2").Attrs.End = 9 }, []string{`"s2"`, "out of range for 8 channels"}},
		{"slice empty", func(g *Graph) { g.Node("s2").Attrs.End = 4 }, []string{`"s2"`, "out of range"}},
		{"padch fewer", func(g *Graph) { g.Node("pc").Attrs.OutChannels = 4 }, []string{`"pc"`, "fewer than the 8"}},
		{"shuffle groups", func(g *Graph) { g.Node("sh").Attrs.Groups = 3 }, []string{`"sh"`, "groups 3 must divide"}},
		{"pool pad", func(g *Graph) { g.Node("mp").Attrs.Pad = 2 }, []string{`"mp"`, "more than half"}},
		{"maxpool count pad", func(g *Graph) { g.Node("mp").Attrs.CountIncludePad = true }, []string{`"mp"`, "avgpool only"}},
		{"dropout p", func(g *Graph) { g.Node("do").Attrs.P = 1 }, []string{`"do"`, "p = 1"}},
		{"conv on flat", func(g *Graph) {
			g.Node("fc").Op = OpConv
			g.Node("fc").Attrs = Attrs{OutChannels: 2, Kernel: 1, Stride: 1, Dilation: 1, Groups: 1}
			g.Node("gp").Op = OpLinear
			g.Node("gp").Attrs = Attrs{OutChannels: 3}
		}, []string{`"fc"`, "not a (C,H,W)"}},
		{"linear out", func(g *Graph) { g.Node("fc").Attrs.OutChannels = 0 }, []string{`"fc"`, "out_channels = 0"}},
		{"output", func(g *Graph) { g.Output = "x" }, []string{`output "x" is not a node`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := tinyGraph()
			c.mutate(g)
			err := g.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	dir := t.TempDir()
	g, err := PyramidNet(PyramidNetConfig{BlocksPerStage: 1, Alpha: 12, Groups: 2, StemChannels: 8,
		Input: [3]int{1, 16, 16}, Classes: 3, DropPath: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	tiny := tinyGraph()
	for _, g := range []*Graph{g, tiny} {
		p1 := filepath.Join(dir, g.Name+".json")
		if err := g.WriteGraph(p1); err != nil {
			t.Fatal(err)
		}
		back, err := ReadGraph(p1)
		if err != nil {
			t.Fatal(err)
		}
		p2 := filepath.Join(dir, g.Name+"2.json")
		if err := back.WriteGraph(p2); err != nil {
			t.Fatal(err)
		}
		b1, _ := os.ReadFile(p1)
		b2, _ := os.ReadFile(p2)
		if !bytes.Equal(b1, b2) {
			t.Errorf("%s: round trip changed the file", g.Name)
		}
		if !bytes.Contains(b1, []byte("\n  \"nodes\": [\n")) {
			t.Errorf("%s: file is not indented:\n%.200s", g.Name, b1)
		}
		c1, _ := g.Count()
		c2, _ := back.Count()
		if c1.Params != c2.Params || c1.MACs != c2.MACs || len(back.Nodes) != len(g.Nodes) {
			t.Errorf("%s: counts changed in the round trip", g.Name)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "tiny.json"))
	// Zero attributes are omitted, nodes without attributes have no attrs key.
	if bytes.Contains(b, []byte(`"pad": 0`)) || bytes.Contains(b, []byte(`"attrs": {}`)) {
		t.Errorf("zero values written:\n%s", b)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestReadGraphErrors(t *testing.T) {
	dir := t.TempDir()
	good, err := tinyGraph().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, data string
		want       []string
	}{
		{"syntax", `{"format": `, []string{"bad.json"}},
		{"unknown attr", strings.Replace(string(good), `"kernel": 3`, `"kernal": 3`, 1), []string{"bad.json", `node 0 "c1"`, "kernal"}},
		{"unknown top", strings.Replace(string(good), `"output"`, `"outptu"`, 1), []string{"bad.json", "outptu"}},
		{"invalid node", strings.Replace(string(good), `"groups": 2`, `"groups": 3`, 1), []string{"bad.json", `"c1"`, "groups 3"}},
		{"trailing", string(good) + "{}", []string{"bad.json", "after the JSON"}},
	}
	for _, c := range cases {
		p := filepath.Join(dir, "bad.json")
		if err := os.WriteFile(p, []byte(c.data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadGraph(p)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
	}
	if _, err := ReadGraph(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
	bad := tinyGraph()
	bad.Node("c1").Attrs.Stride = 0
	if err := bad.WriteGraph(filepath.Join(dir, "w.json")); err == nil || !strings.Contains(err.Error(), "w.json") {
		t.Errorf("writing an invalid graph: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "w.json")); !os.IsNotExist(err) {
		t.Errorf("invalid graph was written")
	}
}

func kindName(k nn.ParamKind) string {
	switch k {
	case nn.Weight:
		return "weight"
	case nn.NoDecay:
		return "nodecay"
	case nn.ArchVar:
		return "arch"
	case nn.Buffer:
		return "buffer"
	}
	return "?"
}
