// Package export writes a graph IR network with its trained weights as an
// ONNX model in evaluation mode, and reads ONNX files back (for tests and for
// validation). The protobuf encoding is hand-written with protowire for the
// small subset of ONNX we need; ONNX Runtime itself lives in package onnxrt,
// which needs cgo, so that this package and everything above it build
// without a C toolchain.
//
// Export is a walk over the IR nodes in graph order, one ONNX node (or a
// short fixed sequence) per IR node, with two exact rewrites: a BatchNorm
// whose input is a conv that feeds nothing else is folded into that conv, and
// the scalar weight of a wsum input is folded into the conv, linear or BN that
// produces the input when nothing else reads it. Dropout and drop-path are
// the identity in evaluation mode and disappear.
package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"bayesnas/internal/atomicfile"
	"bayesnas/models"
	"bayesnas/nn"
)

// Opset limits. 13 is the default (per-channel int8 quantization in ONNX
// Runtime needs at least 13, and Debian's onnx 1.12 checker knows up to 17);
// newer ones are accepted up to MaxOpset, every op we emit having the same
// meaning there.
const (
	DefaultOpset = 13
	MaxOpset     = 21
)

// Metadata keys written into every model.
const (
	MetaVersion       = "bayesnas.version"
	MetaGraph         = "bayesnas.graph"
	MetaInputLayout   = "input.layout"
	MetaInputShape    = "input.shape"
	MetaInputNorm     = "input.normalization"
	MetaInputMean     = "input.mean"
	MetaInputStd      = "input.std"
	MetaOutput        = "output"
	MetaOutputSoftmax = "output.softmax"
	MetaClasses       = "classes"
	MetaFolded        = "export.folded"
	MetaHashArch      = "hash.arch"
	MetaHashWeights   = "hash.weights"
	MetaHashConfig    = "hash.config"
	metaHashMethod    = "hash.weights.method"
)

// reservedMeta are the keys the exporter writes only sometimes; callers may
// not use them for something else either.
var reservedMeta = map[string]bool{MetaInputMean: true, MetaInputStd: true, MetaClasses: true, MetaHashConfig: true}

// Options say what goes into the file besides the network itself.
type Options struct {
	// Opset is the default-domain opset; 0 means DefaultOpset.
	Opset int
	// Softmax appends a Softmax over the classes; the output is then
	// probabilities instead of logits.
	Softmax bool
	// NoFold keeps every bn as a BatchNormalization and every wsum weight as
	// a Mul (for debugging an export, and for tests of the folds).
	NoFold bool
	// OutputName names the graph output; empty means "logits", or
	// "probabilities" with Softmax.
	OutputName string
	// ToolVersion is bayesnas's version, stamped as producer_version.
	ToolVersion string
	// Mean and Std are the per-channel input normalisation the network was
	// trained with: x = (pixel/255 - Mean[c]) / Std[c]. Both empty means
	// pixels scaled to [0,1] only.
	Mean, Std []float32
	// Classes are the class labels, in output order (may be empty).
	Classes []string
	// Config is the resolved run configuration; its SHA-256 goes into the
	// metadata (nothing else of it).
	Config []byte
	// Hashes replace the computed content hashes ("arch", "weights",
	// "config"), for callers that hash the files of a run directory.
	Hashes map[string]string
	// Metadata adds entries; keys must not collide with ours.
	Metadata map[string]string
}

// Write exports g with params to path. The file is written to a temporary
// name and renamed, so a failure never leaves a half-written model, and the
// same inputs always give the same bytes.
func Write(path string, g *models.Graph, params []*nn.Param, opts Options) error {
	b, err := Marshal(g, params, opts)
	if err != nil {
		return fmt.Errorf("exporting %s: %w", path, err)
	}
	return atomicfile.Write(path, b)
}

// Marshal returns the encoded model.
func Marshal(g *models.Graph, params []*nn.Param, opts Options) ([]byte, error) {
	m, err := Build(g, params, opts)
	if err != nil {
		return nil, err
	}
	return m.Marshal(), nil
}

