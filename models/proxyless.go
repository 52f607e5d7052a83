package models

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
)

// ImportProxylessNAS converts ProxylessNAS's net.config JSON for its
// PyramidTreeNet (the released CIFAR-10 network, in the repository as
// internal/fixtures/testdata/proxylessnas_cifar10_net.config) into a graph.
// source names the file in errors and in the graph's builder record.
//
// The file is {name, blocks, classifier}. Blocks are TransitionBlock
// {layers} (layers in sequence) and ResidualTreeBlock {in_bottle, cell,
// out_bottle, final_bn, shortcut, cell_drop_rate}:
//
//	out = [droppath](final BN(out_bottle(cell(in_bottle(x))))) + zero-pad(shortcut(x))
//
// Layers follow their ops_order (e.g. "bn_act_weight": BN over the input
// channels, activation, then the weight op; dropout_rate > 0 puts a dropout
// before the weight op):
//   - ConvLayer: conv with "same" padding times the dilation, then a channel
//     shuffle when has_shuffle and groups > 1;
//   - DepthConvLayer: depthwise conv (kernel, stride, dilation), pointwise 1x1
//     conv (groups), then the shuffle likewise;
//   - PoolingLayer: avg (padding excluded from the count) or max, "same"
//     padding at stride 1 and none otherwise;
//   - IdentityLayer: BN/activation only; ZeroLayer: a branch of an add
//     merge that contributes nothing (it is left out);
//   - LinearLayer: the classifier, on the flattened features;
//   - TreeNode {edges, child_nodes, split_type, merge_type, has_branch_bn}:
//     the input is copied to every edge ("copy"), cut into equal channel
//     ranges ("split") or passed to the single edge (null); each edge is
//     followed by its child node unless that is null; has_branch_bn adds a
//     BN to each branch's output; the branches are summed ("add"; the file
//     has no use_avg, so no division by the branch count), concatenated
//     ("concat") or the single one is the output (null).
//
// Only relu activations exist in the IR. Fields the format does not have,
// unknown layer names, channel counts that disagree with the data flow and
// settings the IR cannot express are errors naming the block, layer or node
// by its index and name ("block 3 (ResidualTreeBlock): cell (TreeNode):
// edges[0] (ConvLayer): field kernel_size: ..."), and a channel count that
// disagrees names the layer and field that set it as well.
func ImportProxylessNAS(data []byte, source string) (*Graph, error) {
	var f struct {
		Name       string            `json:"name"`
		Blocks     []json.RawMessage `json:"blocks"`
		Classifier json.RawMessage   `json:"classifier"`
	}
	if err := pxDecode(data, &f); err != nil {
		return nil, fmt.Errorf("importing %s: %w", source, err)
	}
	if f.Name != "PyramidTreeNet" {
		return nil, fmt.Errorf("importing %s: name %q, want PyramidTreeNet", source, f.Name)
	}
	if len(f.Blocks) == 0 {
		return nil, fmt.Errorf("importing %s: no blocks", source)
	}
	im := &pxImporter{features: map[string]pxFeatures{}}
	block0 := "block 0" + pxNameOf(f.Blocks[0])
	x, err := im.firstInput(block0, f.Blocks[0])
	if err != nil {
		return nil, fmt.Errorf("importing %s: %s: %w", source, block0, err)
	}
	for i, raw := range f.Blocks {
		where := fmt.Sprintf("block %d%s", i, pxNameOf(raw))
		if x, err = im.block(fmt.Sprintf("block%d", i), where, raw, x); err != nil {
			return nil, fmt.Errorf("importing %s: %s: %w", source, where, err)
		}
	}
	if len(f.Classifier) == 0 || string(f.Classifier) == "null" {
		return nil, fmt.Errorf("importing %s: no classifier", source)
	}
	where := "classifier" + pxNameOf(f.Classifier)
	if x, err = im.layer("classifier", where, f.Classifier, x, false); err != nil {
		return nil, fmt.Errorf("importing %s: %s: %w", source, where, err)
	}
	sum := sha256.Sum256(data)
	params, err := json.Marshal(struct {
		Source string `json:"source"`
		SHA256 string `json:"sha256"`
	}{source, hex.EncodeToString(sum[:])})
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", source, err)
	}
	im.b.g.Name = "proxylessnas_pyramidtreenet"
	g, err := im.b.Finish(x.name, &BuilderInfo{Name: "import-proxylessnas", Params: params})
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", source, err)
	}
	shapes, err := g.InferShapes()
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", source, err)
	}
	for fc, want := range im.features {
		shape := shapes[g.Node(fc).Inputs[0]]
		in := 1
		for _, d := range shape {
			in *= d
		}
		if in != want.n {
			return nil, fmt.Errorf("importing %s: %s: field in_features = %d, but %d features reach it (%v per image at a %v input, the channels set by %s)",
				source, want.where, want.n, in, shape, g.Input.Shape, want.from)
		}
	}
	return g, nil
}

