package models

import (
	"testing"

	"bayesnas/internal/allocs"
)

// FuzzImportProxylessNAS imports a ProxylessNAS net.config
// (ImportProxylessNAS) and reads its tree cells (ProxylessTreeCells).
//
// It asserts: no panic; bad input is an error; an imported graph validates
// and is a valid arch.json (ParseGraph of its MarshalJSON succeeds), and
// the cells read are well formed (TreeCell.check); allocation stays below
// 64 x the input's bytes + 1 MiB (the graph is metadata, nothing is
// allocated per channel).
func FuzzImportProxylessNAS(f *testing.F) {
	f.Add([]byte(`{"name":"PyramidTreeNet","blocks":[],"classifier":null}`))
	f.Add([]byte(`{"name":"PyramidTreeNet","blocks":[{"name":"TransitionBlock","layers":[{"name":"ConvLayer","in_channels":3,"out_channels":99999999,"kernel_size":3,"stride":1,"dilation":1,"groups":1,"bias":false,"has_shuffle":false,"use_bn":false,"act_func":null,"dropout_rate":0,"ops_order":"weight"}]}],"classifier":{"name":"LinearLayer","in_features":99999999,"out_features":10,"bias":true,"use_bn":false,"act_func":null,"dropout_rate":0,"ops_order":"weight"}}`))
	f.Add([]byte(`{"blocks":[{"name":"ResidualTreeBlock","cell":{"split_type":null,"edges":[],"child_nodes":[]}}]}`))

	f.Fuzz(func(t *testing.T, b []byte) {
		var g *Graph
		var cells []TreeCell
		var err, cerr error
		alloc := allocs.During(func() {
			g, err = ImportProxylessNAS(b, "fuzz.config")
			cells, cerr = ProxylessTreeCells(b)
		})
		if bound := 64*uint64(len(b)) + 1<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for %d input bytes: bound %d", alloc, len(b), bound)
		}
		if cerr == nil {
			for i, c := range cells {
				if err := c.check(); err != nil {
					t.Fatalf("cell %d: %v", i, err)
				}
			}
		}
		if err != nil {
			if g != nil {
				t.Fatalf("error %v with a graph", err)
			}
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("imported a graph that does not validate: %v", err)
		}
		w, err := g.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseGraph(w); err != nil {
			t.Fatalf("the imported graph is not a valid arch.json: %v", err)
		}
	})
}
