package models

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/internal/fixtures"
	"bayesnas/nn"
)

// proxylessFixture is ProxylessNAS's released CIFAR-10 network, kept in
// the repository (internal/fixtures/testdata).
func proxylessFixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(fixtures.MustPath(t, "proxylessnas_cifar10_net.config"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestImportProxylessNAS(t *testing.T) {
	data := proxylessFixture(t)
	g, err := ImportProxylessNAS(data, "net.config")
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	// The paper says 5.7 M; counted from the file with BN scale and shift
	// (running statistics excluded): 5.72-5.73 M.
	if rel := math.Abs(float64(c.Params)-5.72e6) / 5.72e6; rel > 0.01 {
		t.Errorf("%d parameters, %.2f %% from 5.72 M (want within 1 %%)", c.Params, 100*rel)
	}
	t.Logf("imported: %d nodes, %d parameters (%.3f M), %d buffers, %.1f M MACs per image", len(g.Nodes), c.Params, float64(c.Params)/1e6, c.Buffers, float64(c.MACs)/1e6)
	ops := map[string]int{}
	for _, n := range g.Nodes {
		ops[n.Op]++
		if n.Op == OpConv && n.Attrs.Dilation == 2 {
			ops["dilated conv"]++
		}
		if n.Op == OpConv && n.Attrs.Groups == 2 {
			ops["group-2 conv"]++
		}
	}
	// Every layer type of the file reaches the graph: 54 root group convs
	// with their shuffles, 90 dilated depthwise convs, 89 max and 92 avg
	// pools (2 of them the stride-2 shortcuts, 1 the final 8x8 pool), a
	// zero-padded shortcut in each of the 42 blocks whose width grows.
	for op, want := range map[string]int{"group-2 conv": 54, OpShuffle: 54, "dilated conv": 90, OpMaxPool: 89, OpAvgPool: 92, OpLinear: 1, OpPadCh: 42} {
		if ops[op] != want {
			t.Errorf("%d %s nodes, want %d", ops[op], op, want)
		}
	}
	shapes, _ := g.InferShapes()
	if s := shapes[g.Output]; len(s) != 1 || s[0] != 10 {
		t.Errorf("output shape %v, want [10]", s)
	}
	// The graph file round-trips.
	path := filepath.Join(t.TempDir(), "arch.json")
	if err := g.WriteGraph(path); err != nil {
		t.Fatal(err)
	}
	g2, err := ReadGraph(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(g)
	b, _ := json.Marshal(g2)
	if string(a) != string(b) {
		t.Errorf("the written graph reads back different")
	}
}

// Our tree cell is the published one: the network rebuilt in the
// pyramid-tree space from the file's cells has exactly the imported
// network's parameters and multiply-adds.
func TestProxylessCellsAreTreeCells(t *testing.T) {
	data := proxylessFixture(t)
	cells, err := ProxylessTreeCells(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 54 {
		t.Fatalf("%d cells, want 54", len(cells))
	}
	cfg := PyramidTreeCIFAR10()
	cfg.Search, cfg.Cells = false, cells
	tg, _, err := PyramidTreeNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ig, err := ImportProxylessNAS(data, "net.config")
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := tg.Count()
	ic, _ := ig.Count()
	if tc.Params != ic.Params || tc.MACs != ic.MACs || tc.Buffers != ic.Buffers {
		t.Errorf("pyramid-tree with the published cells: %d params, %d MACs, %d buffers; imported: %d, %d, %d",
			tc.Params, tc.MACs, tc.Buffers, ic.Params, ic.MACs, ic.Buffers)
	}
}

// The imported network compiles and trains a step on one image (1.2 G
// multiply-adds forward: the smallest batch keeps the test short).
func TestImportedProxylessTrainsAStep(t *testing.T) {
	be := cpuBackend(t)
	g, err := ImportProxylessNAS(proxylessFixture(t), "net.config")
	if err != nil {
		t.Fatal(err)
	}
	net, err := Compile(g, be, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	for i := range net.Input.Data {
		net.Input.Data[i] = float32(math.Sin(float64(i) * 0.37))
	}
	opt, err := nn.NewSGD(net.Params, nn.SGDConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var lossFn nn.SoftmaxCrossEntropy
	net.ZeroGrad()
	net.Forward(true)
	l, _, err := lossFn.Forward(net.Output, []int32{3})
	if err != nil || math.IsNaN(l) || math.IsInf(l, 0) {
		t.Fatalf("loss %g, %v", l, err)
	}
	net.Backward()
	w := net.Param("block1.cell.e0.conv.weight")
	before := w.Data[0]
	opt.Step(0.1)
	if w.Data[0] == before {
		t.Errorf("the root conv of block 1 did not change in the step")
	}
}

// Every malformed input is an error that names the faulty block, layer or
// node by its index and name, and the field: never a Go type
// ("Go struct field pxLayer.kernel_size of type int"), and a channel count
// that disagrees names the layer whose out_channels set it, not only the
// layer after it that reads it.
func TestImportProxylessNASErrors(t *testing.T) {
	data := proxylessFixture(t)
	edit := func(mod func(f map[string]any, blocks []any)) []byte {
		var g map[string]any
		if err := json.Unmarshal(data, &g); err != nil {
			t.Fatal(err)
		}
		mod(g, g["blocks"].([]any))
		b, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	obj := func(v any) map[string]any { return v.(map[string]any) }
	block := func(b []any, i int) map[string]any { return obj(b[i]) }
	layer := func(b []any, i, j int) map[string]any { return obj(block(b, i)["layers"].([]any)[j]) }
	cell := func(b []any, i int) map[string]any { return obj(block(b, i)["cell"]) }
	firstEdge := func(b []any, i int) map[string]any { return obj(cell(b, i)["edges"].([]any)[0]) }
	for _, c := range []struct {
		name string
		mod  func(f map[string]any, b []any)
		want string
	}{
		{"unknown layer", func(_ map[string]any, b []any) { firstEdge(b, 3)["name"] = "MBInvertedConvLayer" },
			`block 3 (ResidualTreeBlock): cell (TreeNode): edges[0] (MBInvertedConvLayer): field name: unknown layer "MBInvertedConvLayer"`},
		{"unknown field", func(_ map[string]any, b []any) { firstEdge(b, 5)["expand_ratio"] = 6 },
			`block 5 (ResidualTreeBlock): cell (TreeNode): edges[0] (ConvLayer): unknown field "expand_ratio"`},
		{"field of another layer", func(_ map[string]any, b []any) { firstEdge(b, 5)["pool_type"] = "max" },
			`block 5 (ResidualTreeBlock): cell (TreeNode): edges[0] (ConvLayer): unknown field "pool_type"`},
		{"activation", func(_ map[string]any, b []any) { firstEdge(b, 7)["act_func"] = "h_swish" },
			`block 7 (ResidualTreeBlock): cell (TreeNode): edges[0] (ConvLayer): field act_func: "h_swish" is not supported`},
		{"split type", func(_ map[string]any, b []any) { obj(cell(b, 4)["child_nodes"].([]any)[0])["split_type"] = "halve" },
			`block 4 (ResidualTreeBlock): cell (TreeNode): child_nodes[0] (TreeNode): field split_type "halve"`},
		{"unknown block", func(_ map[string]any, b []any) { block(b, 9)["name"] = "MobileInvertedResidualBlock" },
			`block 9 (MobileInvertedResidualBlock): field name: unknown block "MobileInvertedResidualBlock"`},
		{"path drop", func(_ map[string]any, b []any) { cell(b, 6)["path_drop_rate"] = 0.1 },
			"block 6 (ResidualTreeBlock): cell (TreeNode): field path_drop_rate = 0.1"},
		{"not json", nil, "importing net.config"},

		// Values of the wrong JSON type: the field and the type wanted.
		{"kernel_size a string", func(_ map[string]any, b []any) { layer(b, 0, 0)["kernel_size"] = "3" },
			`block 0 (TransitionBlock): layers[0] (ConvLayer): field kernel_size: a string, want an integer`},
		{"first in_channels a string", func(_ map[string]any, b []any) { layer(b, 0, 0)["in_channels"] = "3" },
			`block 0 (TransitionBlock): layers[0] (ConvLayer): field in_channels: a string, want an integer`},
		{"stride a fraction", func(_ map[string]any, b []any) { firstEdge(b, 2)["stride"] = 1.5 },
			`block 2 (ResidualTreeBlock): cell (TreeNode): edges[0] (ConvLayer): field stride: a number 1.5, want an integer`},
		{"layers a string", func(_ map[string]any, b []any) { block(b, 0)["layers"] = "conv" },
			`block 0 (TransitionBlock): field layers: a string, want an array`},
		{"a layer an array", func(_ map[string]any, b []any) { block(b, 0)["layers"].([]any)[1] = []any{1} },
			`block 0 (TransitionBlock): layers[1]: an array, want an object`},
		{"an edge an array", func(_ map[string]any, b []any) { cell(b, 1)["edges"] = []any{[]any{1}} },
			`block 1 (ResidualTreeBlock): cell (TreeNode): edges[0]: an array, want an object`},
		{"cell_drop_rate a string", func(_ map[string]any, b []any) { block(b, 1)["cell_drop_rate"] = "0.1" },
			`block 1 (ResidualTreeBlock): field cell_drop_rate: a string, want a number`},
		{"block name a number", func(_ map[string]any, b []any) { block(b, 1)["name"] = 3 },
			`block 1: field name: a number, want a string`},
		{"block a string", func(_ map[string]any, b []any) { b[1] = "ResidualTreeBlock" },
			`block 1: a string, want an object`},
		{"node in_channels a string", func(_ map[string]any, b []any) { cell(b, 1)["in_channels"] = "18" },
			`block 1 (ResidualTreeBlock): cell (TreeNode): field in_channels: a string, want an integer`},
		{"classifier a string", func(f map[string]any, _ []any) { f["classifier"] = "LinearLayer" },
			`classifier: a string, want an object`},
		{"blocks an object", func(f map[string]any, _ []any) { f["blocks"] = map[string]any{} },
			`importing net.config: field blocks: an object, want an array`},

		// A channel count that disagrees: the reader and the layer whose
		// out_channels set the count.
		{"out_channels of a transition layer", func(_ map[string]any, b []any) { layer(b, 0, 0)["out_channels"] = 17 },
			"block 0 (TransitionBlock): layers[1] (IdentityLayer): field in_channels = 16, but its input has 17 channels (set by block 0 (TransitionBlock) layers[0] (ConvLayer) field out_channels)"},
		{"in_channels itself", func(_ map[string]any, b []any) { obj(block(b, 2)["in_bottle"])["in_channels"] = 71 },
			"block 2 (ResidualTreeBlock): in_bottle (ConvLayer): field in_channels = 71, but its input has 72 channels (set by block 1 (ResidualTreeBlock) out_bottle (ConvLayer) field out_channels)"},
		{"out_channels of an out_bottle", func(_ map[string]any, b []any) { obj(block(b, 1)["out_bottle"])["out_channels"] = 73 },
			"block 2 (ResidualTreeBlock): in_bottle (ConvLayer): field in_channels = 72, but its input has 73 channels (set by block 1 (ResidualTreeBlock) out_bottle (ConvLayer) field out_channels)"},
		{"out_channels of an in_bottle", func(_ map[string]any, b []any) { obj(block(b, 1)["in_bottle"])["out_channels"] = 19 },
			"block 1 (ResidualTreeBlock): cell (TreeNode): field in_channels = 18, but its input has 19 channels (set by block 1 (ResidualTreeBlock) in_bottle (ConvLayer) field out_channels)"},
		{"out_channels of an edge", func(_ map[string]any, b []any) { firstEdge(b, 1)["out_channels"] = 37 },
			"block 1 (ResidualTreeBlock): cell (TreeNode): child_nodes[0] (TreeNode): field in_channels = 36, but its input has 37 channels (set by block 1 (ResidualTreeBlock) cell (TreeNode) edges[0] (ConvLayer) field out_channels)"},
		{"out_channels of a node", func(_ map[string]any, b []any) { cell(b, 1)["out_channels"] = 19 },
			"block 1 (ResidualTreeBlock): cell (TreeNode): field out_channels = 19, but its branches give 18"},
		{"out_channels of a shortcut", func(_ map[string]any, b []any) { obj(block(b, 1)["shortcut"])["out_channels"] = 15 },
			"block 1 (ResidualTreeBlock): shortcut (IdentityLayer): field out_channels = 15: an identity keeps its 16 channels"},
		{"in_features", func(f map[string]any, _ []any) { obj(f["classifier"])["in_features"] = 3 },
			"classifier (LinearLayer): field in_features = 3, but 400 features reach it ([400 1 1] per image at a [3 32 32] input, the channels set by block 54 (ResidualTreeBlock) out_bottle (ConvLayer) field out_channels)"},
	} {
		in := []byte("{")
		if c.mod != nil {
			in = edit(c.mod)
		}
		_, err := ImportProxylessNAS(in, "net.config")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "Go ") {
			t.Errorf("%s: error %v names a Go type", c.name, err)
		}
	}
}