// pxValue is a node and its channel count, tracked so that each layer's
// declared in_channels can be checked where it is read; from names the
// layer and field that set the count, so that a mismatch names the layer
// whose out_channels may be the faulty one, not only the layer after it.
type pxValue struct {
	name string
	c    int
	from string
}

// pxFeatures is a linear layer's declared in_features, checked against the
// inferred shape once the graph is complete.
type pxFeatures struct {
	n           int
	where, from string
}

type pxImporter struct {
	b        *GraphBuilder
	features map[string]pxFeatures // by linear node
}

// mismatch is the error of a layer or node declaring in_channels that its
// input does not have, naming where the input's count comes from.
func (x pxValue) mismatch(field string, declared int) error {
	return fmt.Errorf("field %s = %d, but its input has %d channels (set by %s)", field, declared, x.c, x.from)
}

// pxLayer is every field a layer of the format may have; which apply
// depends on Name (checked in layer).
type pxLayer struct {
	Name        string  `json:"name"`
	InChannels  *int    `json:"in_channels"`
	OutChannels *int    `json:"out_channels"`
	KernelSize  int     `json:"kernel_size"`
	Stride      int     `json:"stride"`
	Dilation    int     `json:"dilation"`
	Groups      int     `json:"groups"`
	Bias        bool    `json:"bias"`
	HasShuffle  bool    `json:"has_shuffle"`
	UseBN       bool    `json:"use_bn"`
	ActFunc     *string `json:"act_func"`
	DropoutRate float64 `json:"dropout_rate"`
	OpsOrder    string  `json:"ops_order"`
	PoolType    string  `json:"pool_type"`
	InFeatures  *int    `json:"in_features"`
	OutFeatures int     `json:"out_features"`
}

// pxLayerFields lists the fields each layer type has in the format; any
// other field is an error, so a misread file cannot import silently.
var pxLayerFields = map[string][]string{
	"ConvLayer":      {"kernel_size", "stride", "dilation", "groups", "bias", "has_shuffle", "in_channels", "out_channels"},
	"DepthConvLayer": {"kernel_size", "stride", "dilation", "groups", "bias", "has_shuffle", "in_channels", "out_channels"},
	"PoolingLayer":   {"pool_type", "kernel_size", "stride", "in_channels", "out_channels"},
	"IdentityLayer":  {"in_channels", "out_channels"},
	"ZeroLayer":      {"stride"},
	"LinearLayer":    {"in_features", "out_features", "bias"},
}

// pxCommonFields are the fields of every layer type (ProxylessNAS's base layer).
var pxCommonFields = []string{"name", "use_bn", "act_func", "dropout_rate", "ops_order"}

// pxDecode is decodeStrict with errors in the file's terms: a value of the
// wrong JSON type names the field and the type wanted, never the Go type
// it was decoded into ("Go struct field pxLayer.kernel_size of type int").
func pxDecode(raw []byte, v any) error {
	return pxJSONError(decodeStrict(raw, v))
}

