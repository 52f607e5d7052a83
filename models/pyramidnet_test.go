package models

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"bayesnas/nn"
)

// The widths of ProxylessNAS's published PyramidTreeNet config (N=18,
// alpha=84, groups 2;
// internal/fixtures/testdata/proxylessnas_cifar10_net.config, the in_bottle
// out_channels of each ResidualTreeBlock).
var proxylessWidths = [3][]int{
	{18, 18, 20, 22, 24, 24, 26, 28, 30, 32, 32, 34, 36, 38, 38, 40, 42, 44},
	{46, 46, 48, 50, 52, 52, 54, 56, 58, 60, 60, 62, 64, 66, 66, 68, 70, 72},
	{74, 74, 76, 78, 80, 80, 82, 84, 86, 88, 88, 90, 92, 94, 94, 96, 98, 100},
}

func TestPyramidWidths(t *testing.T) {
	got := PyramidWidths(18, 84, 16, 2)
	for s := range 3 {
		if !slices.Equal(got[s], proxylessWidths[s]) {
			t.Errorf("stage %d widths %v, want %v", s+1, got[s], proxylessWidths[s])
		}
	}
	// Groups 1 is the reference rule: 16 + k*48/9 rounded, k = 1..9.
	want := []int{21, 27, 32, 37, 43, 48, 53, 59, 64}
	g1 := PyramidWidths(3, 48, 16, 1)
	if all := slices.Concat(g1[0], g1[1], g1[2]); !slices.Equal(all, want) {
		t.Errorf("groups 1 widths %v, want %v", all, want)
	}
}

func TestPyramidNetCIFAR10(t *testing.T) {
	g, err := PyramidNet(PyramidNetCIFAR10())
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PyramidNet-164 (alpha 84, groups 2) on CIFAR-10: %d parameters (%.2f M), %d BN buffers, %.1f M MACs per image, %d nodes",
		c.Params, float64(c.Params)/1e6, c.Buffers, float64(c.MACs)/1e6, len(g.Nodes))
	if c.Params < 1e6 || c.Params > 10e6 {
		t.Errorf("%d parameters, want between 1 M and 10 M", c.Params)
	}
	shapes, _ := g.InferShapes()
	if s := shapes["head.gap"]; !slices.Equal(s, []int{400, 1, 1}) {
		t.Errorf("final features %v, want 400 = 4*100 channels at 1x1", s)
	}
	if s := shapes["stage3.block0.add"]; !slices.Equal(s, []int{296, 8, 8}) {
		t.Errorf("stage 3 entry %v, want [296 8 8]", s)
	}
	convs := 0
	for _, n := range g.Nodes {
		if n.Op == OpConv {
			convs++
		}
	}
	if convs != 3*3*18+1 { // depth 9N+2 counts the convs and the linear layer
		t.Errorf("%d convs, want %d", convs, 3*3*18+1)
	}
}

func TestPyramidNetDefault(t *testing.T) {
	g, err := PyramidNet(PyramidNetDefault())
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("default PyramidNet (Fashion-MNIST): %d parameters, %.1f M MACs per image", c.Params, float64(c.MACs)/1e6)
	if c.Params > 500_000 {
		t.Errorf("%d parameters, want at most 0.5 M", c.Params)
	}
	if s, _ := g.InferShapes(); !slices.Equal(s["head.fc"], []int{10}) || !slices.Equal(s["stage3.block2.add"], []int{4 * 64, 7, 7}) {
		t.Errorf("output %v, last block %v", s["head.fc"], s["stage3.block2.add"])
	}
}

