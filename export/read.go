package export

import (
	"fmt"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// Read parses an ONNX model file into the subset this package knows. Fields
// outside the subset that would change the model's meaning (graph-valued
// attributes, external or sparse data, functions, training info) are errors
// naming the message and field; purely descriptive ones are skipped.
func Read(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading ONNX model: %w", err)
	}
	m, err := ParseModel(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return m, nil
}

// ParseModel decodes a ModelProto.
func ParseModel(b []byte) (*Model, error) {
	m := &Model{}
	err := eachField(b, "ModelProto", func(num protowire.Number, f field) error {
		var err error
		switch num {
		case 1:
			m.IRVersion, err = f.int64()
		case 2:
			m.ProducerName, err = f.str()
		case 3:
			m.ProducerVersion, err = f.str()
		case 4:
			m.Domain, err = f.str()
		case 5:
			m.ModelVersion, err = f.int64()
		case 6:
			m.DocString, err = f.str()
		case 7:
			var raw []byte
			if raw, err = f.message(); err == nil {
				m.Graph, err = parseGraph(raw)
			}
		case 8:
			var raw []byte
			if raw, err = f.message(); err == nil {
				var o OpsetID
				err = eachField(raw, "OperatorSetIdProto", func(num protowire.Number, f field) error {
					var err error
					switch num {
					case 1:
						o.Domain, err = f.str()
					case 2:
						o.Version, err = f.int64()
					}
					return err
				})
				m.OpsetImports = append(m.OpsetImports, o)
			}
		case 14:
			var raw []byte
			if raw, err = f.message(); err == nil {
				var kv StringPair
				kv, err = parseStringPair(raw)
				m.Metadata = append(m.Metadata, kv)
			}
		case 20, 25:
			err = fmt.Errorf("training_info and functions are not supported")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func parseStringPair(b []byte) (StringPair, error) {
	var kv StringPair
	err := eachField(b, "StringStringEntryProto", func(num protowire.Number, f field) error {
		var err error
		switch num {
		case 1:
			kv.Key, err = f.str()
		case 2:
			kv.Value, err = f.str()
		}
		return err
	})
	return kv, err
}

func parseGraph(b []byte) (*Graph, error) {
	g := &Graph{}
	err := eachField(b, "GraphProto", func(num protowire.Number, f field) error {
		raw, err := f.messageIf(num == 1 || num == 5 || num == 11 || num == 12 || num == 13)
		if err != nil {
			return err
		}
		switch num {
		case 1:
			n, err := parseNode(raw)
			if err != nil {
				return fmt.Errorf("node %d: %w", len(g.Nodes), err)
			}
			g.Nodes = append(g.Nodes, n)
		case 2:
			g.Name, err = f.str()
		case 5:
			t, err := parseTensor(raw)
			if err != nil {
				return fmt.Errorf("initializer %d: %w", len(g.Initializers), err)
			}
			g.Initializers = append(g.Initializers, t)
		case 10:
			g.DocString, err = f.str()
		case 11, 12, 13:
			v, err := parseValueInfo(raw)
			if err != nil {
				return err
			}
			switch num {
			case 11:
				g.Inputs = append(g.Inputs, v)
			case 12:
				g.Outputs = append(g.Outputs, v)
			default:
				g.ValueInfo = append(g.ValueInfo, v)
			}
		case 15:
			return fmt.Errorf("sparse initializers are not supported")
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	return g, nil
}

func parseNode(b []byte) (*Node, error) {
	n := &Node{}
	err := eachField(b, "NodeProto", func(num protowire.Number, f field) error {
		var err error
		var s string
		switch num {
		case 1:
			s, err = f.str()
			n.Inputs = append(n.Inputs, s)
		case 2:
			s, err = f.str()
			n.Outputs = append(n.Outputs, s)
		case 3:
			n.Name, err = f.str()
		case 4:
			n.OpType, err = f.str()
		case 5:
			var raw []byte
			if raw, err = f.message(); err == nil {
				var a *Attribute
				if a, err = parseAttribute(raw); err == nil {
					n.Attrs = append(n.Attrs, a)
				}
			}
		case 6:
			n.DocString, err = f.str()
		case 7:
			n.Domain, err = f.str()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%q (%s): %w", n.Name, n.OpType, err)
	}
	return n, nil
}

func parseAttribute(b []byte) (*Attribute, error) {
	a := &Attribute{}
	err := eachField(b, "AttributeProto", func(num protowire.Number, f field) error {
		var err error
		switch num {
		case 1:
			a.Name, err = f.str()
		case 2:
			var u uint32
			u, err = f.fixed32()
			a.F = math.Float32frombits(u)
		case 3:
			a.I, err = f.int64()
		case 4:
			a.S, err = f.bytes()
		case 5:
			var raw []byte
			if raw, err = f.message(); err == nil {
				a.T, err = parseTensor(raw)
			}
		case 7:
			err = f.appendFixed32s(func(u uint32) { a.Floats = append(a.Floats, math.Float32frombits(u)) })
		case 8:
			err = f.appendVarints(func(u uint64) { a.Ints = append(a.Ints, int64(u)) })
		case 9:
			var s []byte
			s, err = f.bytes()
			a.Strings = append(a.Strings, s)
		case 13:
			a.DocString, err = f.str()
		case 20:
			var v int64
			v, err = f.int64()
			a.Type = AttrType(v)
		case 6, 10, 11, 14, 15, 21, 22, 23:
			err = fmt.Errorf("graph, sparse, type-proto and reference attributes are not supported")
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attribute %q: %w", a.Name, err)
	}
	return a, nil
}

// ParseTensor decodes a TensorProto (the .pb files of ONNX's test cases are
// bare TensorProtos).
func ParseTensor(b []byte) (*Tensor, error) { return parseTensor(b) }

func parseTensor(b []byte) (*Tensor, error) {
	t := &Tensor{}
	err := eachField(b, "TensorProto", func(num protowire.Number, f field) error {
		var err error
		switch num {
		case 1:
			err = f.appendVarints(func(u uint64) { t.Dims = append(t.Dims, int64(u)) })
		case 2:
			var v int64
			v, err = f.int64()
			t.DataType = int32(v)
		case 3, 13:
			err = fmt.Errorf("segments and external data are not supported")
		case 4:
			err = f.appendFixed32s(func(u uint32) { t.FloatData = append(t.FloatData, math.Float32frombits(u)) })
		case 5:
			err = f.appendVarints(func(u uint64) { t.Int32Data = append(t.Int32Data, int32(u)) })
		case 6:
			var s []byte
			s, err = f.bytes()
			t.StringData = append(t.StringData, s)
		case 7:
			err = f.appendVarints(func(u uint64) { t.Int64Data = append(t.Int64Data, int64(u)) })
		case 8:
			t.Name, err = f.str()
		case 9:
			t.RawData, err = f.bytes()
			if t.RawData == nil {
				t.RawData = []byte{}
			}
		case 10:
			err = f.appendFixed64s(func(u uint64) { t.DoubleData = append(t.DoubleData, math.Float64frombits(u)) })
		case 11:
			err = f.appendVarints(func(u uint64) { t.Uint64Data = append(t.Uint64Data, u) })
		case 12:
			t.DocString, err = f.str()
		case 14:
			var v int64
			if v, err = f.int64(); err == nil && v != 0 {
				err = fmt.Errorf("data_location %d (external) is not supported", v)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return t, nil
}

func parseValueInfo(b []byte) (*ValueInfo, error) {
	v := &ValueInfo{}
	err := eachField(b, "ValueInfoProto", func(num protowire.Number, f field) error {
		var err error
		switch num {
		case 1:
			v.Name, err = f.str()
		case 2:
			var raw []byte
			if raw, err = f.message(); err == nil {
				err = parseTypeProto(raw, v)
			}
		case 3:
			v.DocString, err = f.str()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("value info %q: %w", v.Name, err)
	}
	return v, nil
}

func parseTypeProto(b []byte, v *ValueInfo) error {
	return eachField(b, "TypeProto", func(num protowire.Number, f field) error {
		switch num {
		case 1:
			raw, err := f.message()
			if err != nil {
				return err
			}
			return eachField(raw, "TypeProto.Tensor", func(num protowire.Number, f field) error {
				switch num {
				case 1:
					e, err := f.int64()
					v.ElemType = int32(e)
					return err
				case 2:
					raw, err := f.message()
					if err != nil {
						return err
					}
					v.Shape = []Dim{}
					return eachField(raw, "TensorShapeProto", func(num protowire.Number, f field) error {
						if num != 1 {
							return nil
						}
						raw, err := f.message()
						if err != nil {
							return err
						}
						var d Dim
						err = eachField(raw, "Dimension", func(num protowire.Number, f field) error {
							var err error
							switch num {
							case 1:
								d.Value, err = f.int64()
							case 2:
								d.Param, err = f.str()
							}
							return err
						})
						v.Shape = append(v.Shape, d)
						return err
					})
				}
				return nil
			})
		case 4, 5, 7, 8, 9:
			return fmt.Errorf("only tensor types are supported")
		}
		return nil
	})
}

// field is one decoded field value; which member is set depends on wire.
type field struct {
	msg  string
	num  protowire.Number
	wire protowire.Type
	u    uint64 // varint, fixed32, fixed64
	raw  []byte
}

func (f field) errWire(want string) error {
	return fmt.Errorf("%s field %d: wire type %d, want %s", f.msg, f.num, f.wire, want)
}

func (f field) int64() (int64, error) {
	if f.wire != protowire.VarintType {
		return 0, f.errWire("varint")
	}
	return int64(f.u), nil
}

func (f field) fixed32() (uint32, error) {
	if f.wire != protowire.Fixed32Type {
		return 0, f.errWire("fixed32")
	}
	return uint32(f.u), nil
}

func (f field) bytes() ([]byte, error) {
	if f.wire != protowire.BytesType {
		return nil, f.errWire("length-delimited")
	}
	return f.raw, nil
}

func (f field) str() (string, error) {
	b, err := f.bytes()
	return string(b), err
}

func (f field) message() ([]byte, error) { return f.bytes() }

func (f field) messageIf(cond bool) ([]byte, error) {
	if !cond {
		return nil, nil
	}
	return f.bytes()
}

// appendVarints accepts a repeated varint field in either encoding: one
// value per field (proto2's default) or packed into a length-delimited run.
func (f field) appendVarints(add func(uint64)) error {
	switch f.wire {
	case protowire.VarintType:
		add(f.u)
		return nil
	case protowire.BytesType:
		b := f.raw
		for len(b) > 0 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%s field %d: bad packed varint: %w", f.msg, f.num, protowire.ParseError(n))
			}
			add(v)
			b = b[n:]
		}
		return nil
	}
	return f.errWire("varint or packed varints")
}

func (f field) appendFixed32s(add func(uint32)) error {
	switch f.wire {
	case protowire.Fixed32Type:
		add(uint32(f.u))
		return nil
	case protowire.BytesType:
		b := f.raw
		if len(b)%4 != 0 {
			return fmt.Errorf("%s field %d: packed fixed32 run of %d bytes", f.msg, f.num, len(b))
		}
		for ; len(b) > 0; b = b[4:] {
			v, _ := protowire.ConsumeFixed32(b)
			add(v)
		}
		return nil
	}
	return f.errWire("fixed32 or packed fixed32")
}

func (f field) appendFixed64s(add func(uint64)) error {
	switch f.wire {
	case protowire.Fixed64Type:
		add(f.u)
		return nil
	case protowire.BytesType:
		b := f.raw
		if len(b)%8 != 0 {
			return fmt.Errorf("%s field %d: packed fixed64 run of %d bytes", f.msg, f.num, len(b))
		}
		for ; len(b) > 0; b = b[8:] {
			v, _ := protowire.ConsumeFixed64(b)
			add(v)
		}
		return nil
	}
	return f.errWire("fixed64 or packed fixed64")
}

// eachField calls fn for every field of a message in order; unknown field
// numbers reach fn too, which ignores them by returning nil.
func eachField(b []byte, msg string, fn func(protowire.Number, field) error) error {
	for len(b) > 0 {
		num, wire, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%s: bad tag: %w", msg, protowire.ParseError(n))
		}
		b = b[n:]
		f := field{msg: msg, num: num, wire: wire}
		switch wire {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.u = uint64(v)
		case protowire.Fixed64Type:
			f.u, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.raw, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, wire, b)
		}
		if n < 0 {
			return fmt.Errorf("%s field %d: %w", msg, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, f); err != nil {
			return err
		}
	}
	return nil
}