// pxJSONError rewrites a decoding error of encoding/json for the user.
func pxJSONError(err error) error {
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		got := te.Value
		switch {
		case got == "array", got == "object", strings.HasPrefix(got, "number"):
			got = "an " + got
			if strings.HasPrefix(te.Value, "number") {
				got = "a " + te.Value
			}
		default:
			got = "a " + got
		}
		if te.Field == "" {
			return fmt.Errorf("%s, want %s", got, pxJSONKind(te.Type))
		}
		return fmt.Errorf("field %s: %s, want %s", te.Field, got, pxJSONKind(te.Type))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// pxJSONKind says what JSON value decodes into t.
func pxJSONKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[json.RawMessage]() {
		return "a JSON value"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another JSON value"
}

// pxNameOf is " (NAME)" for a block, layer or node whose "name" is a
// string, for error messages; "" otherwise.
func pxNameOf(raw json.RawMessage) string {
	var head struct {
		Name any `json:"name"`
	}
	if json.Unmarshal(raw, &head) != nil {
		return ""
	}
	if s, ok := head.Name.(string); ok && s != "" {
		return " (" + s + ")"
	}
	return ""
}

// firstInput reads the input shape from the first layer of the first
// block (where names it): the file records channels, not the image size,
// which is CIFAR-10's 32x32 for this network family.
func (im *pxImporter) firstInput(where string, raw json.RawMessage) (pxValue, error) {
	var blk struct {
		Layers []json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(raw, &blk); err != nil {
		return pxValue{}, pxJSONError(err)
	}
	if len(blk.Layers) == 0 {
		return pxValue{}, fmt.Errorf("the first block must be a TransitionBlock with layers")
	}
	var l struct {
		InChannels *int `json:"in_channels"`
	}
	if err := json.Unmarshal(blk.Layers[0], &l); err != nil {
		return pxValue{}, fmt.Errorf("layers[0]%s: %w", pxNameOf(blk.Layers[0]), pxJSONError(err))
	}
	if l.InChannels == nil || *l.InChannels < 1 {
		return pxValue{}, fmt.Errorf("layers[0]%s: field in_channels missing or < 1: the first layer gives the input's channels", pxNameOf(blk.Layers[0]))
	}
	c := *l.InChannels
	im.b = NewGraphBuilder("proxylessnas", "input", [3]int{c, 32, 32})
	return pxValue{"input", c, fmt.Sprintf("the input, %s layers[0]%s field in_channels", where, pxNameOf(blk.Layers[0]))}, nil
}

// fields lists the keys of a JSON object, so unknown ones can be named.
func fields(raw json.RawMessage) ([]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, pxJSONError(err)
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks, nil
}

func checkFields(raw json.RawMessage, allowed ...[]string) error {
	ks, err := fields(raw)
	if err != nil {
		return err
	}
	for _, k := range ks {
		known := false
		for _, set := range allowed {
			for _, a := range set {
				known = known || a == k
			}
		}
		if !known {
			return fmt.Errorf("unknown field %q", k)
		}
	}
	return nil
}

// block appends one block; prefix names its nodes, where names it in
// errors and in the channel counts it sets ("block 3 (ResidualTreeBlock)").
func (im *pxImporter) block(prefix, where string, raw json.RawMessage, x pxValue) (pxValue, error) {
	var head struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return x, pxJSONError(err)
	}
	switch head.Name {
	case "TransitionBlock":
		var blk struct {
			Name   string            `json:"name"`
			Layers []json.RawMessage `json:"layers"`
		}
		if err := pxDecode(raw, &blk); err != nil {
			return x, err
		}
		for i, l := range blk.Layers {
			sub := fmt.Sprintf("layers[%d]%s", i, pxNameOf(l))
			var err error
			if x, err = im.layer(fmt.Sprintf("%s.l%d", prefix, i), where+" "+sub, l, x, false); err != nil {
				return x, fmt.Errorf("%s: %w", sub, err)
			}
		}
		return x, nil
	case "ResidualTreeBlock":
		return im.residual(prefix, where, raw, x)
	}
	return x, fmt.Errorf("field name: unknown block %q (want TransitionBlock or ResidualTreeBlock)", head.Name)
}

func (im *pxImporter) residual(prefix, where string, raw json.RawMessage, x pxValue) (pxValue, error) {
	var blk struct {
		Name         string          `json:"name"`
		CellDropRate float64         `json:"cell_drop_rate"`
		FinalBN      bool            `json:"final_bn"`
		Shortcut     json.RawMessage `json:"shortcut"`
		InBottle     json.RawMessage `json:"in_bottle"`
		OutBottle    json.RawMessage `json:"out_bottle"`
		Cell         json.RawMessage `json:"cell"`
	}
	if err := pxDecode(raw, &blk); err != nil {
		return x, err
	}
	if !(blk.CellDropRate >= 0 && blk.CellDropRate < 1) {
		return x, fmt.Errorf("field cell_drop_rate = %g, want in [0, 1)", blk.CellDropRate)
	}
	isNull := func(r json.RawMessage) bool { return len(r) == 0 || string(r) == "null" }
	y := x
	var err error
	if !isNull(blk.InBottle) {
		sub := "in_bottle" + pxNameOf(blk.InBottle)
		if y, err = im.layer(prefix+".in_bottle", where+" "+sub, blk.InBottle, y, false); err != nil {
			return x, fmt.Errorf("%s: %w", sub, err)
		}
	}
	if isNull(blk.Cell) {
		return x, fmt.Errorf("field cell: missing")
	}
	sub := "cell" + pxNameOf(blk.Cell)
	if y, err = im.treeNode(prefix+".cell", where+" "+sub, blk.Cell, y); err != nil {
		return x, fmt.Errorf("%s: %w", sub, err)
	}
	if !isNull(blk.OutBottle) {
		sub := "out_bottle" + pxNameOf(blk.OutBottle)
		if y, err = im.layer(prefix+".out_bottle", where+" "+sub, blk.OutBottle, y, false); err != nil {
			return x, fmt.Errorf("%s: %w", sub, err)
		}
	}
	if blk.FinalBN {
		y.name = im.b.BN(prefix+".final_bn", y.name)
	}
	if blk.CellDropRate > 0 {
		y.name = im.b.Node(prefix+".droppath", OpDropPath, Attrs{P: blk.CellDropRate}, y.name)
	}
	if isNull(blk.Shortcut) {
		return x, fmt.Errorf("field shortcut: missing")
	}
	sub = "shortcut" + pxNameOf(blk.Shortcut)
	s, err := im.layer(prefix+".shortcut", where+" "+sub, blk.Shortcut, x, false)
	if err != nil {
		return x, fmt.Errorf("%s: %w", sub, err)
	}
	switch {
	case s.c < y.c:
		s.name = im.b.Node(prefix+".shortcut.pad", OpPadCh, Attrs{OutChannels: y.c}, s.name)
	case s.c > y.c:
		return x, fmt.Errorf("%s: %d channels (set by %s), more than the residual branch's %d (set by %s)", sub, s.c, s.from, y.c, y.from)
	}
	return pxValue{im.b.Node(prefix+".add", OpAdd, Attrs{}, y.name, s.name), y.c, y.from}, nil
}

// layer appends one layer and returns its output; prefix names its nodes,
// where names it in the channel counts it sets. With inAdd set a ZeroLayer
// is allowed and returns an empty name: the branch is left out. Errors do
// not repeat the layer's name: the caller's context names it.
func (im *pxImporter) layer(prefix, where string, raw json.RawMessage, x pxValue, inAdd bool) (pxValue, error) {
	var l pxLayer
	if err := pxDecode(raw, &l); err != nil {
		return x, err
	}
	own, ok := pxLayerFields[l.Name]
	if !ok {
		return x, fmt.Errorf("field name: unknown layer %q (want one of ConvLayer, DepthConvLayer, PoolingLayer, IdentityLayer, ZeroLayer, LinearLayer)", l.Name)
	}
	if err := checkFields(raw, own, pxCommonFields); err != nil {
		return x, err
	}
	if l.Name == "ZeroLayer" {
		if !inAdd {
			return x, fmt.Errorf("only a branch of an add merge can be a ZeroLayer")
		}
		return pxValue{}, nil
	}
	in, inField := l.InChannels, "in_channels"
	if l.Name == "LinearLayer" {
		in, inField = l.InFeatures, "in_features"
	}
	if in == nil {
		return x, fmt.Errorf("field %s: missing", inField)
	}
	if *in != x.c && l.Name != "LinearLayer" {
		return x, x.mismatch(inField, *in)
	}
	out := x
	if l.OutChannels != nil {
		out.c, out.from = *l.OutChannels, where+" field out_channels"
	}
	act := ""
	if l.ActFunc != nil {
		act = *l.ActFunc
	}
	if act != "" && act != "relu" {
		return x, fmt.Errorf("field act_func: %q is not supported (only relu or null)", act)
	}
	if !(l.DropoutRate >= 0 && l.DropoutRate < 1) {
		return x, fmt.Errorf("field dropout_rate = %g, want in [0, 1)", l.DropoutRate)
	}
	steps := strings.Split(l.OpsOrder, "_")
	if len(steps) != 3 || !containsAll(steps, "bn", "act", "weight") {
		return x, fmt.Errorf("field ops_order %q: want a permutation of bn, act, weight joined by _", l.OpsOrder)
	}
	b := im.b
	cur := x
	for _, step := range steps {
		switch step {
		case "bn":
			if l.UseBN {
				cur.name = b.BN(prefix+".bn", cur.name)
			}
		case "act":
			if act == "relu" {
				cur.name = b.ReLU(prefix+".relu", cur.name)
			}
		case "weight":
			if l.DropoutRate > 0 {
				cur.name = b.Node(prefix+".dropout", OpDropout, Attrs{P: l.DropoutRate}, cur.name)
			}
			var err error
			if cur, err = im.weight(prefix, where, l, cur, out); err != nil {
				return x, err
			}
		}
	}
	return cur, nil
}

func containsAll(s []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, v := range s {
			found = found || v == w
		}
		if !found {
			return false
		}
	}
	return true
}