// A stride-2 stem on 28x28 leaves 14, 7 and 4: the stride-2 block on the
// 7x7 map needs the shortcut's ceil-mode pool (4x4, as the padded 3x3 conv
// of the branch) to add up. The network compiles, trains a step and costs
// about a quarter of the stride-1 one.
func TestPyramidNetStemStride2(t *testing.T) {
	cfg := PyramidNetDefault()
	full, err := PyramidNet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StemStride = 2
	g, err := PyramidNet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := g.InferShapes()
	if err != nil {
		t.Fatal(err)
	}
	for node, want := range map[string][]int{"stem.conv": {16, 14, 14}, "stage2.block0.pool": {4 * 32, 7, 7},
		"stage3.block0.pool": {4 * 48, 4, 4}, "stage3.block2.add": {4 * 64, 4, 4}} {
		if !slices.Equal(s[node], want) {
			t.Errorf("%s: shape %v, want %v", node, s[node], want)
		}
	}
	c, _ := g.Count()
	cf, _ := full.Count()
	if c.Params != cf.Params || c.MACs*3 > cf.MACs {
		t.Errorf("stride-2 stem: %d params, %d MACs; stride 1: %d, %d (want the same params, under a third of the MACs)", c.Params, c.MACs, cf.Params, cf.MACs)
	}
	net, err := Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	for i := range net.Input.Data {
		net.Input.Data[i] = float32(i%7) - 3
	}
	net.ZeroGrad()
	net.Forward(true)
	var loss nn.SoftmaxCrossEntropy
	if l, _, err := loss.Forward(net.Output, []int32{1, 2}); err != nil || math.IsNaN(l) {
		t.Fatalf("loss %g, %v", l, err)
	}
	net.Backward()
}

// TestPyramidNetSmallByHand builds N=1, alpha=12 (widths 20, 24, 28) and
// checks parameter and MAC totals worked out by hand.
func TestPyramidNetSmallByHand(t *testing.T) {
	g, err := PyramidNet(PyramidNetConfig{BlocksPerStage: 1, Alpha: 12, Groups: 2, StemChannels: 16,
		Input: [3]int{3, 16, 16}, Classes: 10})
	if err != nil {
		t.Fatal(err)
	}
	bn := func(c int64) int64 { return 2 * c }
	block := func(in, p int64) int64 {
		return bn(in) + in*p + bn(p) + p*(p/2)*9 + bn(p) + p*4*p + bn(4*p)
	}
	wantParams := 3*16*9 + bn(16) + block(16, 20) + block(80, 24) + block(96, 28) + bn(112) + 112*10 + 10
	// MACs: stem at 16x16; stage 1 at 16x16; stage 2's 1x1 conv at 16x16, rest at 8x8; stage 3 likewise at 8x8 then 4x4.
	wantMACs := int64(16*16)*(3*16*9) +
		int64(16*16)*(16*20+20*10*9+20*80) +
		int64(16*16)*(80*24) + int64(8*8)*(24*12*9+24*96) +
		int64(8*8)*(96*28) + int64(4*4)*(28*14*9+28*112) +
		112*10
	c, err := g.Count()
	if err != nil {
		t.Fatal(err)
	}
	if c.Params != wantParams || c.MACs != wantMACs {
		t.Errorf("params %d, MACs %d; want %d, %d", c.Params, c.MACs, wantParams, wantMACs)
	}
	var names []string
	for _, n := range g.Nodes {
		if strings.HasPrefix(n.Name, "stage2.block0.") {
			names = append(names, strings.TrimPrefix(n.Name, "stage2.block0.")+":"+n.Op)
		}
	}
	want := []string{"bn1:bn", "conv1:conv", "bn2:bn", "relu2:relu", "conv2:conv", "bn3:bn", "relu3:relu",
		"conv3:conv", "bn4:bn", "pool:avgpool", "pad:padch", "add:add"}
	if !slices.Equal(names, want) {
		t.Errorf("stage2.block0 nodes %v, want %v", names, want)
	}
	if n := g.Node("stage2.block0.conv2"); n.Attrs.Stride != 2 || n.Attrs.Groups != 2 || n.Inputs[0] != "stage2.block0.relu2" {
		t.Errorf("middle conv %+v", n)
	}
	if g.Node("stage1.block0.pool") != nil || g.Node("stage1.block0.pad") == nil {
		t.Error("stage 1's first block must pad channels without pooling")
	}
	if g.Output != "head.fc" || g.Builder == nil || g.Builder.Name != "pyramidnet" {
		t.Errorf("output %q, builder %+v", g.Output, g.Builder)
	}
}

