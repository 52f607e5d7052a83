package models

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// PyramidNetConfig parameterises the bottleneck PyramidNet of Han et al.
// (CVPR 2017); depth = 9*BlocksPerStage + 2.
type PyramidNetConfig struct {
	BlocksPerStage int     `json:"blocks_per_stage"`
	Alpha          float64 `json:"alpha"`         // total width increase over all blocks
	Groups         int     `json:"groups"`        // groups of each block's 3x3 conv
	StemChannels   int     `json:"stem_channels"` // 16 in the paper
	Input          [3]int  `json:"input"`         // C,H,W
	Classes        int     `json:"classes"`
	DropPath       float64 `json:"drop_path"` // per-block residual drop probability, 0 = none
	// StemStride is the stem conv's stride: 0 or 1 (the paper), or 2, which
	// quarters the cost of every block on inputs larger than needed (28x28
	// becomes 14, 7 and 4 across the stages, the 7x7 map's shortcut pooled
	// in ceil mode as the reference code does).
	StemStride int `json:"stem_stride,omitempty"`
}

// PyramidNetCIFAR10 is the backbone of the PathLevel-EAS and ProxylessNAS
// tree-cell networks: N=18 (depth 164), alpha=84, grouped 3x3 convs.
func PyramidNetCIFAR10() PyramidNetConfig {
	return PyramidNetConfig{BlocksPerStage: 18, Alpha: 84, Groups: 2, StemChannels: 16,
		Input: [3]int{3, 32, 32}, Classes: 10}
}

// PyramidNetDefault is a small network for Fashion-MNIST (1x28x28): depth 29,
// 0.22 M parameters and 41 M multiply-adds per image. Of the N=3..6,
// alpha=48..84 candidates it is the cheapest per step (compute, not
// parameters, limits training on two cores: about 0.25 GFLOP per image and
// training step); whether it reaches the 92-93 % target in a few minutes is
// for the training stage to measure.
func PyramidNetDefault() PyramidNetConfig {
	return PyramidNetConfig{BlocksPerStage: 3, Alpha: 48, Groups: 2, StemChannels: 16,
		Input: [3]int{1, 28, 28}, Classes: 10}
}

// MiddleOp appends the op in the middle of a bottleneck block (the 3x3 conv
// in PyramidNet; a tree cell in the search) and returns its output node. It
// maps `channels` to `channels` at the given stride; node names start with
// prefix (the block's, e.g. "stage2.block0").
// It returns "" when it computes nothing (a derived tree cell whose every
// edge is pruned): the block then has no residual branch.
type MiddleOp func(b *GraphBuilder, prefix, input string, channels, stride int) string

// GroupedConv3x3 is PyramidNet's middle op: a 3x3 conv with the given groups,
// named prefix+".conv2".
func GroupedConv3x3(groups int) MiddleOp {
	return func(b *GraphBuilder, prefix, input string, channels, stride int) string {
		return b.Conv(prefix+".conv2", input, channels, 3, stride, groups)
	}
}

