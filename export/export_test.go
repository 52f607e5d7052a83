package export

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"bayesnas/internal/testenv"
	"bayesnas/models"
	"bayesnas/nn"
)

// compiled returns a network for g with randomised parameters.
func compiled(t testing.TB, g *models.Graph, batch int, seed uint64) *nn.Network {
	t.Helper()
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), batch)
	if err != nil {
		t.Fatal(err)
	}
	RandomizeParams(net.Params, seed)
	return net
}

func smallPyramidNet(t testing.TB) *models.Graph {
	t.Helper()
	g, err := models.PyramidNet(models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 12, Groups: 2, StemChannels: 8,
		Input: [3]int{1, 12, 12}, Classes: 5, DropPath: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func opTypes(m *Model) []string {
	var ops []string
	for _, n := range m.Graph.Nodes {
		ops = append(ops, n.OpType)
	}
	return ops
}

func count(ops []string, op string) int {
	c := 0
	for _, o := range ops {
		if o == op {
			c++
		}
	}
	return c
}

// TestCasesEncodeDecode exports every case, decodes the bytes with our reader
// and checks that re-encoding reproduces them, and that the structure is the
// one the exporter promises (folds, aliases, names).
func TestCasesEncodeDecode(t *testing.T) {
	cases, err := Cases()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			net := compiled(t, c.Graph, 2, 1)
			b, err := Marshal(c.Graph, net.Params, Options{Softmax: c.Softmax, ToolVersion: "test"})
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseModel(b)
			if err != nil {
				t.Fatal(err)
			}
			if again := m.Marshal(); !bytes.Equal(again, b) {
				t.Fatalf("decode+encode changed the bytes (%d -> %d)", len(b), len(again))
			}
			if m.IRVersion != 8 || len(m.OpsetImports) != 1 || m.OpsetImports[0].Version != 13 || m.OpsetImports[0].Domain != "" {
				t.Errorf("ir %d opsets %+v, want IR 8 and default-domain opset 13", m.IRVersion, m.OpsetImports)
			}
			in, out := m.Graph.Inputs, m.Graph.Outputs
			if len(in) != 1 || in[0].Name != "x" || in[0].Shape[0].Param != "batch" || in[0].Shape[1].Value != int64(c.Graph.Input.Shape[0]) {
				t.Errorf("input %+v", in[0])
			}
			wantOut := "logits"
			if c.Softmax {
				wantOut = "probabilities"
			}
			if len(out) != 1 || out[0].Name != wantOut || out[0].Shape[0].Param != "batch" {
				t.Errorf("output %+v, want %q with a symbolic batch", out[0], wantOut)
			}
			// Every float initializer carries an IR parameter name.
			specs, _ := c.Graph.ParamSpecs()
			names := map[string]bool{}
			for _, s := range specs {
				names[s.Name] = true
			}
			for _, init := range m.Graph.Initializers {
				if init.DataType == TypeFloat && !names[init.Name] {
					t.Errorf("initializer %q is not a parameter name of the graph", init.Name)
				}
			}
			ops := opTypes(m)
			for _, bad := range []string{"Dropout", "Identity"} {
				if count(ops, bad) > 0 && c.Name != "dropout_of_input" {
					t.Errorf("ops %v contain %s", ops, bad)
				}
			}
			switch c.Name {
			case "conv_bn_folded", "conv_bias_bn_folded":
				if count(ops, "BatchNormalization") != 0 || count(ops, "Conv") != 1 {
					t.Errorf("ops %v, want the bn folded into the conv", ops)
				}
			case "conv_bn_not_folded":
				if count(ops, "BatchNormalization") != 1 {
					t.Errorf("ops %v, want the bn kept (the conv output has another reader)", ops)
				}
			case "wsum_folded_and_mul":
				// c, cbn and b fold their weight; r and x need a Mul.
				if count(ops, "Mul") != 2 || count(ops, "Add") != 4 || count(ops, "BatchNormalization") != 1 {
					t.Errorf("ops %v, want 2 Mul, 4 Add, 1 BatchNormalization", ops)
				}
			case "wsum_unit_weight_no_mul":
				if count(ops, "Mul") != 1 {
					t.Errorf("ops %v, want one Mul (weight 0 is exactly 1)", ops)
				}
			case "shuffle_g2":
				if !slices.Equal(ops, []string{"Reshape", "Transpose", "Reshape"}) {
					t.Errorf("ops %v", ops)
				}
				shape, err := m.Graph.Initializers[0].Int64s()
				if err != nil || shape[0] != 0 {
					t.Errorf("first reshape shape %v (%v), want a 0 (copied, symbolic) batch", shape, err)
				}
			case "dropout_droppath":
				if !slices.Equal(ops, []string{"Conv"}) {
					t.Errorf("ops %v, want dropout and drop-path gone", ops)
				}
			case "dropout_of_input":
				if !slices.Equal(ops, []string{"Identity"}) {
					t.Errorf("ops %v, want a single Identity", ops)
				}
			case "linear_linear_softmax":
				if !slices.Equal(ops, []string{"Flatten", "Gemm", "Gemm", "Softmax"}) {
					t.Errorf("ops %v", ops)
				}
			}
		})
	}
}

