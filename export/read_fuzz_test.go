package export

import (
	"bytes"
	"testing"

	"bayesnas/internal/allocs"
)

// fuzzModel is a small model using every message the reader knows.
func fuzzModel() *Model {
	return &Model{IRVersion: 8, ProducerName: "fuzz", OpsetImports: []OpsetID{{Version: 17}},
		Metadata: []StringPair{{"k", "v"}},
		Graph: &Graph{Name: "g",
			Nodes: []*Node{{Inputs: []string{"x", "w"}, Outputs: []string{"y"}, OpType: "Conv", Name: "c",
				Attrs: []*Attribute{{Name: "pads", Type: AttrInts, Ints: []int64{1, 1, 1, 1}}, {Name: "alpha", Type: AttrFloat, F: 0.5},
					{Name: "value", Type: AttrTensor, T: Int64Tensor("s", []int64{2}, []int64{-1, 3})}}}},
			Initializers: []*Tensor{FloatTensor("w", []int64{1, 1, 1, 1}, []float32{2}), {Name: "f", Dims: []int64{2}, DataType: TypeFloat, FloatData: []float32{1, 2}}},
			Inputs:       []*ValueInfo{{Name: "x", ElemType: TypeFloat, Shape: []Dim{{Param: "N"}, {Value: 1}, {Value: 4}, {Value: 4}}}},
			Outputs:      []*ValueInfo{{Name: "y", ElemType: TypeFloat, Shape: []Dim{{Param: "N"}, {Value: 1}, {Value: 4}, {Value: 4}}}},
		}}
}

// FuzzParseModel decodes an ONNX ModelProto (ParseModel) and the same bytes
// as a bare TensorProto (ParseTensor), and reads every tensor's values the
// way the validator and the kernel splitter do (NumElements, Float32s,
// Int64s).
//
// It asserts: no panic; bad input is an error; a model that decodes
// round-trips: Marshal of ParseModel(Marshal(m)) gives Marshal(m) again
// (compared as bytes: NaN floats make the structs unequal to themselves);
// allocation stays below 64 x the input's bytes + 1 MiB (nothing is
// allocated for what dims claim beyond the data present).
func FuzzParseModel(f *testing.F) {
	good := fuzzModel().Marshal()
	f.Add(good)
	f.Add(FloatTensor("t", []int64{2, 2}, []float32{1, 2, 3, 4}).marshal())
	f.Add(good[:len(good)/2])
	f.Add([]byte("\x0a\xff\xff\xff\xff\x0f"))

	values := func(ts []*Tensor) {
		for _, t := range ts {
			if t == nil {
				continue
			}
			t.NumElements()
			t.Float32s()
			t.Int64s()
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m *Model
		var err error
		alloc := allocs.During(func() {
			m, err = ParseModel(b)
			if tensor, terr := ParseTensor(b); terr == nil {
				values([]*Tensor{tensor})
			}
			if err == nil && m.Graph != nil {
				values(m.Graph.Initializers)
				for _, n := range m.Graph.Nodes {
					for _, a := range n.Attrs {
						values([]*Tensor{a.T})
					}
				}
			}
		})
		if bound := 64*uint64(len(b)) + 1<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for %d input bytes: bound %d", alloc, len(b), bound)
		}
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with a model", err)
			}
			return
		}
		w1 := m.Marshal()
		m2, err := ParseModel(w1)
		if err != nil {
			t.Fatalf("the written model does not parse: %v", err)
		}
		if w2 := m2.Marshal(); !bytes.Equal(w1, w2) {
			t.Fatalf("write(parse(write(parse(x)))) != write(parse(x))")
		}
	})
}