// PyramidBlock appends one pre-activation bottleneck block from input (inC
// channels) and returns the node holding its output (4*planes channels):
//
//	BN -> conv1x1 -> BN -> ReLU -> middle(stride) -> BN -> ReLU -> conv1x1(x4) -> BN [-> droppath]
//	shortcut: [2x2 avgpool, stride 2, where stride is 2] -> zero-pad channels to 4*planes
//
// as Bottleneck in the reference code (no ReLU before the first BN: the block
// input is the previous block's un-activated sum).
func PyramidBlock(b *GraphBuilder, prefix, input string, inC, planes, stride int, middle MiddleOp, dropPath float64) string {
	mark := len(b.g.Nodes)
	x := b.BN(prefix+".bn1", input)
	x = b.Conv(prefix+".conv1", x, planes, 1, 1, 1)
	x = b.BN(prefix+".bn2", x)
	x = b.ReLU(prefix+".relu2", x)
	x = middle(b, prefix, x, planes, stride)
	if x == "" {
		// Nothing reaches the residual branch's output, so the branch and the
		// nodes that fed the middle op go; the block is its shortcut.
		b.g.Nodes = b.g.Nodes[:mark]
		return pyramidShortcut(b, prefix, input, inC, 4*planes, stride)
	}
	x = b.BN(prefix+".bn3", x)
	x = b.ReLU(prefix+".relu3", x)
	x = b.Conv(prefix+".conv3", x, 4*planes, 1, 1, 1)
	x = b.BN(prefix+".bn4", x)
	if dropPath > 0 {
		x = b.Node(prefix+".droppath", OpDropPath, Attrs{P: dropPath}, x)
	}
	return b.Node(prefix+".add", OpAdd, Attrs{}, x, pyramidShortcut(b, prefix, input, inC, 4*planes, stride))
}

// pyramidShortcut appends a block's shortcut: a 2x2 average pool where the
// stride is 2, then zero channels up to outC.
func pyramidShortcut(b *GraphBuilder, prefix, input string, inC, outC, stride int) string {
	short := input
	if stride != 1 {
		// Ceil mode, as the reference (AvgPool2d(2, 2, ceil_mode=True)): on
		// an odd map the padded 3x3 conv of the branch gives (h+1)/2 rows,
		// and so does the pool with its overhanging last window.
		short = b.Node(prefix+".pool", OpAvgPool, Attrs{Kernel: 2, Stride: 2, CeilMode: true}, short)
	}
	if inC != outC {
		short = b.Node(prefix+".pad", OpPadCh, Attrs{OutChannels: outC}, short)
	}
	return short
}

// PyramidWidths returns the bottleneck width (planes) of every block, stage
// by stage. The reference code (dyhan0920/PyramidNet-PyTorch) adds
// alpha/(3N) to a float featuremap_dim before each block and uses
// int(round(featuremap_dim)), Python's round being half-to-even. With grouped
// 3x3 convs the width must divide by the groups: like ProxylessNAS's
// PyramidTreeNet (its published net config has widths 18, 18, 20, 22, 24, 24,
// ... for N=18, alpha=84, groups 2) we round down to a multiple of groups.
// With groups 1 the rule is exactly the reference one.
func PyramidWidths(n int, alpha float64, stem, groups int) [3][]int {
	var w [3][]int
	addrate := alpha / float64(3*n)
	dim := float64(stem)
	for s := range 3 {
		for range n {
			dim += addrate // accumulated, as the reference does, not k*addrate
			planes := int(math.RoundToEven(dim))
			if groups > 0 {
				planes -= planes % groups
			}
			w[s] = append(w[s], planes)
		}
	}
	return w
}

// PyramidNet builds the bottleneck PyramidNet: stem conv3x3 + BN, three stages
// of BlocksPerStage blocks (the first block of stages 2 and 3 has stride 2),
// then BN -> ReLU -> global average pool -> linear. Node names are
// hierarchical ("stem.conv", "stage2.block0.conv2", "head.fc") so that later
// rewrites can find each block's middle op.
func PyramidNet(cfg PyramidNetConfig) (*Graph, error) {
	return PyramidNetWith(cfg, GroupedConv3x3(cfg.Groups), "pyramidnet")
}