// exportable lists the IR ops Build maps; anything else is refused by name
// before any work is done.
var exportable = map[string]bool{
	models.OpConv: true, models.OpBN: true, models.OpReLU: true, models.OpMaxPool: true,
	models.OpAvgPool: true, models.OpGAP: true, models.OpLinear: true, models.OpAdd: true,
	models.OpWSum: true, models.OpConcat: true, models.OpSlice: true, models.OpPadCh: true,
	models.OpShuffle: true, models.OpDropout: true, models.OpDropPath: true,
}

// BadNormalisation is a normalisation value no deployment can use: Std
// says which list (else the means), Index its position.
type BadNormalisation struct {
	Std   bool
	Index int
	Value float32
}

// Want says what the value should have been.
func (b *BadNormalisation) Want() string {
	if b.Std {
		return "want a positive finite number (the input is divided by it)"
	}
	return "want a finite number"
}

// CheckNormalisation returns the first mean that is not finite or std that
// is zero, negative or not finite, or nil. Callers name the value as their
// input spells it (metadata keys here, flags on the command line).
func CheckNormalisation(mean, std []float32) *BadNormalisation {
	for c, m := range mean {
		if math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
			return &BadNormalisation{Index: c, Value: m}
		}
	}
	for c, s := range std {
		if !(s > 0) || math.IsInf(float64(s), 0) {
			return &BadNormalisation{Std: true, Index: c, Value: s}
		}
	}
	return nil
}

// checkLabelling refuses a normalisation or class-label list a deployment
// could not use (CheckNormalisation), or class labels that do not match
// the model's outputs one to one (out is the output's shape per sample).
func checkLabelling(out []int, opts Options) error {
	if b := CheckNormalisation(opts.Mean, opts.Std); b != nil {
		key := MetaInputMean
		if b.Std {
			key = MetaInputStd
		}
		return fmt.Errorf("%s[%d] = %g: %s", key, b.Index, b.Value, b.Want())
	}
	if len(opts.Classes) == 0 {
		return nil
	}
	n := 1
	for _, d := range out {
		n *= d
	}
	if len(out) != 1 || len(opts.Classes) != n {
		return fmt.Errorf("%s: %d class labels for an output of %v per sample, want one label per output", MetaClasses, len(opts.Classes), out)
	}
	seen := map[string]int{}
	for i, c := range opts.Classes {
		if strings.TrimSpace(c) == "" {
			return fmt.Errorf("%s: label %d is empty", MetaClasses, i)
		}
		if j, ok := seen[c]; ok {
			return fmt.Errorf("%s: labels %d and %d are both %q", MetaClasses, j, i, c)
		}
		seen[c] = i
	}
	return nil
}

