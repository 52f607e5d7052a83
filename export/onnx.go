package export

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// The subset of the ONNX protobuf messages that bayesnas writes and its tests
// read, as plain structs. Field numbers follow the ONNX specification
// (onnx/onnx.proto, proto2 syntax); the encoding is written by hand with
// protowire rather than generated, so the module carries no .proto file and
// no generated code. Repeated numbers are written unpacked, as the proto2
// reference implementation does; the reader accepts both forms.

// Tensor element types (TensorProto.DataType).
const (
	TypeFloat  int32 = 1
	TypeUint8  int32 = 2
	TypeInt8   int32 = 3
	TypeInt32  int32 = 6
	TypeInt64  int32 = 7
	TypeBool   int32 = 9
	TypeDouble int32 = 11
)

// AttrType is AttributeProto.AttributeType.
type AttrType int32

// The attribute types this package reads and writes.
const (
	AttrFloat   AttrType = 1
	AttrInt     AttrType = 2
	AttrString  AttrType = 3
	AttrTensor  AttrType = 4
	AttrFloats  AttrType = 6
	AttrInts    AttrType = 7
	AttrStrings AttrType = 8
)

// Model is ModelProto.
type Model struct {
	IRVersion       int64
	OpsetImports    []OpsetID
	ProducerName    string
	ProducerVersion string
	Domain          string
	ModelVersion    int64
	DocString       string
	Graph           *Graph
	Metadata        []StringPair // metadata_props, in file order
}

// OpsetID is OperatorSetIdProto; Domain "" is the default ONNX domain.
type OpsetID struct {
	Domain  string
	Version int64
}

// StringPair is StringStringEntryProto.
type StringPair struct {
	Key, Value string
}

// Graph is GraphProto.
type Graph struct {
	Name         string
	Nodes        []*Node
	Initializers []*Tensor
	DocString    string
	Inputs       []*ValueInfo
	Outputs      []*ValueInfo
	ValueInfo    []*ValueInfo
}

// Node is NodeProto.
type Node struct {
	Inputs    []string
	Outputs   []string
	Name      string
	OpType    string
	Domain    string
	Attrs     []*Attribute
	DocString string
}

// Attribute is AttributeProto (the non-graph kinds).
type Attribute struct {
	Name      string
	Type      AttrType
	F         float32
	I         int64
	S         []byte
	T         *Tensor
	Floats    []float32
	Ints      []int64
	Strings   [][]byte
	DocString string
}

// Tensor is TensorProto with its data inline (no external data, no segments).
type Tensor struct {
	Dims       []int64
	DataType   int32
	FloatData  []float32
	Int32Data  []int32
	StringData [][]byte
	Int64Data  []int64
	Name       string
	RawData    []byte
	DoubleData []float64
	Uint64Data []uint64
	DocString  string
}

// ValueInfo is ValueInfoProto for a tensor type. Shape == nil means the shape
// is unknown (no shape field); an empty non-nil Shape is a scalar.
type ValueInfo struct {
	Name      string
	ElemType  int32
	Shape     []Dim
	DocString string
}

// Dim is one TensorShapeProto.Dimension: a fixed Value, or a symbolic Param
// (such as "batch"), or neither (unknown).
type Dim struct {
	Value int64
	Param string
}

// Marshal encodes the model.
func (m *Model) Marshal() []byte {
	var b []byte
	b = appendInt(b, 1, m.IRVersion)
	b = appendString(b, 2, m.ProducerName)
	b = appendString(b, 3, m.ProducerVersion)
	b = appendString(b, 4, m.Domain)
	b = appendInt(b, 5, m.ModelVersion)
	b = appendString(b, 6, m.DocString)
	if m.Graph != nil {
		b = appendMessage(b, 7, m.Graph.marshal())
	}
	for _, o := range m.OpsetImports {
		var ob []byte
		// The domain is written even when empty: readers treat a missing
		// domain as the default one too, but ONNX's own tools write it.
		ob = protowire.AppendTag(ob, 1, protowire.BytesType)
		ob = protowire.AppendString(ob, o.Domain)
		ob = appendInt(ob, 2, o.Version)
		b = appendMessage(b, 8, ob)
	}
	for _, kv := range m.Metadata {
		var kb []byte
		kb = appendString(kb, 1, kv.Key)
		kb = appendString(kb, 2, kv.Value)
		b = appendMessage(b, 14, kb)
	}
	return b
}

func (g *Graph) marshal() []byte {
	var b []byte
	for _, n := range g.Nodes {
		b = appendMessage(b, 1, n.marshal())
	}
	b = appendString(b, 2, g.Name)
	for _, t := range g.Initializers {
		b = appendMessage(b, 5, t.marshal())
	}
	b = appendString(b, 10, g.DocString)
	for _, v := range g.Inputs {
		b = appendMessage(b, 11, v.marshal())
	}
	for _, v := range g.Outputs {
		b = appendMessage(b, 12, v.marshal())
	}
	for _, v := range g.ValueInfo {
		b = appendMessage(b, 13, v.marshal())
	}
	return b
}

