package models

import (
	"bayesnas/internal/atomicfile"
	"bayesnas/internal/textpos"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// graphFields is Graph without its methods, so that MarshalJSON can use the
// default encoder without recursing.
type graphFields Graph

// MarshalJSON writes the graph indented by two spaces, keys in struct order,
// so the same graph always gives the same bytes (files diff and hash well).
// It does not validate; WriteGraph does.
func (g *Graph) MarshalJSON() ([]byte, error) {
	b, err := json.MarshalIndent((*graphFields)(g), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding graph %q: %w", g.Name, err)
	}
	return append(b, '\n'), nil
}

// WriteGraph validates the graph and writes it to path atomically.
func (g *Graph) WriteGraph(path string) error {
	if err := g.Validate(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	b, err := g.MarshalJSON()
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return atomicfile.Write(path, b)
}

// ReadGraph reads and validates a graph file; errors name the file and,
// where one is to blame, the node.
func ReadGraph(path string) (*Graph, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading graph: %w", err)
	}
	g, err := ParseGraph(b)
	if err != nil {
		return nil, fmt.Errorf("reading %w", textpos.At(path, err))
	}
	return g, nil
}

// ParseGraph decodes and validates a graph. Unknown fields are errors: a
// misspelt attribute must not silently become a zero. A syntax or type error
// is a *textpos.Error holding its line and column in b.
func ParseGraph(b []byte) (*Graph, error) {
	var f struct {
		Format  string            `json:"format"`
		Name    string            `json:"name"`
		Input   Input             `json:"input"`
		Nodes   []json.RawMessage `json:"nodes"`
		Output  string            `json:"output"`
		Builder *BuilderInfo      `json:"builder"`
	}
	if err := decodeStrict(b, &f); err != nil {
		return nil, textpos.JSON(b, 0, err)
	}
	g := &Graph{Format: f.Format, Name: f.Name, Input: f.Input, Output: f.Output, Builder: f.Builder}
	for i, raw := range f.Nodes {
		n := new(Node)
		if err := decodeStrict(raw, n); err != nil {
			var named struct{ Name string }
			_ = json.Unmarshal(raw, &named) // best effort, only to name the node in the error
			err = fmt.Errorf("node %d %q: %w", i, named.Name, err)
			if pe, ok := textpos.JSON(b, nodeStart(b, i), err).(*textpos.Error); ok {
				return nil, pe
			}
			return nil, err
		}
		g.Nodes = append(g.Nodes, n)
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	return g, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// nodeStart gives the offset in b of the i-th element of the top-level
// "nodes" array (b has already decoded once), or 0 if it is not found; only
// to place an error in a node.
func nodeStart(b []byte, i int) int64 {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return 0
		}
		if key != "nodes" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return 0
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return 0
		}
		for j := 0; dec.More(); j++ {
			off := dec.InputOffset() // end of '[' or of the previous element
			for off < int64(len(b)) && bytes.IndexByte([]byte(" \t\r\n,"), b[off]) >= 0 {
				off++
			}
			if j == i {
				return off
			}
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return 0
			}
		}
		return 0
	}
	return 0
}
