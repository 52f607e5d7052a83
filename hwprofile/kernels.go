package hwprofile

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"bayesnas/export"
)

// Kernel is one unit of work as ONNX Runtime executes an exported model: an
// ONNX node, or a short chain that the runtime fuses or that only exists to
// reshape. Its Key prices it in a profile.
type Kernel struct {
	// Name is the name of the kernel's first ONNX node (the IR node it
	// comes from), for error messages and per-node tables.
	Name string
	// Nodes are the kernel's ONNX nodes in order.
	Nodes []*export.Node
	Key   Key
	// MACs are the multiply-adds of the kernel per sample (0 for kernels
	// without multiplications worth counting).
	MACs int64
	// input and output are the ONNX tensors that enter and leave the kernel.
	input, output string
	// extra are further inputs from outside the kernel (an Add's second
	// term), fed from random constants in the kernel's micro model.
	extra []string
}

// Key identifies what a kernel costs: its kind with the attributes that
// change the work (Kind), the input's channels, height and width, and the
// output channels for kernels that choose them (Out; 0 for kernels whose
// output channels follow the input's). Kernels of one Kind at one H x W
// differ only in channels: a profile measures them on channel grids and
// interpolates between grid points.
type Key struct {
	Kind string `yaml:"kernel" json:"kernel"`
	C    int    `yaml:"c" json:"c"`
	H    int    `yaml:"h" json:"h"`
	W    int    `yaml:"w" json:"w"`
	Out  int    `yaml:"out,omitempty" json:"out,omitempty"`
}

func (k Key) String() string {
	s := fmt.Sprintf("%s %dx%dx%d", k.Kind, k.C, k.H, k.W)
	if k.Out > 0 {
		s += " -> " + strconv.Itoa(k.Out)
	}
	return s
}

// family is the part of a key that is not channels.
func (k Key) family() string { return fmt.Sprintf("%s@%dx%d", k.Kind, k.H, k.W) }

// Shapes infers the per-sample shape (without the batch dimension) of every
// tensor of an exported model from its input and initializers, for the
// operators the exporter writes. It does not trust value_info.
func Shapes(m *export.Model) (map[string][]int, error) {
	if m.Graph == nil || len(m.Graph.Inputs) != 1 {
		return nil, fmt.Errorf("model: want a graph with one input")
	}
	shapes := map[string][]int{}
	inits := map[string]*export.Tensor{}
	for _, t := range m.Graph.Initializers {
		inits[t.Name] = t
	}
	in := m.Graph.Inputs[0]
	if len(in.Shape) < 2 {
		return nil, fmt.Errorf("model input %s: want [batch, ...]", in.Name)
	}
	for _, d := range in.Shape[1:] {
		shapes[in.Name] = append(shapes[in.Name], int(d.Value))
	}
	for _, n := range m.Graph.Nodes {
		ins := make([][]int, len(n.Inputs))
		for i, name := range n.Inputs {
			if t, ok := inits[name]; ok {
				for _, d := range t.Dims {
					ins[i] = append(ins[i], int(d))
				}
				continue
			}
			s, ok := shapes[name]
			if !ok {
				return nil, fmt.Errorf("node %q (%s): input %q has no known shape", n.Name, n.OpType, name)
			}
			ins[i] = s
		}
		outs, err := onnxShape(n, ins, inits)
		if err != nil {
			return nil, fmt.Errorf("node %q (%s): %w", n.Name, n.OpType, err)
		}
		for i, o := range n.Outputs {
			shapes[o] = outs[min(i, len(outs)-1)]
			if n.OpType == "Split" {
				shapes[o] = outs[i]
			}
		}
	}
	return shapes, nil
}

func attr(n *export.Node, name string) *export.Attribute {
	for _, a := range n.Attrs {
		if a.Name == name {
			return a
		}
	}
	return nil
}

func attrInt(n *export.Node, name string, def int64) int64 {
	if a := attr(n, name); a != nil {
		return a.I
	}
	return def
}

func attrInts(n *export.Node, name string, def ...int64) []int64 {
	if a := attr(n, name); a != nil && len(a.Ints) > 0 {
		return a.Ints
	}
	return def
}