// Build converts g and its parameters into an ONNX model.
func Build(g *models.Graph, params []*nn.Param, opts Options) (*Model, error) {
	if g == nil {
		return nil, fmt.Errorf("export: no graph")
	}
	for _, n := range g.Nodes {
		if n != nil && !exportable[n.Op] {
			return nil, fmt.Errorf("export of graph %q: node %q: op %q has no ONNX mapping", g.Name, n.Name, n.Op)
		}
	}
	opset := opts.Opset
	if opset == 0 {
		opset = DefaultOpset
	}
	if opset < DefaultOpset || opset > MaxOpset {
		return nil, fmt.Errorf("export of graph %q: opset %d, want %d..%d", g.Name, opset, DefaultOpset, MaxOpset)
	}
	shapes, err := g.InferShapes()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if len(opts.Mean) != len(opts.Std) || (len(opts.Mean) != 0 && len(opts.Mean) != g.Input.Shape[0]) {
		return nil, fmt.Errorf("export of graph %q: normalisation has %d means and %d stds, want one of each per input channel (%d) or none",
			g.Name, len(opts.Mean), len(opts.Std), g.Input.Shape[0])
	}
	if err := checkLabelling(shapes[g.Output], opts); err != nil {
		return nil, fmt.Errorf("export of graph %q: %w", g.Name, err)
	}
	if opts.Softmax && len(shapes[g.Output]) != 1 {
		return nil, fmt.Errorf("export of graph %q: softmax needs a flat output, %q is %v per sample", g.Name, g.Output, shapes[g.Output])
	}
	byName, err := checkParams(g, params)
	if err != nil {
		return nil, fmt.Errorf("export of graph %q: %w", g.Name, err)
	}
	e := &exporter{g: g, shapes: shapes, params: byName, noFold: opts.NoFold,
		tensor: map[string]string{g.Input.Name: g.Input.Name}}
	e.planFolds()
	for _, n := range g.Nodes {
		if err := e.emit(n); err != nil {
			return nil, fmt.Errorf("export of graph %q: node %q (%s): %w", g.Name, n.Name, n.Op, err)
		}
	}

	outName := opts.OutputName
	if outName == "" {
		outName = "logits"
		if opts.Softmax {
			outName = "probabilities"
		}
	}
	out := e.tensor[g.Output]
	if opts.Softmax {
		e.node(&Node{Name: "softmax", OpType: "Softmax", Inputs: []string{out}, Outputs: []string{outName},
			Attrs: []*Attribute{attrInt("axis", 1)}})
	} else if out == g.Input.Name {
		e.node(&Node{Name: "output", OpType: "Identity", Inputs: []string{out}, Outputs: []string{outName}})
	} else {
		e.rename(out, outName)
	}
	if err := e.checkNames(outName); err != nil {
		return nil, fmt.Errorf("export of graph %q: %w", g.Name, err)
	}

	in := g.Input
	inVI := &ValueInfo{Name: in.Name, ElemType: TypeFloat, Shape: batchShape(in.Shape)}
	outVI := &ValueInfo{Name: outName, ElemType: TypeFloat, Shape: batchShape(shapes[g.Output])}

	meta, err := e.metadata(opts, outName)
	if err != nil {
		return nil, fmt.Errorf("export of graph %q: %w", g.Name, err)
	}
	return &Model{
		IRVersion:       irVersionFor(opset),
		OpsetImports:    []OpsetID{{Domain: "", Version: int64(opset)}},
		ProducerName:    "bayesnas",
		ProducerVersion: opts.ToolVersion,
		DocString:       fmt.Sprintf("%s exported by bayesnas in evaluation mode", g.Name),
		Graph: &Graph{
			Name:         g.Name,
			Nodes:        e.nodes,
			Initializers: e.inits,
			Inputs:       []*ValueInfo{inVI},
			Outputs:      []*ValueInfo{outVI},
		},
		Metadata: meta,
	}, nil
}

// irVersionFor is the oldest IR version that allows the opset, so that
// checkers which tie the two together accept the file.
func irVersionFor(opset int) int64 {
	switch {
	case opset <= 18:
		return 8
	case opset <= 20:
		return 9
	default:
		return 10
	}
}

func batchShape(perSample []int) []Dim {
	d := []Dim{{Param: "batch"}}
	for _, v := range perSample {
		d = append(d, Dim{Value: int64(v)})
	}
	return d
}

// checkParams matches params against the graph's parameter list: every one
// present once, with the right shape and only finite values, none extra.
func checkParams(g *models.Graph, params []*nn.Param) (map[string]*nn.Param, error) {
	specs, err := g.ParamSpecs()
	if err != nil {
		return nil, err
	}
	byName := make(map[string]*nn.Param, len(params))
	for i, p := range params {
		if p == nil {
			return nil, fmt.Errorf("parameter %d is nil", i)
		}
		if byName[p.Name] != nil {
			return nil, fmt.Errorf("parameter %q is given twice", p.Name)
		}
		byName[p.Name] = p
	}
	want := make(map[string]bool, len(specs))
	for _, s := range specs {
		want[s.Name] = true
		p := byName[s.Name]
		if p == nil {
			return nil, fmt.Errorf("parameter %q (node %q) is missing", s.Name, s.Node)
		}
		if !slices.Equal(p.Shape, s.Shape) {
			return nil, fmt.Errorf("parameter %q has shape %v, the graph wants %v", s.Name, p.Shape, s.Shape)
		}
		if len(p.Data) != numel(s.Shape) {
			return nil, fmt.Errorf("parameter %q: shape %v holds %d values, data has %d", s.Name, s.Shape, numel(s.Shape), len(p.Data))
		}
		// Host copies a backend's parameter out (a view on the CPU); the
		// export runs nothing on the backend, so every later read of
		// p.Data in this build sees these values.
		for i, v := range p.Host() {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("parameter %q: element %d is %v; refusing to export a non-finite weight", s.Name, i, v)
			}
		}
	}
	for _, p := range params {
		if !want[p.Name] {
			return nil, fmt.Errorf("parameter %q is not a parameter of the graph (weights of another architecture?)", p.Name)
		}
	}
	return byName, nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