// TestFoldedValues checks the folded conv weights against the formula,
// computed independently here in float64.
func TestFoldedValues(t *testing.T) {
	g := &models.Graph{Format: models.Format, Name: "fold", Input: models.Input{Name: "x", Shape: []int{2, 4, 4}},
		Nodes: []*models.Node{
			{Name: "c", Op: models.OpConv, Inputs: []string{"x"}, Attrs: models.Attrs{OutChannels: 2, Kernel: 1, Stride: 1, Dilation: 1, Groups: 1, Bias: true}},
			{Name: "b", Op: models.OpBN, Inputs: []string{"c"}, Attrs: models.Attrs{Eps: 1e-3, Momentum: 0.1}},
			{Name: "r", Op: models.OpReLU, Inputs: []string{"x"}},
			{Name: "ws", Op: models.OpWSum, Inputs: []string{"r", "b"}},
		}, Output: "ws"}
	net := compiled(t, g, 1, 3)
	m, err := Build(g, net.Params, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := func(name string) []float32 { return net.Param(name).Data }
	var w, bias []float32
	for _, init := range m.Graph.Initializers {
		switch init.Name {
		case "c.weight":
			w, _ = init.Float32s()
		case "b.bias":
			bias, _ = init.Float32s()
		}
	}
	if w == nil || bias == nil {
		t.Fatalf("initializers %v lack c.weight or b.bias", m.Graph.Initializers)
	}
	s := float64(p("ws.w1")[0])
	for o := 0; o < 2; o++ {
		k := float64(p("b.weight")[o]) / math.Sqrt(float64(p("b.running_var")[o])+float64(float32(1e-3)))
		for i := 0; i < 2; i++ {
			want := float64(p("c.weight")[o*2+i]) * k * s
			if math.Abs(float64(w[o*2+i])-want) > 1e-6*math.Abs(want)+1e-7 {
				t.Errorf("weight[%d,%d] = %g, want %g", o, i, w[o*2+i], want)
			}
		}
		want := ((float64(p("c.bias")[o])-float64(p("b.running_mean")[o]))*k + float64(p("b.bias")[o])) * s
		if math.Abs(float64(bias[o])-want) > 1e-6*math.Abs(want)+1e-7 {
			t.Errorf("bias[%d] = %g, want %g", o, bias[o], want)
		}
	}
	if v, _ := m.MetadataValue(MetaFolded); !strings.HasPrefix(v, "1 batch norms into convs, 1 wsum") {
		t.Errorf("metadata %s = %q", MetaFolded, v)
	}
}

// TestDeterministic: the same model gives the same bytes, from a fresh graph
// and fresh weights as well as from the same objects, through Write too.
func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	var files [][]byte
	for i := 0; i < 2; i++ {
		g := smallPyramidNet(t)
		net := compiled(t, g, 1, 7)
		path := filepath.Join(dir, "m"+string(rune('a'+i))+".onnx")
		opts := Options{ToolVersion: "v", Mean: []float32{0.286}, Std: []float32{0.353}, Classes: []string{"a", "b", "c", "d", "e"},
			Config: []byte("seed: 1\n"), Metadata: map[string]string{"z": "1", "a": "2", "m": "3"}}
		if err := Write(path, g, net.Params, opts); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, b)
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Fatal("two exports of the same model differ")
	}
	m, err := ParseModel(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range m.Metadata {
		keys = append(keys, kv.Key)
	}
	if !slices.IsSorted(keys) {
		t.Errorf("metadata keys %v not sorted", keys)
	}
	for _, k := range []string{MetaVersion, MetaInputLayout, MetaInputMean, MetaInputStd, MetaInputNorm, MetaClasses,
		MetaHashArch, MetaHashWeights, MetaHashConfig, MetaOutput} {
		if v, ok := m.MetadataValue(k); !ok || v == "" {
			t.Errorf("metadata %q missing", k)
		}
	}
	if v, _ := m.MetadataValue(MetaClasses); v != `["a","b","c","d","e"]` {
		t.Errorf("classes %q", v)
	}
	// A different weight gives a different weights hash and file.
	g := smallPyramidNet(t)
	net := compiled(t, g, 1, 7)
	net.Params[0].Data[0] += 1
	b, err := Marshal(g, net.Params, Options{ToolVersion: "v", Mean: []float32{0.286}, Std: []float32{0.353},
		Classes: []string{"a", "b", "c", "d", "e"}, Config: []byte("seed: 1\n"), Metadata: map[string]string{"z": "1", "a": "2", "m": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := ParseModel(b)
	h1, _ := m.MetadataValue(MetaHashWeights)
	h2, _ := m2.MetadataValue(MetaHashWeights)
	if h1 == h2 {
		t.Error("changing a weight left hash.weights unchanged")
	}
}

func TestErrors(t *testing.T) {
	g := smallPyramidNet(t)
	net := compiled(t, g, 1, 1)
	nanNet := compiled(t, g, 1, 1)
	p := nanNet.Param("stage2.block0.conv2.weight")
	p.Data[5] = float32(math.NaN())
	infNet := compiled(t, g, 1, 1)
	infNet.Param("head.bn.running_var").Data[0] = float32(math.Inf(1))

	cases, err := Cases()
	if err != nil {
		t.Fatal(err)
	}
	mapOut := cases[0].Graph // a conv: its output is a feature map
	mapNet := compiled(t, mapOut, 1, 1)
	invalid := smallPyramidNet(t)
	invalid.Nodes[2].Inputs = []string{"nowhere"}

	unknown := smallPyramidNet(t)
	unknown.Nodes[3].Op = "frobnicate"
	wrongShape := slices.Clone(net.Params)
	wrongShape[0] = nn.NewParam(net.Params[0].Name, nn.Weight, 1, 2, 3)
	extra := append(slices.Clone(net.Params), nn.NewParam("stray.weight", nn.Weight, 1))

	for _, c := range []struct {
		name   string
		g      *models.Graph
		params []*nn.Param
		opts   Options
		want   string
	}{
		{"nan", g, nanNet.Params, Options{}, `parameter "stage2.block0.conv2.weight": element 5 is NaN`},
		{"inf", g, infNet.Params, Options{}, `"head.bn.running_var": element 0 is +Inf`},
		{"unknown op", unknown, net.Params, Options{}, `node "` + unknown.Nodes[3].Name + `": op "frobnicate"`},
		{"missing", g, net.Params[1:], Options{}, `parameter "stem.conv.weight" (node "stem.conv") is missing`},
		{"shape", g, wrongShape, Options{}, `"stem.conv.weight" has shape [1 2 3]`},
		{"extra", g, extra, Options{}, `"stray.weight" is not a parameter of the graph`},
		{"opset", g, net.Params, Options{Opset: 12}, "opset 12"},
		{"softmax on a map", mapOut, mapNet.Params, Options{Softmax: true}, "softmax needs a flat output"},
		{"invalid graph", invalid, net.Params, Options{}, `unknown input "nowhere"`},
		{"norm", g, net.Params, Options{Mean: []float32{1, 2}, Std: []float32{1, 2}}, "2 means and 2 stds"},
		{"std 0", g, net.Params, Options{Mean: []float32{0.3}, Std: []float32{0}}, "input.std[0] = 0: want a positive finite number"},
		{"std negative", g, net.Params, Options{Mean: []float32{0.3}, Std: []float32{-0.35}}, "input.std[0] = -0.35"},
		{"std NaN", g, net.Params, Options{Mean: []float32{0.3}, Std: []float32{float32(math.NaN())}}, "input.std[0] = NaN"},
		{"std Inf", g, net.Params, Options{Mean: []float32{0.3}, Std: []float32{float32(math.Inf(1))}}, "input.std[0] = +Inf"},
		{"mean NaN", g, net.Params, Options{Mean: []float32{float32(math.NaN())}, Std: []float32{1}}, "input.mean[0] = NaN"},
		{"labels short", g, net.Params, Options{Classes: []string{"a", "b", "c"}}, "classes: 3 class labels for an output of [5]"},
		{"labels long", g, net.Params, Options{Classes: strings.Split("0 1 2 3 4 5", " ")}, "classes: 6 class labels"},
		{"labels on a map", mapOut, mapNet.Params, Options{Classes: []string{"a"}}, "class labels for an output of ["},
		{"label empty", g, net.Params, Options{Classes: strings.Split("0 1 2 3 ", " ")}, "classes: label 4 is empty"},
		{"label twice", g, net.Params, Options{Classes: strings.Split("0 1 2 3 1", " ")}, `classes: labels 1 and 4 are both "1"`},
		{"meta clash", g, net.Params, Options{Metadata: map[string]string{MetaClasses: "x"}}, `key "classes" is written by the exporter`},
		{"hash key", g, net.Params, Options{Hashes: map[string]string{"data": "x"}}, `unknown key "data"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Marshal(c.g, c.params, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}

	// A failed export leaves an existing file as it was and no temporary files.
	dir := t.TempDir()
	path := filepath.Join(dir, "model.onnx")
	if err := Write(path, g, net.Params, Options{}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := Write(path, g, nanNet.Params, Options{}); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v, want one naming %s", err, path)
	}
	after, _ := os.ReadFile(path)
	entries, _ := os.ReadDir(dir)
	if !bytes.Equal(before, after) || len(entries) != 1 {
		t.Errorf("failed export changed the directory: %d entries, file unchanged %v", len(entries), bytes.Equal(before, after))
	}
}

func TestNameClash(t *testing.T) {
	// A node named like another node's parameter would shadow it.
	g := &models.Graph{Format: models.Format, Name: "clash", Input: models.Input{Name: "x", Shape: []int{2, 3, 3}},
		Nodes: []*models.Node{
			{Name: "c", Op: models.OpConv, Inputs: []string{"x"}, Attrs: models.Attrs{OutChannels: 2, Kernel: 1, Stride: 1, Dilation: 1, Groups: 1}},
			{Name: "c.weight", Op: models.OpReLU, Inputs: []string{"c"}},
			{Name: "r", Op: models.OpReLU, Inputs: []string{"c.weight"}},
		}, Output: "r"}
	net := compiled(t, g, 1, 1)
	_, err := Marshal(g, net.Params, Options{})
	if err == nil || !strings.Contains(err.Error(), `"c.weight" is used by both`) {
		t.Fatalf("error %v, want a name clash on c.weight", err)
	}
}

func TestReaderErrors(t *testing.T) {
	g := smallPyramidNet(t)
	net := compiled(t, g, 1, 1)
	b, err := Marshal(g, net.Params, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{1, len(b) / 2, len(b) - 3} {
		if _, err := ParseModel(b[:cut]); err == nil {
			t.Errorf("truncated to %d of %d bytes: no error", cut, len(b))
		}
	}
	if _, err := Read(filepath.Join(t.TempDir(), "none.onnx")); err == nil || !strings.Contains(err.Error(), "none.onnx") {
		t.Errorf("missing file: %v", err)
	}
	// A packed repeated field (as proto3 writers emit) reads like an unpacked one.
	packed := []byte{0x0a, 0x02, 0x03, 0x04, 0x10, 0x01} // dims packed [3,4], data_type 1
	tens, err := ParseTensor(packed)
	if err != nil || !slices.Equal(tens.Dims, []int64{3, 4}) || tens.DataType != TypeFloat {
		t.Errorf("packed dims: %+v %v", tens, err)
	}
}

// TestONNXChecker runs the reference onnx.checker (Debian python3-onnx) with
// full shape inference on every case and on a PyramidNet, at the default
// opset and at 17, the newest that checker knows.
func TestONNXChecker(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import onnx").Run(); err != nil {
		testenv.Missing(t, "the reference checker (/usr/bin/python3 with onnx)", "apt-get install python3-onnx, or go tool task setup", err)
	}
	dir := t.TempDir()
	cases, err := Cases()
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, Case{Name: "pyramidnet", Graph: smallPyramidNet(t)})
	var paths []string
	for _, opset := range []int{13, 17} {
		for _, c := range cases {
			net := compiled(t, c.Graph, 1, 2)
			path := filepath.Join(dir, c.Name+"_"+string(rune('0'+opset/10))+string(rune('0'+opset%10))+".onnx")
			if err := Write(path, c.Graph, net.Params, Options{Opset: opset, Softmax: c.Softmax}); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, path)
		}
	}
	script := `
import sys, onnx
from onnx import checker, shape_inference
bad = 0
for p in sys.argv[1:]:
    try:
        m = onnx.load(p)
        checker.check_model(m, full_check=True)
        inferred = shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
        out = inferred.graph.output[0].type.tensor_type.shape.dim
        assert out[0].dim_param == "batch", "output batch dim %r" % out[0]
    except Exception as e:
        bad += 1
        print("FAIL", p, e)
print("checked", len(sys.argv) - 1, "models,", bad, "failed")
sys.exit(1 if bad else 0)
`
	out, err := exec.Command("/usr/bin/python3", append([]string{"-c", script}, paths...)...).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("onnx.checker rejected our files: %v", err)
	}
}