func (n *Node) marshal() []byte {
	var b []byte
	// Inputs and outputs keep empty strings: an empty name marks an omitted
	// optional input and its position matters.
	for _, s := range n.Inputs {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	for _, s := range n.Outputs {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	b = appendString(b, 3, n.Name)
	b = appendString(b, 4, n.OpType)
	for _, a := range n.Attrs {
		b = appendMessage(b, 5, a.marshal())
	}
	b = appendString(b, 6, n.DocString)
	b = appendString(b, 7, n.Domain)
	return b
}

func (a *Attribute) marshal() []byte {
	var b []byte
	b = appendString(b, 1, a.Name)
	switch a.Type {
	case AttrFloat:
		b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(a.F))
	case AttrInt:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(a.I))
	case AttrString:
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, a.S)
	case AttrTensor:
		if a.T != nil {
			b = appendMessage(b, 5, a.T.marshal())
		}
	case AttrFloats:
		for _, f := range a.Floats {
			b = protowire.AppendTag(b, 7, protowire.Fixed32Type)
			b = protowire.AppendFixed32(b, math.Float32bits(f))
		}
	case AttrInts:
		for _, v := range a.Ints {
			b = protowire.AppendTag(b, 8, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	case AttrStrings:
		for _, s := range a.Strings {
			b = protowire.AppendTag(b, 9, protowire.BytesType)
			b = protowire.AppendBytes(b, s)
		}
	}
	b = appendString(b, 13, a.DocString)
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.Type))
	return b
}

func (t *Tensor) marshal() []byte {
	var b []byte
	for _, d := range t.Dims {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(d))
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(int64(t.DataType)))
	for _, f := range t.FloatData {
		b = protowire.AppendTag(b, 4, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(f))
	}
	for _, v := range t.Int32Data {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(v)))
	}
	for _, s := range t.StringData {
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, s)
	}
	for _, v := range t.Int64Data {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v))
	}
	b = appendString(b, 8, t.Name)
	if t.RawData != nil {
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		b = protowire.AppendBytes(b, t.RawData)
	}
	for _, v := range t.DoubleData {
		b = protowire.AppendTag(b, 10, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(v))
	}
	for _, v := range t.Uint64Data {
		b = protowire.AppendTag(b, 11, protowire.VarintType)
		b = protowire.AppendVarint(b, v)
	}
	b = appendString(b, 12, t.DocString)
	return b
}

func (v *ValueInfo) marshal() []byte {
	var b []byte
	b = appendString(b, 1, v.Name)
	// TypeProto{tensor_type: Tensor{elem_type, shape}}
	var tt []byte
	tt = protowire.AppendTag(tt, 1, protowire.VarintType)
	tt = protowire.AppendVarint(tt, uint64(int64(v.ElemType)))
	if v.Shape != nil {
		var sb []byte
		for _, d := range v.Shape {
			var db []byte
			switch {
			case d.Param != "":
				db = appendString(db, 2, d.Param)
			case d.Value > 0:
				db = protowire.AppendTag(db, 1, protowire.VarintType)
				db = protowire.AppendVarint(db, uint64(d.Value))
			}
			sb = appendMessage(sb, 1, db)
		}
		tt = appendMessage(tt, 2, sb)
	}
	var tp []byte
	tp = appendMessage(tp, 1, tt)
	b = appendMessage(b, 2, tp)
	b = appendString(b, 3, v.DocString)
	return b
}

// appendString writes a non-empty string field (proto2 optional: an empty
// value is the same as a missing one for every field we write this way).
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendInt writes a non-zero int64 field.
func appendInt(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// FloatTensor makes a float32 tensor stored as raw little-endian bytes.
func FloatTensor(name string, dims []int64, data []float32) *Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return &Tensor{Name: name, Dims: dims, DataType: TypeFloat, RawData: raw}
}

// Int64Tensor makes an int64 tensor stored as raw little-endian bytes.
func Int64Tensor(name string, dims []int64, data []int64) *Tensor {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return &Tensor{Name: name, Dims: dims, DataType: TypeInt64, RawData: raw}
}

// NumElements is the product of the dims (1 for a scalar), or -1 when a
// dim is negative or the product overflows int64 (a corrupt file).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return -1
		}
		n *= d
	}
	return n
}

// Float32s returns a float tensor's values from raw_data or float_data.
func (t *Tensor) Float32s() ([]float32, error) {
	if t.DataType != TypeFloat {
		return nil, fmt.Errorf("tensor %q: data type %d, want float (%d)", t.Name, t.DataType, TypeFloat)
	}
	n := t.NumElements()
	if n < 0 {
		return nil, fmt.Errorf("tensor %q: dims %v do not give a valid number of elements", t.Name, t.Dims)
	}
	if t.RawData != nil {
		if int64(len(t.RawData))%4 != 0 || int64(len(t.RawData))/4 != n {
			return nil, fmt.Errorf("tensor %q: %d raw bytes for %d float values", t.Name, len(t.RawData), n)
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:]))
		}
		return out, nil
	}
	if int64(len(t.FloatData)) != n {
		return nil, fmt.Errorf("tensor %q: %d float_data values for dims %v", t.Name, len(t.FloatData), t.Dims)
	}
	return append([]float32(nil), t.FloatData...), nil
}

// Int64s returns an int64 tensor's values from raw_data or int64_data.
func (t *Tensor) Int64s() ([]int64, error) {
	if t.DataType != TypeInt64 {
		return nil, fmt.Errorf("tensor %q: data type %d, want int64 (%d)", t.Name, t.DataType, TypeInt64)
	}
	n := t.NumElements()
	if n < 0 {
		return nil, fmt.Errorf("tensor %q: dims %v do not give a valid number of elements", t.Name, t.Dims)
	}
	if t.RawData != nil {
		if int64(len(t.RawData))%8 != 0 || int64(len(t.RawData))/8 != n {
			return nil, fmt.Errorf("tensor %q: %d raw bytes for %d int64 values", t.Name, len(t.RawData), n)
		}
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.RawData[8*i:]))
		}
		return out, nil
	}
	if int64(len(t.Int64Data)) != n {
		return nil, fmt.Errorf("tensor %q: %d int64_data values for dims %v", t.Name, len(t.Int64Data), t.Dims)
	}
	return append([]int64(nil), t.Int64Data...), nil
}

// MetadataValue returns the metadata value for key.
func (m *Model) MetadataValue(key string) (string, bool) {
	for _, kv := range m.Metadata {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}