// window is the output length of a conv or pooling window along one axis
// (ONNX's formula; ceil mode drops a last window that would start in the
// end padding, as PyTorch and ONNX Runtime do).
func window(in, k, s, pBegin, pEnd, d int, ceil bool) int {
	span := in + pBegin + pEnd - ((k-1)*d + 1)
	if !ceil {
		return span/s + 1
	}
	out := int(math.Ceil(float64(span)/float64(s))) + 1
	if (out-1)*s >= in+pBegin {
		out--
	}
	return out
}

func onnxShape(n *export.Node, ins [][]int, inits map[string]*export.Tensor) ([][]int, error) {
	x := ins[0]
	switch n.OpType {
	case "Relu", "BatchNormalization", "Mul", "Add", "Softmax":
		return [][]int{x}, nil
	case "Conv", "MaxPool", "AveragePool":
		if len(x) != 3 {
			return nil, fmt.Errorf("input %v, want C,H,W", x)
		}
		k := attrInts(n, "kernel_shape")
		if len(k) != 2 {
			return nil, fmt.Errorf("kernel_shape %v", k)
		}
		s := attrInts(n, "strides", 1, 1)
		p := attrInts(n, "pads", 0, 0, 0, 0)
		d := attrInts(n, "dilations", 1, 1)
		ceil := attrInt(n, "ceil_mode", 0) == 1
		c := x[0]
		if n.OpType == "Conv" {
			c = ins[1][0]
		}
		h := window(x[1], int(k[0]), int(s[0]), int(p[0]), int(p[2]), int(d[0]), ceil)
		w := window(x[2], int(k[1]), int(s[1]), int(p[1]), int(p[3]), int(d[1]), ceil)
		return [][]int{{c, h, w}}, nil
	case "GlobalAveragePool":
		return [][]int{{x[0], 1, 1}}, nil
	case "Flatten":
		p := 1
		for _, v := range x {
			p *= v
		}
		return [][]int{{p}}, nil
	case "Gemm":
		return [][]int{{ins[1][0]}}, nil
	case "Concat":
		out := slices.Clone(x)
		for _, s := range ins[1:] {
			if len(s) == len(x)+1 {
				// A micro model's stand-in input, an initializer with
				// the batch dimension: [1,C,H,W].
				s = s[1:]
			}
			out[0] += s[0]
		}
		return [][]int{out}, nil
	case "Split":
		t := inits[n.Inputs[1]]
		if t == nil {
			return nil, fmt.Errorf("split sizes are not an initializer")
		}
		sizes, err := t.Int64s()
		if err != nil {
			return nil, err
		}
		var outs [][]int
		for _, c := range sizes {
			o := slices.Clone(x)
			o[0] = int(c)
			outs = append(outs, o)
		}
		return outs, nil
	case "Pad":
		t := inits[n.Inputs[1]]
		if t == nil {
			return nil, fmt.Errorf("pads are not an initializer")
		}
		pads, err := t.Int64s()
		if err != nil || len(pads) != 2*(len(x)+1) {
			return nil, fmt.Errorf("pads %v for input %v", pads, x)
		}
		out := slices.Clone(x)
		for i := range out {
			out[i] += int(pads[i+1] + pads[len(x)+1+i+1])
		}
		return [][]int{out}, nil
	case "Reshape":
		t := inits[n.Inputs[1]]
		if t == nil {
			return nil, fmt.Errorf("shape is not an initializer")
		}
		dims, err := t.Int64s()
		if err != nil || len(dims) < 1 || dims[0] != 0 {
			return nil, fmt.Errorf("shape %v: want a leading 0 (the batch)", dims)
		}
		var out []int
		for _, v := range dims[1:] {
			if v < 1 {
				return nil, fmt.Errorf("shape %v: only the batch may be inferred", dims)
			}
			out = append(out, int(v))
		}
		return [][]int{out}, nil
	case "Transpose":
		perm := attrInts(n, "perm")
		if len(perm) != len(x)+1 || perm[0] != 0 {
			return nil, fmt.Errorf("perm %v: want the batch first", perm)
		}
		out := make([]int, len(x))
		for i, p := range perm[1:] {
			out[i] = x[p-1]
		}
		return [][]int{out}, nil
	}
	return nil, fmt.Errorf("op %s is not one the exporter writes", n.OpType)
}