// weight appends a layer's weight op; out is its output's channel count
// (out_channels, or its input's when it has none) and where that was set.
func (im *pxImporter) weight(prefix, where string, l pxLayer, x, out pxValue) (pxValue, error) {
	b := im.b
	conv := func(name string, in string, outC, k, stride, dil, groups int, bias bool) string {
		return b.Node(name, OpConv, Attrs{OutChannels: outC, Kernel: k, Stride: stride, Pad: dil * (k / 2), Dilation: dil, Groups: groups, Bias: bias}, in)
	}
	positive := func(field string, v int) error {
		if v < 1 {
			return fmt.Errorf("field %s = %d, want >= 1", field, v)
		}
		return nil
	}
	switch l.Name {
	case "ConvLayer", "DepthConvLayer":
		if err := firstErr(positive("kernel_size", l.KernelSize), positive("stride", l.Stride),
			positive("dilation", l.Dilation), positive("groups", l.Groups)); err != nil {
			return x, err
		}
		if l.KernelSize%2 == 0 {
			return x, fmt.Errorf("field kernel_size = %d: only odd kernels have a symmetric same padding", l.KernelSize)
		}
		var y string
		if l.Name == "ConvLayer" {
			y = conv(prefix+".conv", x.name, out.c, l.KernelSize, l.Stride, l.Dilation, l.Groups, l.Bias)
		} else {
			y = conv(prefix+".dw", x.name, x.c, l.KernelSize, l.Stride, l.Dilation, x.c, false)
			y = conv(prefix+".pw", y, out.c, 1, 1, 1, l.Groups, l.Bias)
		}
		if l.HasShuffle && l.Groups > 1 {
			y = b.Node(prefix+".shuffle", OpShuffle, Attrs{Groups: l.Groups}, y)
		}
		return pxValue{y, out.c, out.from}, nil
	case "PoolingLayer":
		if err := firstErr(positive("kernel_size", l.KernelSize), positive("stride", l.Stride)); err != nil {
			return x, err
		}
		if out.c != x.c {
			return x, fmt.Errorf("field out_channels = %d: a pool keeps its %d channels", out.c, x.c)
		}
		pad := 0
		if l.Stride == 1 {
			if l.KernelSize%2 == 0 {
				return x, fmt.Errorf("field kernel_size = %d: only odd kernels have a symmetric same padding", l.KernelSize)
			}
			pad = l.KernelSize / 2
		}
		op := OpAvgPool
		switch l.PoolType {
		case "avg":
		case "max":
			op = OpMaxPool
		default:
			return x, fmt.Errorf("field pool_type %q: want avg or max", l.PoolType)
		}
		return pxValue{b.Node(prefix+".pool", op, Attrs{Kernel: l.KernelSize, Stride: l.Stride, Pad: pad}, x.name), x.c, x.from}, nil
	case "IdentityLayer":
		if out.c != x.c {
			return x, fmt.Errorf("field out_channels = %d: an identity keeps its %d channels", out.c, x.c)
		}
		return x, nil
	case "LinearLayer":
		if err := positive("out_features", l.OutFeatures); err != nil {
			return x, err
		}
		fc := b.Node(prefix+".fc", OpLinear, Attrs{OutChannels: l.OutFeatures, Bias: l.Bias}, x.name)
		im.features[fc] = pxFeatures{n: *l.InFeatures, where: where, from: x.from}
		return pxValue{fc, l.OutFeatures, where + " field out_features"}, nil
	}
	return x, fmt.Errorf("no weight op") // unreachable: layer checked the name
}

