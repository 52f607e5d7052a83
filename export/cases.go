package export

import (
	"fmt"
	"math"
	"math/rand/v2"

	"bayesnas/models"
	"bayesnas/nn"
)

// Case is a small graph that exercises one op kind and attribute
// combination of the exporter.
type Case struct {
	Name  string
	Graph *models.Graph
	// Softmax asks for the Softmax output option.
	Softmax bool
}

// Cases returns graphs covering every op kind and attribute combination that
// Build maps, each alone or with the neighbour that decides how it is
// exported (a bn after a conv is folded, one after an add is not). Tests
// compare ONNX Runtime against the engine on each; a device profiler can time
// them one by one.
func Cases() ([]Case, error) {
	conv := func(out, k, s, p, d, g int, bias bool) models.Attrs {
		return models.Attrs{OutChannels: out, Kernel: k, Stride: s, Pad: p, Dilation: d, Groups: g, Bias: bias}
	}
	bn := models.Attrs{Eps: 1e-5, Momentum: 0.1}
	type node struct {
		name, op string
		a        models.Attrs
		in       []string
	}
	n := func(name, op string, a models.Attrs, in ...string) node { return node{name, op, a, in} }
	specs := []struct {
		name    string
		input   [3]int
		nodes   []node
		softmax bool
	}{
		{"conv_k3_bias", [3]int{4, 9, 9}, []node{n("c", models.OpConv, conv(6, 3, 1, 1, 1, 1, true), "x")}, false},
		{"conv_k3_s2_groups2", [3]int{4, 9, 9}, []node{n("c", models.OpConv, conv(6, 3, 2, 1, 1, 2, false), "x")}, false},
		{"conv_k3_dilation2", [3]int{4, 9, 9}, []node{n("c", models.OpConv, conv(5, 3, 1, 2, 2, 1, false), "x")}, false},
		{"conv_depthwise", [3]int{4, 9, 9}, []node{n("c", models.OpConv, conv(4, 3, 1, 1, 1, 4, true), "x")}, false},
		{"conv_k1", [3]int{4, 9, 9}, []node{n("c", models.OpConv, conv(7, 1, 1, 0, 1, 1, false), "x")}, false},
		{"conv_k5_s2_nopad", [3]int{4, 11, 11}, []node{n("c", models.OpConv, conv(3, 5, 2, 0, 1, 1, true), "x")}, false},
		{"conv_bn_folded", [3]int{4, 8, 8}, []node{
			n("c", models.OpConv, conv(6, 3, 1, 1, 1, 2, false), "x"), n("b", models.OpBN, bn, "c")}, false},
		{"conv_bias_bn_folded", [3]int{4, 8, 8}, []node{
			n("c", models.OpConv, conv(6, 3, 1, 1, 1, 1, true), "x"), n("b", models.OpBN, bn, "c")}, false},
		{"conv_bn_not_folded", [3]int{4, 8, 8}, []node{ // the conv output has a second reader
			n("c", models.OpConv, conv(4, 3, 1, 1, 1, 1, false), "x"), n("b", models.OpBN, bn, "c"),
			n("sum", models.OpAdd, models.Attrs{}, "b", "c")}, false},
		{"bn_relu", [3]int{5, 6, 6}, []node{n("b", models.OpBN, bn, "x"), n("r", models.OpReLU, models.Attrs{}, "b")}, false},
		{"maxpool_k3_s2_p1", [3]int{3, 9, 9}, []node{n("p", models.OpMaxPool, models.Attrs{Kernel: 3, Stride: 2, Pad: 1}, "x")}, false},
		{"maxpool_k2_s2", [3]int{3, 8, 8}, []node{n("p", models.OpMaxPool, models.Attrs{Kernel: 2, Stride: 2}, "x")}, false},
		{"avgpool_k3_p1_count_pad", [3]int{3, 7, 7}, []node{
			n("p", models.OpAvgPool, models.Attrs{Kernel: 3, Stride: 1, Pad: 1, CountIncludePad: true}, "x")}, false},
		{"avgpool_k3_s2_p1_exclude_pad", [3]int{3, 7, 7}, []node{
			n("p", models.OpAvgPool, models.Attrs{Kernel: 3, Stride: 2, Pad: 1}, "x")}, false},
		{"avgpool_k2_s2", [3]int{3, 8, 8}, []node{n("p", models.OpAvgPool, models.Attrs{Kernel: 2, Stride: 2}, "x")}, false},
		{"avgpool_k2_s2_ceil", [3]int{3, 7, 5}, []node{n("p", models.OpAvgPool, models.Attrs{Kernel: 2, Stride: 2, CeilMode: true}, "x")}, false},
		{"avgpool_k3_s2_p1_ceil", [3]int{3, 6, 6}, []node{n("p", models.OpAvgPool, models.Attrs{Kernel: 3, Stride: 2, Pad: 1, CeilMode: true}, "x")}, false},
		{"maxpool_k3_s2_ceil", [3]int{3, 8, 7}, []node{n("p", models.OpMaxPool, models.Attrs{Kernel: 3, Stride: 2, CeilMode: true}, "x")}, false},
		{"gap_linear", [3]int{6, 5, 5}, []node{n("g", models.OpGAP, models.Attrs{}, "x"),
			n("fc", models.OpLinear, models.Attrs{OutChannels: 4, Bias: true}, "g")}, false},
		{"linear_on_map_nobias", [3]int{2, 3, 3}, []node{n("fc", models.OpLinear, models.Attrs{OutChannels: 5}, "x")}, false},
		{"linear_linear_softmax", [3]int{3, 2, 2}, []node{n("fc1", models.OpLinear, models.Attrs{OutChannels: 6, Bias: true}, "x"),
			n("fc2", models.OpLinear, models.Attrs{OutChannels: 4, Bias: true}, "fc1")}, true},
		{"add2", [3]int{3, 4, 4}, []node{n("r", models.OpReLU, models.Attrs{}, "x"), n("s", models.OpAdd, models.Attrs{}, "x", "r")}, false},
		{"add3", [3]int{3, 4, 4}, []node{n("r", models.OpReLU, models.Attrs{}, "x"),
			n("c", models.OpConv, conv(3, 1, 1, 0, 1, 1, false), "x"), n("s", models.OpAdd, models.Attrs{}, "x", "r", "c")}, false},
		{"wsum_folded_and_mul", [3]int{4, 6, 6}, []node{
			n("c", models.OpConv, conv(4, 3, 1, 1, 1, 1, false), "x"),
			n("cb", models.OpConv, conv(4, 1, 1, 0, 1, 1, true), "x"), n("cbn", models.OpBN, bn, "cb"),
			n("b", models.OpBN, bn, "x"),
			n("r", models.OpReLU, models.Attrs{}, "x"),
			n("w", models.OpWSum, models.Attrs{}, "c", "cbn", "b", "r", "x")}, false},
		{"wsum_unit_weight_no_mul", [3]int{3, 4, 4}, []node{n("r", models.OpReLU, models.Attrs{}, "x"),
			n("w", models.OpWSum, models.Attrs{}, "r", "x")}, false},
		{"wsum_linear_single", [3]int{3, 2, 2}, []node{n("fc", models.OpLinear, models.Attrs{OutChannels: 4, Bias: true}, "x"),
			n("w", models.OpWSum, models.Attrs{}, "fc")}, false},
		{"concat3", [3]int{2, 5, 5}, []node{n("r", models.OpReLU, models.Attrs{}, "x"),
			n("c", models.OpConv, conv(3, 3, 1, 1, 1, 1, false), "x"), n("cat", models.OpConcat, models.Attrs{}, "x", "r", "c")}, false},
		{"slice_middle", [3]int{6, 4, 4}, []node{n("s", models.OpSlice, models.Attrs{Start: 2, End: 5}, "x")}, false},
		{"slice_head_tail_full", [3]int{6, 4, 4}, []node{n("h", models.OpSlice, models.Attrs{Start: 0, End: 2}, "x"),
			n("t", models.OpSlice, models.Attrs{Start: 2, End: 6}, "x"), n("f", models.OpSlice, models.Attrs{Start: 0, End: 6}, "x"),
			n("cat", models.OpConcat, models.Attrs{}, "t", "h", "f")}, false},
		{"padch", [3]int{3, 4, 4}, []node{n("p", models.OpPadCh, models.Attrs{OutChannels: 8}, "x")}, false},
		{"padch_same", [3]int{3, 4, 4}, []node{n("p", models.OpPadCh, models.Attrs{OutChannels: 3}, "x"),
			n("r", models.OpReLU, models.Attrs{}, "p")}, false},
		{"avgpool_padch_add", [3]int{3, 8, 8}, []node{ // PyramidNet's downsampling shortcut
			n("c", models.OpConv, conv(5, 3, 2, 1, 1, 1, false), "x"),
			n("p", models.OpAvgPool, models.Attrs{Kernel: 2, Stride: 2}, "x"), n("pc", models.OpPadCh, models.Attrs{OutChannels: 5}, "p"),
			n("s", models.OpAdd, models.Attrs{}, "c", "pc")}, false},
		{"shuffle_g2", [3]int{6, 3, 5}, []node{n("s", models.OpShuffle, models.Attrs{Groups: 2}, "x")}, false},
		{"shuffle_g3", [3]int{6, 3, 3}, []node{n("s", models.OpShuffle, models.Attrs{Groups: 3}, "x")}, false},
		{"shuffle_g1", [3]int{4, 3, 3}, []node{n("s", models.OpShuffle, models.Attrs{Groups: 1}, "x"),
			n("r", models.OpReLU, models.Attrs{}, "s")}, false},
		{"dropout_droppath", [3]int{3, 4, 4}, []node{n("d", models.OpDropout, models.Attrs{P: 0.3}, "x"),
			n("c", models.OpConv, conv(3, 3, 1, 1, 1, 1, false), "d"), n("dp", models.OpDropPath, models.Attrs{P: 0.2}, "c")}, false},
		{"dropout_of_input", [3]int{3, 4, 4}, []node{n("d", models.OpDropout, models.Attrs{P: 0.5}, "x")}, false},
	}
	var cases []Case
	for _, s := range specs {
		g := &models.Graph{Format: models.Format, Name: s.name, Input: models.Input{Name: "x", Shape: s.input[:]}}
		for _, nd := range s.nodes {
			g.Nodes = append(g.Nodes, &models.Node{Name: nd.name, Op: nd.op, Attrs: nd.a, Inputs: nd.in})
		}
		g.Output = s.nodes[len(s.nodes)-1].name
		if err := g.Validate(); err != nil {
			return nil, fmt.Errorf("export case %s: %w", s.name, err)
		}
		cases = append(cases, Case{Name: s.name, Graph: g, Softmax: s.softmax})
	}
	return cases, nil
}