// Kernels splits an exported model into the kernels ONNX Runtime runs, in
// graph order. The fusions it applies are the runtime's own (recorded in
// every profile as FusionRules): a Conv whose only reader is a Relu runs as
// one fused Conv; Flatten before a Gemm and the Reshape-Transpose-Reshape of
// a channel shuffle are one kernel each (the reshapes only relabel memory).
func Kernels(m *export.Model) ([]Kernel, error) {
	shapes, err := Shapes(m)
	if err != nil {
		return nil, err
	}
	readers := map[string]int{}
	for _, o := range m.Graph.Outputs {
		readers[o.Name]++
	}
	for _, n := range m.Graph.Nodes {
		for _, in := range n.Inputs {
			readers[in]++
		}
	}
	inits := map[string]*export.Tensor{}
	for _, t := range m.Graph.Initializers {
		inits[t.Name] = t
	}
	nodes := m.Graph.Nodes
	// next reports whether node i+1 exists, has op, and is the only reader
	// of node i's first output.
	next := func(i int, op string) bool {
		return i+1 < len(nodes) && nodes[i+1].OpType == op && readers[nodes[i].Outputs[0]] == 1 &&
			len(nodes[i+1].Inputs) > 0 && nodes[i+1].Inputs[0] == nodes[i].Outputs[0]
	}
	var ks []Kernel
	for i := 0; i < len(nodes); {
		n := nodes[i]
		group := []*export.Node{n}
		switch {
		case n.OpType == "Conv" && next(i, "Relu"),
			n.OpType == "Flatten" && next(i, "Gemm"):
			group = nodes[i : i+2]
		case n.OpType == "Reshape" && next(i, "Transpose") && next(i+1, "Reshape"):
			group = nodes[i : i+3]
		}
		i += len(group)
		k, err := kernelOf(group, shapes, inits)
		if err != nil {
			return nil, fmt.Errorf("node %q (%s): %w", n.Name, n.OpType, err)
		}
		ks = append(ks, k)
	}
	return ks, nil
}

func kernelOf(group []*export.Node, shapes map[string][]int, inits map[string]*export.Tensor) (Kernel, error) {
	first, last := group[0], group[len(group)-1]
	k := Kernel{Name: first.Name, Nodes: group, input: first.Inputs[0], output: last.Outputs[0]}
	inside := map[string]bool{}
	for _, n := range group {
		for _, o := range n.Outputs {
			inside[o] = true
		}
	}
	for _, n := range group {
		for j, in := range n.Inputs {
			if (n == first && j == 0) || inside[in] || inits[in] != nil {
				continue
			}
			k.extra = append(k.extra, in)
		}
	}
	x := shapes[k.input]
	out := shapes[k.output]
	var ops []string
	for _, n := range group {
		ops = append(ops, n.OpType)
	}
	kind := strings.Join(ops, "+")
	switch {
	case kind == "Reshape+Transpose+Reshape":
		kind = fmt.Sprintf("Shuffle g=%d", shapes[group[0].Outputs[0]][0])
	case first.OpType == "Conv":
		ks, s, p, d := attrInts(first, "kernel_shape"), attrInts(first, "strides", 1, 1), attrInts(first, "pads", 0, 0, 0, 0), attrInts(first, "dilations", 1, 1)
		g := attrInt(first, "group", 1)
		gs := strconv.FormatInt(g, 10)
		if g > 1 && int(g) == x[0] && out[0] == x[0] {
			gs = "dw" // depthwise: the group count follows the channels
		}
		bias := ""
		if len(first.Inputs) > 2 {
			bias = " bias"
		}
		kind += fmt.Sprintf(" k=%d s=%d p=%d d=%d g=%s%s", ks[0], s[0], p[0], d[0], gs, bias)
		k.Key.Out = out[0]
		if gs == "dw" {
			k.Key.Out = 0
		}
		macs := int64(out[0]) * int64(out[1]) * int64(out[2]) * int64(x[0]/int(g)) * ks[0] * ks[1]
		k.MACs = macs
	case first.OpType == "MaxPool" || first.OpType == "AveragePool":
		ks, s, p := attrInts(first, "kernel_shape"), attrInts(first, "strides", 1, 1), attrInts(first, "pads", 0, 0, 0, 0)
		kind += fmt.Sprintf(" k=%d s=%d p=%d", ks[0], s[0], p[0])
		if attrInt(first, "ceil_mode", 0) == 1 {
			kind += " ceil"
		}
		if first.OpType == "AveragePool" && attrInt(first, "count_include_pad", 0) == 1 {
			kind += " incl"
		}
	case last.OpType == "Gemm":
		k.Key.Out = out[0]
		k.MACs = int64(out[0]) * int64(prod(x))
	case first.OpType == "Pad":
		k.Key.Out = out[0]
	case first.OpType == "Split" || first.OpType == "Concat":
		// Keyed by the number of pieces and the total channels (the
		// input's for a Split, the output's for a Concat), not by each
		// piece's channels: compression resizes the pieces independently,
		// and a copy of C channels in n pieces costs about the same
		// however they are cut, so one channel grid per piece count prices
		// every cut (the grid measures even ones, see splitEven).
		kind += " n=" + strconv.Itoa(pieces(first))
		if first.OpType == "Concat" {
			x = out
		}
	case first.OpType == "Mul" || first.OpType == "Add":
		// An Add of two maps or a Mul by a scalar: the second input's shape
		// says which.
		if t := inits[first.Inputs[1]]; t != nil && t.NumElements() == 1 {
			kind += " scalar"
		}
	}
	k.Key.Kind = kind
	// Keys are over C,H,W (a Concat's C is its output's, set above); a flat input (Gemm after GAP) is C x 1 x 1.
	switch len(x) {
	case 3:
		k.Key.C, k.Key.H, k.Key.W = x[0], x[1], x[2]
	case 1:
		k.Key.C, k.Key.H, k.Key.W = x[0], 1, 1
	default:
		return k, fmt.Errorf("input %s has shape %v, want C,H,W or C", k.input, x)
	}
	return k, nil
}