// treeNode appends a TreeNode and its children; prefix and where as for
// layer.
func (im *pxImporter) treeNode(prefix, where string, raw json.RawMessage, x pxValue) (pxValue, error) {
	var n struct {
		Name         string            `json:"name"`
		InChannels   int               `json:"in_channels"`
		OutChannels  int               `json:"out_channels"`
		SplitType    *string           `json:"split_type"`
		MergeType    *string           `json:"merge_type"`
		HasBranchBN  bool              `json:"has_branch_bn"`
		PathDropRate float64           `json:"path_drop_rate"`
		Edges        []json.RawMessage `json:"edges"`
		ChildNodes   []json.RawMessage `json:"child_nodes"`
	}
	if err := pxDecode(raw, &n); err != nil {
		return x, err
	}
	if n.Name != "TreeNode" {
		return x, fmt.Errorf("field name: %q, want TreeNode", n.Name)
	}
	if n.InChannels != x.c {
		return x, x.mismatch("in_channels", n.InChannels)
	}
	if n.PathDropRate != 0 {
		return x, fmt.Errorf("field path_drop_rate = %g: path drop is not supported (only 0)", n.PathDropRate)
	}
	k := len(n.Edges)
	if k == 0 || len(n.ChildNodes) != k {
		return x, fmt.Errorf("%d edges and %d child_nodes, want as many, at least one", k, len(n.ChildNodes))
	}
	split, merge := "", ""
	if n.SplitType != nil {
		split = *n.SplitType
	}
	if n.MergeType != nil {
		merge = *n.MergeType
	}
	ins := make([]pxValue, k)
	switch split {
	case "copy":
		for i := range ins {
			ins[i] = x
		}
	case "split":
		// ProxylessNAS's get_split_list: equal parts, the remainder to the first ones.
		start := 0
		for i := range ins {
			size := x.c / k
			if i < x.c%k {
				size++
			}
			if size < 1 {
				return x, fmt.Errorf("field split_type split: %d channels into %d edges leaves one empty", x.c, k)
			}
			ins[i] = pxValue{im.b.Node(fmt.Sprintf("%s.s%d", prefix, i), OpSlice, Attrs{Start: start, End: start + size}, x.name), size,
				fmt.Sprintf("%s field split_type split, part %d of %d of %d channels (set by %s)", where, i, k, x.c, x.from)}
			start += size
		}
	case "":
		if k != 1 {
			return x, fmt.Errorf("field split_type null needs one edge, has %d", k)
		}
		ins[0] = x
	default:
		return x, fmt.Errorf("field split_type %q: want copy, split or null", split)
	}
	if merge != "add" && merge != "concat" && merge != "" {
		return x, fmt.Errorf("field merge_type %q: want add, concat or null", merge)
	}
	if merge == "" && k != 1 {
		return x, fmt.Errorf("field merge_type null needs one edge, has %d", k)
	}
	var outs []pxValue
	for i := range k {
		sub := fmt.Sprintf("edges[%d]%s", i, pxNameOf(n.Edges[i]))
		if string(n.Edges[i]) == "null" {
			return x, fmt.Errorf("%s: null", sub)
		}
		y, err := im.layer(fmt.Sprintf("%s.e%d", prefix, i), where+" "+sub, n.Edges[i], ins[i], merge == "add")
		if err != nil {
			return x, fmt.Errorf("%s: %w", sub, err)
		}
		if y.name == "" { // a ZeroLayer: nothing to add
			continue
		}
		if c := n.ChildNodes[i]; len(c) > 0 && string(c) != "null" {
			sub := fmt.Sprintf("child_nodes[%d]%s", i, pxNameOf(c))
			if y, err = im.treeNode(fmt.Sprintf("%s.c%d", prefix, i), where+" "+sub, c, y); err != nil {
				return x, fmt.Errorf("%s: %w", sub, err)
			}
		}
		if n.HasBranchBN {
			y.name = im.b.BN(fmt.Sprintf("%s.bn%d", prefix, i), y.name)
		}
		outs = append(outs, y)
	}
	if len(outs) == 0 {
		return x, fmt.Errorf("every edge is a ZeroLayer")
	}
	var y pxValue
	switch {
	case len(outs) == 1:
		y = outs[0]
	case merge == "add":
		names := make([]string, len(outs))
		for i, o := range outs {
			if o.c != outs[0].c {
				return x, fmt.Errorf("field merge_type add: branches of %d channels (set by %s) and %d (set by %s)", outs[0].c, outs[0].from, o.c, o.from)
			}
			names[i] = o.name
		}
		y = pxValue{im.b.Node(prefix+".add", OpAdd, Attrs{}, names...), outs[0].c, ""}
	default: // concat
		names := make([]string, len(outs))
		c := 0
		for i, o := range outs {
			names[i] = o.name
			c += o.c
		}
		y = pxValue{im.b.Node(prefix+".concat", OpConcat, Attrs{}, names...), c, ""}
	}
	if y.c != n.OutChannels {
		return x, fmt.Errorf("field out_channels = %d, but its branches give %d", n.OutChannels, y.c)
	}
	y.from = where + " field out_channels"
	return y, nil
}