type exporter struct {
	g      *models.Graph
	shapes map[string][]int
	params map[string]*nn.Param
	noFold bool

	uses     map[string]int          // readers of each IR value (the graph output counts as one)
	bnInto   map[string]*models.Node // conv name -> the bn folded into it
	bnFolded map[string]bool         // bn names folded into their conv
	scale    map[string]float64      // IR value -> wsum weight folded into its producer
	tensor   map[string]string       // IR value -> ONNX tensor holding it

	nodes        []*Node
	inits        []*Tensor
	nFoldedBN    int
	nFoldedScale int
}

func (e *exporter) planFolds() {
	e.uses = map[string]int{e.g.Output: 1}
	for _, n := range e.g.Nodes {
		for _, in := range n.Inputs {
			e.uses[in]++
		}
	}
	e.bnInto = map[string]*models.Node{}
	e.bnFolded = map[string]bool{}
	e.scale = map[string]float64{}
	if e.noFold {
		return
	}
	for _, n := range e.g.Nodes {
		if n.Op != models.OpBN {
			continue
		}
		// Folding is exact only when the conv's output is seen by nobody
		// but this bn: anything else reading it would get the folded values.
		if p := e.g.Node(n.Inputs[0]); p != nil && p.Op == models.OpConv && e.uses[p.Name] == 1 {
			e.bnInto[p.Name] = n
			e.bnFolded[n.Name] = true
		}
	}
	for _, n := range e.g.Nodes {
		if n.Op != models.OpWSum {
			continue
		}
		for i, in := range n.Inputs {
			p := e.g.Node(in)
			if p == nil || e.uses[in] != 1 {
				continue
			}
			switch p.Op {
			case models.OpConv, models.OpLinear, models.OpBN:
				e.scale[in] = float64(e.params[fmt.Sprintf("%s.w%d", n.Name, i)].Data[0])
			}
		}
	}
}

func (e *exporter) node(n *Node) { e.nodes = append(e.nodes, n) }

func (e *exporter) init(t *Tensor) string {
	e.inits = append(e.inits, t)
	return t.Name
}

func (e *exporter) floatInit(name string, shape []int, data []float64) string {
	f := make([]float32, len(data))
	for i, v := range data {
		f[i] = float32(v)
	}
	return e.init(FloatTensor(name, dims64(shape), f))
}

func (e *exporter) paramInit(name string) string {
	p := e.params[name]
	return e.init(FloatTensor(name, dims64(p.Shape), p.Data))
}

func dims64(shape []int) []int64 {
	d := make([]int64, len(shape))
	for i, v := range shape {
		d[i] = int64(v)
	}
	return d
}

func widen(s []float32) []float64 {
	d := make([]float64, len(s))
	for i, v := range s {
		d[i] = float64(v)
	}
	return d
}