// RandomParams allocates the parameters of g (no gradients) filled by
// RandomizeParams: a network to export or time without training it.
func RandomParams(g *models.Graph, seed uint64) ([]*nn.Param, error) {
	specs, err := g.ParamSpecs()
	if err != nil {
		return nil, err
	}
	params := make([]*nn.Param, len(specs))
	for i, s := range specs {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		params[i] = &nn.Param{Name: s.Name, Shape: s.Shape, Kind: s.Kind, Data: make([]float32, n)}
	}
	RandomizeParams(params, seed)
	return params, nil
}

// RandomizeParams fills every parameter of a network compiled from g with
// values that make each exported op matter: He-scaled weights, non-zero
// biases, BN scales in [0.5, 1.5], shifts and running means around 0,
// running variances in [0.5, 2], wsum weights in [0.3, 1.5] with the first
// one exactly 1 (the case the exporter writes without a Mul). Each tensor
// draws from a generator seeded by (seed, its name).
func RandomizeParams(params []*nn.Param, seed uint64) {
	for _, p := range params {
		h := uint64(14695981039346656037)
		for _, c := range []byte(p.Name) {
			h = (h ^ uint64(c)) * 1099511628211
		}
		r := rand.New(rand.NewPCG(seed, h))
		slot := p.Name[lastDot(p.Name)+1:]
		uniform := func(lo, hi float64) {
			for i := range p.Data {
				p.Data[i] = float32(lo + (hi-lo)*r.Float64())
			}
		}
		switch {
		case slot == "weight" && len(p.Shape) > 1: // conv or linear
			fanIn := 1
			for _, d := range p.Shape[1:] {
				fanIn *= d
			}
			std := math.Sqrt(2 / float64(fanIn))
			for i := range p.Data {
				p.Data[i] = float32(r.NormFloat64() * std)
			}
		case slot == "weight": // bn scale
			uniform(0.5, 1.5)
		case slot == "bias", slot == "running_mean":
			uniform(-0.3, 0.3)
		case slot == "running_var":
			uniform(0.5, 2)
		case slot == "w0":
			p.Data[0] = 1
		default: // other wsum weights
			uniform(0.3, 1.5)
		}
	}
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}