// ReadProxylessNAS reads and imports a net.config file.
func ReadProxylessNAS(path string) (*Graph, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("importing: %w", err)
	}
	return ImportProxylessNAS(data, path)
}

// pxTreeOps maps the published network's edge layers to tree-cell ops.
func pxTreeOp(raw json.RawMessage) (string, error) {
	var l pxLayer
	if err := pxDecode(raw, &l); err != nil {
		return "", err
	}
	switch {
	case l.Name == "IdentityLayer" && !l.UseBN && l.ActFunc == nil:
		return TreeIdentity, nil
	case l.Name == "DepthConvLayer" && l.UseBN && l.ActFunc != nil && *l.ActFunc == "relu" && l.Stride == 1 && l.Groups == 1 && !l.Bias && l.OpsOrder == "bn_act_weight":
		switch [2]int{l.KernelSize, l.Dilation} {
		case [2]int{3, 1}:
			return TreeSep3, nil
		case [2]int{5, 1}:
			return TreeSep5, nil
		case [2]int{7, 1}:
			return TreeSep7, nil
		case [2]int{3, 2}:
			return TreeDil3, nil
		}
	case l.Name == "PoolingLayer" && !l.UseBN && l.ActFunc == nil && l.KernelSize == 3 && l.Stride == 1:
		switch l.PoolType {
		case "max":
			return TreeMax3, nil
		case "avg":
			return TreeAvg3, nil
		}
	}
	return "", fmt.Errorf("layer %s (kernel %d, dilation %d) is not a tree-cell candidate op", l.Name, l.KernelSize, l.Dilation)
}