func (e *exporter) emit(n *models.Node) error {
	a := n.Attrs
	x := ""
	if len(n.Inputs) > 0 {
		x = e.tensor[n.Inputs[0]]
	}
	e.tensor[n.Name] = n.Name
	inShape := e.shapes[n.Inputs[0]]
	switch n.Op {
	case models.OpConv:
		return e.conv(n, x)

	case models.OpBN:
		if e.bnFolded[n.Name] {
			return nil // written with its conv
		}
		gamma, beta := widen(e.params[n.Name+".weight"].Data), widen(e.params[n.Name+".bias"].Data)
		names := []string{n.Name + ".weight", n.Name + ".bias"}
		var doc string
		if s, ok := e.scale[n.Name]; ok {
			for i := range gamma {
				gamma[i] *= s
				beta[i] *= s
			}
			e.nFoldedScale++
			doc = fmt.Sprintf("scale and shift multiplied by the wsum weight %g", s)
		}
		c := inShape[0]
		e.node(&Node{Name: n.Name, OpType: "BatchNormalization", DocString: doc,
			Inputs: []string{x, e.floatInit(names[0], []int{c}, gamma), e.floatInit(names[1], []int{c}, beta),
				e.paramInit(n.Name + ".running_mean"), e.paramInit(n.Name + ".running_var")},
			Outputs: []string{n.Name},
			Attrs:   []*Attribute{attrFloat("epsilon", float32(a.Eps))}})

	case models.OpReLU:
		e.node(&Node{Name: n.Name, OpType: "Relu", Inputs: []string{x}, Outputs: []string{n.Name}})

	case models.OpMaxPool, models.OpAvgPool:
		k, s, p := int64(a.Kernel), int64(a.Stride), int64(a.Pad)
		attrs := []*Attribute{attrInts("kernel_shape", k, k), attrInts("pads", p, p, p, p), attrInts("strides", s, s)}
		op := "MaxPool"
		if n.Op == models.OpAvgPool {
			op = "AveragePool"
			attrs = append(attrs, attrInt("count_include_pad", boolInt(a.CountIncludePad)))
		}
		if a.CeilMode {
			attrs = append(attrs, attrInt("ceil_mode", 1))
		}
		e.node(&Node{Name: n.Name, OpType: op, Inputs: []string{x}, Outputs: []string{n.Name}, Attrs: attrs})

	case models.OpGAP:
		e.node(&Node{Name: n.Name, OpType: "GlobalAveragePool", Inputs: []string{x}, Outputs: []string{n.Name}})

	case models.OpLinear:
		if len(inShape) != 1 {
			flat := n.Name + "/flatten"
			e.node(&Node{Name: flat, OpType: "Flatten", Inputs: []string{x}, Outputs: []string{flat},
				Attrs: []*Attribute{attrInt("axis", 1)}})
			x = flat
		}
		w := widen(e.params[n.Name+".weight"].Data)
		var b []float64
		if a.Bias {
			b = widen(e.params[n.Name+".bias"].Data)
		}
		var doc string
		if s, ok := e.scale[n.Name]; ok {
			scaleAll(s, w, b)
			e.nFoldedScale++
			doc = fmt.Sprintf("weight and bias multiplied by the wsum weight %g", s)
		}
		ins := []string{x, e.floatInit(n.Name+".weight", e.params[n.Name+".weight"].Shape, w)}
		if a.Bias {
			ins = append(ins, e.floatInit(n.Name+".bias", []int{a.OutChannels}, b))
		}
		e.node(&Node{Name: n.Name, OpType: "Gemm", Inputs: ins, Outputs: []string{n.Name}, DocString: doc,
			Attrs: []*Attribute{attrFloat("alpha", 1), attrFloat("beta", 1), attrInt("transB", 1)}})

	case models.OpAdd:
		terms := make([]string, len(n.Inputs))
		for i, in := range n.Inputs {
			terms[i] = e.tensor[in]
		}
		e.sum(n.Name, terms)

	case models.OpWSum:
		terms := make([]string, len(n.Inputs))
		for i, in := range n.Inputs {
			t := e.tensor[in]
			w := n.Name + ".w" + strconv.Itoa(i)
			if _, folded := e.scale[in]; !folded {
				// Multiplying by an exact 1 changes nothing; skip the Mul.
				if e.params[w].Data[0] != 1 || e.noFold {
					mul := n.Name + "/mul" + strconv.Itoa(i)
					e.node(&Node{Name: mul, OpType: "Mul", Inputs: []string{t, e.paramInit(w)}, Outputs: []string{mul}})
					t = mul
				}
			}
			terms[i] = t
		}
		if len(terms) == 1 {
			e.tensor[n.Name] = terms[0]
			return nil
		}
		e.sum(n.Name, terms)

	case models.OpConcat:
		ins := make([]string, len(n.Inputs))
		for i, in := range n.Inputs {
			ins[i] = e.tensor[in]
		}
		e.node(&Node{Name: n.Name, OpType: "Concat", Inputs: ins, Outputs: []string{n.Name},
			Attrs: []*Attribute{attrInt("axis", 1)}})

	case models.OpSlice:
		c := inShape[0]
		if a.Start == 0 && a.End == c {
			e.tensor[n.Name] = x
			return nil
		}
		var sizes []int64
		var outs []string
		if a.Start > 0 {
			sizes, outs = append(sizes, int64(a.Start)), append(outs, n.Name+"/head")
		}
		sizes, outs = append(sizes, int64(a.End-a.Start)), append(outs, n.Name)
		if a.End < c {
			sizes, outs = append(sizes, int64(c-a.End)), append(outs, n.Name+"/tail")
		}
		split := e.init(Int64Tensor(n.Name+".split", []int64{int64(len(sizes))}, sizes))
		e.node(&Node{Name: n.Name, OpType: "Split", Inputs: []string{x, split}, Outputs: outs,
			Attrs: []*Attribute{attrInt("axis", 1)}})

	case models.OpPadCh:
		extra := int64(a.OutChannels - inShape[0])
		if extra == 0 {
			e.tensor[n.Name] = x
			return nil
		}
		// pads lists the begin values of every axis, then the end values.
		pads := e.init(Int64Tensor(n.Name+".pads", []int64{8}, []int64{0, 0, 0, 0, 0, extra, 0, 0}))
		e.node(&Node{Name: n.Name, OpType: "Pad", Inputs: []string{x, pads}, Outputs: []string{n.Name},
			Attrs: []*Attribute{attrString("mode", "constant")}})

	case models.OpShuffle:
		g := int64(a.Groups)
		if g == 1 {
			e.tensor[n.Name] = x
			return nil
		}
		c, h, w := int64(inShape[0]), int64(inShape[1]), int64(inShape[2])
		// 0 copies the batch dimension, which stays symbolic.
		grouped, transposed := n.Name+"/grouped", n.Name+"/transposed"
		s1 := e.init(Int64Tensor(n.Name+".shape_grouped", []int64{5}, []int64{0, g, c / g, h, w}))
		e.node(&Node{Name: grouped, OpType: "Reshape", Inputs: []string{x, s1}, Outputs: []string{grouped}})
		e.node(&Node{Name: transposed, OpType: "Transpose", Inputs: []string{grouped}, Outputs: []string{transposed},
			Attrs: []*Attribute{attrInts("perm", 0, 2, 1, 3, 4)}})
		s2 := e.init(Int64Tensor(n.Name+".shape_flat", []int64{4}, []int64{0, c, h, w}))
		e.node(&Node{Name: n.Name, OpType: "Reshape", Inputs: []string{transposed, s2}, Outputs: []string{n.Name}})

	case models.OpDropout, models.OpDropPath:
		e.tensor[n.Name] = x // the identity in evaluation mode

	default:
		return fmt.Errorf("op %q has no ONNX mapping", n.Op)
	}
	return nil
}

