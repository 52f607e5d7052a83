package models

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"bayesnas/internal/allocs"
)

// canonicalGraph is g with its builder parameters compacted: MarshalJSON
// indents the raw parameters, which changes their bytes but not their value.
func canonicalGraph(t *testing.T, g *Graph) *Graph {
	c := *g
	if g.Builder != nil && g.Builder.Params != nil {
		var buf bytes.Buffer
		if err := json.Compact(&buf, g.Builder.Params); err != nil {
			t.Fatalf("builder params %q: %v", g.Builder.Params, err)
		}
		b := *g.Builder
		b.Params = buf.Bytes()
		c.Builder = &b
	}
	return &c
}

// FuzzParseGraph parses an arch.json (ParseGraph: strict decoding and
// Validate) and, when it is accepted, runs what `describe` and Compile's
// memory check run on it next (Count, ParamSpecs, Estimate).
//
// It asserts: no panic; bad input is an error; an accepted graph validates,
// its memory estimate is an error or a total in [0, 2^62] bytes, and it
// round-trips: ParseGraph(MarshalJSON(g)) succeeds, equals g (builder
// parameters compared compacted) and writes the same bytes again;
// allocation stays below 64 x the input's bytes + 1 MiB (the graph is
// metadata: nothing is allocated per channel).
func FuzzParseGraph(f *testing.F) {
	tiny, err := tinyGraph().MarshalJSON()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tiny)
	f.Add(bytes.Replace(tiny, []byte(`"out_channels": 5`), []byte(`"out_channels": 10000000`), 1))
	f.Add(bytes.Replace(tiny, []byte(`"groups": 2`), []byte(`"groups": 3`), 1))
	f.Add(append(bytes.Clone(tiny), "{}"...))
	f.Add([]byte(`{"format": `))

	f.Fuzz(func(t *testing.T, b []byte) {
		var g *Graph
		var err error
		alloc := allocs.During(func() {
			if g, err = ParseGraph(b); err == nil {
				g.Count()
				g.ParamSpecs()
				if fp, eerr := Estimate(g, 64); eerr == nil && (fp.Bytes() < 0 || fp.Bytes() > 1<<62) {
					t.Fatalf("memory estimate %d bytes", fp.Bytes())
				}
			}
		})
		if bound := 64*uint64(len(b)) + 1<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for %d input bytes: bound %d", alloc, len(b), bound)
		}
		if err != nil {
			if g != nil {
				t.Fatalf("error %v with a graph", err)
			}
			return
		}
		if verr := g.Validate(); verr != nil {
			t.Fatalf("accepted a graph that does not validate: %v", verr)
		}
		w1, err := g.MarshalJSON()
		if err != nil {
			t.Fatalf("writing an accepted graph: %v", err)
		}
		g2, err := ParseGraph(w1)
		if err != nil {
			t.Fatalf("the written graph does not parse: %v\n%s", err, w1)
		}
		if !reflect.DeepEqual(canonicalGraph(t, g), canonicalGraph(t, g2)) {
			t.Fatalf("parse(write(parse(x))) != parse(x):\n%s", w1)
		}
		w2, err := g2.MarshalJSON()
		if err != nil || !bytes.Equal(w1, w2) {
			t.Fatalf("writing again gives other bytes (%v):\n%s\n%s", err, w1, w2)
		}
	})
}