// PyramidNetWith builds PyramidNet with another middle op in every block
// (the tree-cell supernet); name goes into the graph's builder record.
func PyramidNetWith(cfg PyramidNetConfig, middle MiddleOp, name string) (*Graph, error) {
	switch {
	case cfg.BlocksPerStage < 1:
		return nil, fmt.Errorf("pyramidnet: blocks_per_stage = %d, want >= 1", cfg.BlocksPerStage)
	case !(cfg.Alpha >= 0) || math.IsInf(cfg.Alpha, 0):
		return nil, fmt.Errorf("pyramidnet: alpha = %g, want a finite value >= 0", cfg.Alpha)
	case cfg.Groups < 1:
		return nil, fmt.Errorf("pyramidnet: groups = %d, want >= 1", cfg.Groups)
	case cfg.StemChannels < 1:
		return nil, fmt.Errorf("pyramidnet: stem_channels = %d, want >= 1", cfg.StemChannels)
	case cfg.StemStride < 0 || cfg.StemStride > 2:
		return nil, fmt.Errorf("pyramidnet: stem_stride = %d, want 1 or 2 (0 means 1)", cfg.StemStride)
	case cfg.Classes < 1:
		return nil, fmt.Errorf("pyramidnet: classes = %d, want >= 1", cfg.Classes)
	case !(cfg.DropPath >= 0 && cfg.DropPath < 1):
		return nil, fmt.Errorf("pyramidnet: drop_path = %g, want in [0, 1)", cfg.DropPath)
	}
	params, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("pyramidnet: %w", err)
	}
	gname := fmt.Sprintf("pyramidnet%d_a%g_g%d", 9*cfg.BlocksPerStage+2, cfg.Alpha, cfg.Groups)
	b := NewGraphBuilder(gname, "input", cfg.Input)
	x := b.Conv("stem.conv", "input", cfg.StemChannels, 3, max(cfg.StemStride, 1), 1)
	x = b.BN("stem.bn", x)
	inC := cfg.StemChannels
	for s, widths := range PyramidWidths(cfg.BlocksPerStage, cfg.Alpha, cfg.StemChannels, cfg.Groups) {
		for i, planes := range widths {
			if planes < 1 {
				return nil, fmt.Errorf("pyramidnet: stage %d block %d has width %d (alpha too small for groups %d?)", s+1, i, planes, cfg.Groups)
			}
			stride := 1
			if s > 0 && i == 0 {
				stride = 2
			}
			x = PyramidBlock(b, fmt.Sprintf("stage%d.block%d", s+1, i), x, inC, planes, stride, middle, cfg.DropPath)
			inC = 4 * planes
		}
	}
	x = b.BN("head.bn", x)
	x = b.ReLU("head.relu", x)
	x = b.Node("head.gap", OpGAP, Attrs{}, x)
	x = b.Node("head.fc", OpLinear, Attrs{OutChannels: cfg.Classes, Bias: true}, x)
	return b.Finish(x, &BuilderInfo{Name: name, Params: params})
}

// Builders builds graphs by name with parameters from a config file (the
// CLI's `model.builder` and `model.params`).
var Builders = map[string]func(params json.RawMessage) (*Graph, error){
	"pyramidnet": buildPyramidNet,
}

// buildPyramidNet decodes params over PyramidNetDefault (fields not given
// keep the default's values; the graph's builder record holds the resolved
// configuration). Unknown fields are errors. A "preset" of "cifar10" starts
// from PyramidNetCIFAR10 instead.
func buildPyramidNet(params json.RawMessage) (*Graph, error) {
	cfg := PyramidNetDefault()
	if len(bytes.TrimSpace(params)) > 0 {
		var preset struct {
			Preset string `json:"preset"`
		}
		if err := json.Unmarshal(params, &preset); err != nil {
			return nil, fmt.Errorf("pyramidnet params: %w", err)
		}
		switch preset.Preset {
		case "", "default":
		case "cifar10":
			cfg = PyramidNetCIFAR10()
		default:
			return nil, fmt.Errorf("pyramidnet params: unknown preset %q (want default or cifar10)", preset.Preset)
		}
		var withPreset struct {
			Preset string `json:"preset"`
			*PyramidNetConfig
		}
		withPreset.PyramidNetConfig = &cfg
		if err := decodeStrict(params, &withPreset); err != nil {
			return nil, fmt.Errorf("pyramidnet params: %w", err)
		}
	}
	return PyramidNet(cfg)
}