// conv writes a Conv, with the following bn and a wsum weight folded in
// where planFolds found that exact. Folding is done in float64 and rounded
// once.
func (e *exporter) conv(n *models.Node, x string) error {
	a := n.Attrs
	wp := e.params[n.Name+".weight"]
	w := widen(wp.Data)
	var b []float64
	biasName := n.Name + ".bias"
	if a.Bias {
		b = widen(e.params[biasName].Data)
	}
	out := n.Name
	var doc []string
	if bn := e.bnInto[n.Name]; bn != nil {
		gamma, beta := e.params[bn.Name+".weight"].Data, e.params[bn.Name+".bias"].Data
		mean, variance := e.params[bn.Name+".running_mean"].Data, e.params[bn.Name+".running_var"].Data
		eps := float64(float32(bn.Attrs.Eps)) // the engine and the ONNX attribute both hold it as float32
		if b == nil {
			b = make([]float64, a.OutChannels)
		}
		per := len(w) / a.OutChannels
		for o := 0; o < a.OutChannels; o++ {
			s := float64(gamma[o]) / math.Sqrt(float64(variance[o])+eps)
			for i := o * per; i < (o+1)*per; i++ {
				w[i] *= s
			}
			b[o] = (b[o]-float64(mean[o]))*s + float64(beta[o])
		}
		out = bn.Name
		e.tensor[bn.Name] = out
		biasName = bn.Name + ".bias"
		e.nFoldedBN++
		doc = append(doc, fmt.Sprintf("bn %q folded in: weight*gamma/sqrt(var+eps), bias (bias-mean)*gamma/sqrt(var+eps)+beta", bn.Name))
	}
	if s, ok := e.scale[out]; ok {
		scaleAll(s, w, b)
		e.nFoldedScale++
		doc = append(doc, fmt.Sprintf("weight and bias multiplied by the wsum weight %g", s))
	}
	k, s, p, d := int64(a.Kernel), int64(a.Stride), int64(a.Pad), int64(a.Dilation)
	ins := []string{x, e.floatInit(n.Name+".weight", wp.Shape, w)}
	if b != nil {
		ins = append(ins, e.floatInit(biasName, []int{a.OutChannels}, b))
	}
	e.node(&Node{Name: n.Name, OpType: "Conv", Inputs: ins, Outputs: []string{out}, DocString: strings.Join(doc, "; "),
		Attrs: []*Attribute{attrInts("dilations", d, d), attrInt("group", int64(a.Groups)),
			attrInts("kernel_shape", k, k), attrInts("pads", p, p, p, p), attrInts("strides", s, s)}})
	return nil
}