func TestPyramidNetMiddleOpSwap(t *testing.T) {
	cfg := PyramidNetConfig{BlocksPerStage: 1, Alpha: 12, Groups: 2, StemChannels: 16, Input: [3]int{3, 16, 16}, Classes: 10, DropPath: 0.2}
	// A two-branch middle op: split channels, a 3x3 conv on each half, concatenate.
	split := func(b *GraphBuilder, prefix, in string, ch, stride int) string {
		h := ch / 2
		l := b.Node(prefix+".left", OpSlice, Attrs{Start: 0, End: h}, in)
		r := b.Node(prefix+".right", OpSlice, Attrs{Start: h, End: ch}, in)
		l = b.Conv(prefix+".lconv", l, h, 3, stride, 1)
		r = b.Conv(prefix+".rconv", r, ch-h, 5, stride, 1)
		return b.Node(prefix+".cat", OpConcat, Attrs{}, l, r)
	}
	g, err := PyramidNetWith(cfg, split, "pyramidnet-split")
	if err != nil {
		t.Fatal(err)
	}
	if g.Node("stage3.block0.conv2") != nil || g.Node("stage3.block0.rconv") == nil {
		t.Error("middle op not swapped")
	}
	if n := g.Node("stage1.block0.droppath"); n == nil || n.Attrs.P != 0.2 || g.Node("stage1.block0.add").Inputs[0] != n.Name {
		t.Error("drop-path missing before the add")
	}
}

func TestPyramidNetBadConfig(t *testing.T) {
	base := PyramidNetDefault()
	cases := map[string]func(c *PyramidNetConfig){
		"blocks_per_stage": func(c *PyramidNetConfig) { c.BlocksPerStage = 0 },
		"alpha":            func(c *PyramidNetConfig) { c.Alpha = -1 },
		"groups":           func(c *PyramidNetConfig) { c.Groups = 0 },
		"classes":          func(c *PyramidNetConfig) { c.Classes = 0 },
		"drop_path":        func(c *PyramidNetConfig) { c.DropPath = 1 },
		"stem_channels":    func(c *PyramidNetConfig) { c.StemChannels = 0 },
		"stem_stride":      func(c *PyramidNetConfig) { c.StemStride = 3 },
		"input":            func(c *PyramidNetConfig) { c.Input = [3]int{1, 0, 28} },
	}
	for field, mutate := range cases {
		c := base
		mutate(&c)
		_, err := PyramidNet(c)
		if err == nil {
			t.Errorf("%s: no error", field)
			continue
		}
		if field != "input" && !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %q does not name the field", field, err)
		}
	}
}

func TestBuildersRegistry(t *testing.T) {
	build := Builders["pyramidnet"]
	if build == nil {
		t.Fatal("no pyramidnet builder")
	}
	g, err := build(json.RawMessage(`{"blocks_per_stage": 2, "alpha": 24}`))
	if err != nil {
		t.Fatal(err)
	}
	var got PyramidNetConfig
	if err := json.Unmarshal(g.Builder.Params, &got); err != nil {
		t.Fatal(err)
	}
	want := PyramidNetDefault()
	want.BlocksPerStage, want.Alpha = 2, 24
	if got != want {
		t.Errorf("resolved config %+v, want %+v", got, want)
	}
	g, err = build(json.RawMessage(`{"preset": "cifar10"}`))
	if err != nil || !slices.Equal(g.Input.Shape, []int{3, 32, 32}) || len(g.Nodes) < 500 {
		t.Errorf("cifar10 preset: %v", err)
	}
	if g, err := build(nil); err != nil || g.Name != "pyramidnet29_a48_g2" {
		t.Errorf("no params: %v", err)
	}
	for params, want := range map[string]string{
		`{"alpah": 3}`:              "alpah",
		`{"preset": "imagenet"}`:    "imagenet",
		`{"groups": 0}`:             "groups",
		`{"blocks_per_stage": "x"}`: "blocks_per_stage",
	} {
		if _, err := build(json.RawMessage(params)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %q", params, err, want)
		}
	}
}
