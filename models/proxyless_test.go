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

func TestImportProxylessNASErrors(t *testing.T) {
	data := proxylessFixture(t)
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	edit := func(mod func(blocks []any)) []byte {
		var g map[string]any
		_ = json.Unmarshal(data, &g)
		mod(g["blocks"].([]any))
		b, _ := json.Marshal(g)
		return b
	}
	cell := func(blocks []any, i int) map[string]any { return blocks[i].(map[string]any)["cell"].(map[string]any) }
	firstEdge := func(blocks []any, i int) map[string]any {
		return cell(blocks, i)["edges"].([]any)[0].(map[string]any)
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"unknown layer": {edit(func(b []any) { firstEdge(b, 3)["name"] = "MBInvertedConvLayer" }),
			`block 3: cell: edges[0]: field name: unknown layer "MBInvertedConvLayer"`},
		"unknown field": {edit(func(b []any) { firstEdge(b, 5)["expand_ratio"] = 6 }),
			`block 5: cell: edges[0]: json: unknown field "expand_ratio"`},
		"field of another layer": {edit(func(b []any) { firstEdge(b, 5)["pool_type"] = "max" }),
			`block 5: cell: edges[0]: ConvLayer: unknown field "pool_type"`},
		"channels": {edit(func(b []any) { b[2].(map[string]any)["in_bottle"].(map[string]any)["in_channels"] = 71 }),
			"block 2: in_bottle: ConvLayer: in_channels/in_features = 71, but its input has 72 channels"},
		"activation": {edit(func(b []any) { firstEdge(b, 7)["act_func"] = "h_swish" }),
			`block 7: cell: edges[0]: ConvLayer: field act_func: "h_swish" is not supported`},
		"split type": {edit(func(b []any) { cell(b, 4)["child_nodes"].([]any)[0].(map[string]any)["split_type"] = "halve" }),
			`block 4: cell: child_nodes[0]: TreeNode: field split_type "halve"`},
		"unknown block": {edit(func(b []any) { b[9].(map[string]any)["name"] = "MobileInvertedResidualBlock" }),
			`block 9: field name: unknown block "MobileInvertedResidualBlock"`},
		"path drop": {edit(func(b []any) { cell(b, 6)["path_drop_rate"] = 0.1 }),
			"block 6: cell: TreeNode: field path_drop_rate = 0.1"},
		"not json": {[]byte("{"), "importing net.config"},
	} {
		_, err := ImportProxylessNAS(c.data, "net.config")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
}