func scaleAll(s float64, w, b []float64) {
	for i := range w {
		w[i] *= s
	}
	for i := range b {
		b[i] *= s
	}
}

// sum adds terms left to right with binary Adds (the engine's order), the
// last one writing out.
func (e *exporter) sum(out string, terms []string) {
	acc := terms[0]
	for i, t := range terms[1:] {
		name := out
		if i < len(terms)-2 {
			name = out + "/add" + strconv.Itoa(i+1)
		}
		e.node(&Node{Name: name, OpType: "Add", Inputs: []string{acc, t}, Outputs: []string{name}})
		acc = name
	}
}

// rename gives tensor from the name to, everywhere.
func (e *exporter) rename(from, to string) {
	for _, n := range e.nodes {
		for i, s := range n.Inputs {
			if s == from {
				n.Inputs[i] = to
			}
		}
		for i, s := range n.Outputs {
			if s == from {
				n.Outputs[i] = to
			}
		}
	}
}

// checkNames makes sure no two things share a name in the ONNX graph: a node
// named like another node's parameter would otherwise silently shadow it.
func (e *exporter) checkNames(outName string) error {
	owner := map[string]string{e.g.Input.Name: "the graph input"}
	claim := func(name, what string) error {
		if prev, ok := owner[name]; ok {
			return fmt.Errorf("ONNX name %q is used by both %s and %s; rename one of the IR nodes", name, prev, what)
		}
		owner[name] = what
		return nil
	}
	for _, t := range e.inits {
		if err := claim(t.Name, "initializer "+strconv.Quote(t.Name)); err != nil {
			return err
		}
	}
	for _, n := range e.nodes {
		for _, o := range n.Outputs {
			if err := claim(o, fmt.Sprintf("the output of node %q", n.Name)); err != nil {
				return err
			}
		}
	}
	if _, ok := owner[outName]; !ok {
		return fmt.Errorf("internal: graph output %q has no producer", outName)
	}
	return nil
}