// ProxylessTreeCells reads the searched cell of every ResidualTreeBlock of a
// net.config in the tree-cell space's terms (TreeCell, edges depth first),
// for networks whose cells have exactly the shape of ours: a root node with
// one conv edge, a split node with two identity edges, and below each half
// copy-and-add nodes of two edges over two leaf edges. It is how the tests
// check that our cell is the published one.
func ProxylessTreeCells(data []byte) ([]TreeCell, error) {
	type node struct {
		SplitType  *string           `json:"split_type"`
		Edges      []json.RawMessage `json:"edges"`
		ChildNodes []json.RawMessage `json:"child_nodes"`
	}
	var f struct {
		Blocks []struct {
			Name string          `json:"name"`
			Cell json.RawMessage `json:"cell"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, pxJSONError(err)
	}
	parse := func(raw json.RawMessage, split string, edges int) (node, error) {
		var n node
		if err := json.Unmarshal(raw, &n); err != nil {
			return n, pxJSONError(err)
		}
		s := ""
		if n.SplitType != nil {
			s = *n.SplitType
		}
		if s != split || len(n.Edges) != edges || len(n.ChildNodes) != edges {
			return n, fmt.Errorf("a node with split_type %q and %d edges, want %q and %d", s, len(n.Edges), split, edges)
		}
		return n, nil
	}
	var cells []TreeCell
	for bi, b := range f.Blocks {
		if b.Name != "ResidualTreeBlock" {
			continue
		}
		cell := TreeCell{Edges: make([][]string, TreeEdges)}
		err := func() error {
			root, err := parse(b.Cell, "", 1)
			if err != nil {
				return fmt.Errorf("root: %w", err)
			}
			split, err := parse(root.ChildNodes[0], "split", 2)
			if err != nil {
				return fmt.Errorf("split node: %w", err)
			}
			for h := range 2 {
				if op, err := pxTreeOp(split.Edges[h]); err != nil || op != TreeIdentity {
					return fmt.Errorf("split edge %d is not an identity", h)
				}
				half, err := parse(split.ChildNodes[h], "copy", 2)
				if err != nil {
					return fmt.Errorf("half %d: %w", h, err)
				}
				for ti := range 2 {
					top := 6*h + 3*ti
					if cell.Edges[top], err = opList(half.Edges[ti]); err != nil {
						return fmt.Errorf("edge %s: %w", treeEdgeNames[top], err)
					}
					leaves, err := parse(half.ChildNodes[ti], "copy", 2)
					if err != nil {
						return fmt.Errorf("below edge %s: %w", treeEdgeNames[top], err)
					}
					for li := range 2 {
						if string(leaves.ChildNodes[li]) != "null" {
							return fmt.Errorf("edge %s has a child node", treeEdgeNames[top+1+li])
						}
						if cell.Edges[top+1+li], err = opList(leaves.Edges[li]); err != nil {
							return fmt.Errorf("edge %s: %w", treeEdgeNames[top+1+li], err)
						}
					}
				}
			}
			return cell.check()
		}()
		if err != nil {
			return nil, fmt.Errorf("block %d: cell: %w", bi, err)
		}
		cells = append(cells, cell)
	}
	return cells, nil
}

func opList(raw json.RawMessage) ([]string, error) {
	op, err := pxTreeOp(raw)
	if err != nil {
		return nil, err
	}
	return []string{op}, nil
}