// pieces is how many pieces a Split cuts or a Concat joins.
func pieces(n *export.Node) int {
	if n.OpType == "Split" {
		return len(n.Outputs)
	}
	return len(n.Inputs)
}

func prod(s []int) int {
	p := 1
	for _, v := range s {
		p *= v
	}
	return p
}

// MicroModel returns a model that runs kernel k of m alone: its nodes and
// initializers, the kernel's input as the model's input (batch symbolic),
// further inputs from outside the kernel as random constants of their shape,
// and its output as the model's output.
func MicroModel(m *export.Model, k Kernel, shapes map[string][]int) *export.Model {
	inits := map[string]*export.Tensor{}
	for _, t := range m.Graph.Initializers {
		inits[t.Name] = t
	}
	g := &export.Graph{Name: "kernel " + k.Name}
	seen := map[string]bool{}
	for _, n := range k.Nodes {
		g.Nodes = append(g.Nodes, n)
		for _, in := range n.Inputs {
			if t, ok := inits[in]; ok && !seen[in] {
				seen[in] = true
				g.Initializers = append(g.Initializers, t)
			}
		}
	}
	for i, name := range k.extra {
		// A kernel that reads its input twice (a Concat of a cell whose
		// two nodes are the same value) keeps it an input: as an
		// initializer too, ONNX Runtime would take it for a constant.
		if seen[name] || name == k.input {
			continue
		}
		seen[name] = true
		dims := []int64{1}
		n := 1
		for _, d := range shapes[name] {
			dims = append(dims, int64(d))
			n *= d
		}
		data := make([]float32, n)
		for j := range data {
			// A fixed, non-trivial pattern: values matter to no kernel's cost.
			data[j] = float32((j*7+i*3)%13)/13 - 0.5
		}
		g.Initializers = append(g.Initializers, export.FloatTensor(name, dims, data))
	}
	vi := func(name string) *export.ValueInfo {
		v := &export.ValueInfo{Name: name, ElemType: export.TypeFloat, Shape: []export.Dim{{Param: "batch"}}}
		for _, d := range shapes[name] {
			v.Shape = append(v.Shape, export.Dim{Value: int64(d)})
		}
		return v
	}
	g.Inputs = []*export.ValueInfo{vi(k.input)}
	g.Outputs = []*export.ValueInfo{vi(k.output)}
	return &export.Model{IRVersion: m.IRVersion, OpsetImports: m.OpsetImports, ProducerName: "bayesnas hwprofile",
		ProducerVersion: m.ProducerVersion, Graph: g}
}