func (e *exporter) metadata(opts Options, outName string) ([]StringPair, error) {
	g := e.g
	meta := map[string]string{
		MetaVersion:       opts.ToolVersion,
		MetaGraph:         g.Name,
		MetaInputLayout:   "NCHW",
		MetaInputShape:    fmt.Sprintf("batch,%d,%d,%d", g.Input.Shape[0], g.Input.Shape[1], g.Input.Shape[2]),
		MetaOutput:        outName,
		MetaOutputSoftmax: strconv.FormatBool(opts.Softmax),
		MetaFolded:        fmt.Sprintf("%d batch norms into convs, %d wsum weights into their producers", e.nFoldedBN, e.nFoldedScale),
		metaHashMethod:    "sha256 over the parameters sorted by name, each as name, NUL, dims (decimal, comma-separated), NUL, float32 little-endian data",
	}
	if meta[MetaVersion] == "" {
		meta[MetaVersion] = "unknown"
	}
	if len(opts.Mean) > 0 {
		meta[MetaInputNorm] = "x = (pixel/255 - mean[c]) / std[c]"
		meta[MetaInputMean] = jsonFloats(opts.Mean)
		meta[MetaInputStd] = jsonFloats(opts.Std)
	} else {
		meta[MetaInputNorm] = "x = pixel/255"
	}
	if len(opts.Classes) > 0 {
		b, err := json.Marshal(opts.Classes)
		if err != nil {
			return nil, err
		}
		meta[MetaClasses] = string(b)
	}
	arch, err := g.MarshalJSON()
	if err != nil {
		return nil, err
	}
	meta[MetaHashArch] = sha(arch)
	meta[MetaHashWeights] = WeightsHash(e.params)
	if opts.Config != nil {
		meta[MetaHashConfig] = sha(opts.Config)
	}
	for k, v := range opts.Hashes {
		switch k {
		case "arch", "weights", "config":
			meta["hash."+k] = v
		default:
			return nil, fmt.Errorf("option hashes: unknown key %q (want arch, weights or config)", k)
		}
	}
	for k, v := range opts.Metadata {
		if _, ok := meta[k]; ok || reservedMeta[k] {
			return nil, fmt.Errorf("option metadata: key %q is written by the exporter itself", k)
		}
		meta[k] = v
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	slices.Sort(keys) // map order must not reach the file
	out := make([]StringPair, len(keys))
	for i, k := range keys {
		out[i] = StringPair{Key: k, Value: meta[k]}
	}
	return out, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// WeightsHash is the content hash written as hash.weights: SHA-256 over the
// parameters sorted by name (see the hash.weights.method metadata entry).
func WeightsHash(params map[string]*nn.Param) string {
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	var buf bytes.Buffer
	for _, n := range names {
		p := params[n]
		buf.Reset()
		buf.WriteString(n)
		buf.WriteByte(0)
		for i, d := range p.Shape {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(strconv.Itoa(d))
		}
		buf.WriteByte(0)
		h.Write(buf.Bytes())
		var w [4]byte
		for _, v := range p.Host() {
			binary.LittleEndian.PutUint32(w[:], math.Float32bits(v))
			h.Write(w[:])
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func jsonFloats(v []float32) string {
	parts := make([]string, len(v))
	for i, f := range v {
		parts[i] = strconv.FormatFloat(float64(f), 'g', -1, 32)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func attrInt(name string, v int64) *Attribute { return &Attribute{Name: name, Type: AttrInt, I: v} }
func attrFloat(name string, v float32) *Attribute {
	return &Attribute{Name: name, Type: AttrFloat, F: v}
}
func attrInts(name string, v ...int64) *Attribute {
	return &Attribute{Name: name, Type: AttrInts, Ints: v}
}
func attrString(name, v string) *Attribute {
	return &Attribute{Name: name, Type: AttrString, S: []byte(v)}
}
