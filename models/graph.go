// Package models is the graph IR that every stage of bayesnas reads and
// rewrites: a tiny ONNX-like list of nodes in topological order, its JSON form,
// shape inference, parameter and multiply-add counts, the weights file, and
// compilation into an nn.Network. Builders (PyramidNet, later the search
// spaces) produce graphs; nothing outside this package needs per-backbone code.
package models

import (
	"encoding/json"
	"fmt"
)

// Format is the version stamp written into every graph file; readers refuse
// other values rather than guess at a layout they do not know.
const Format = "bayesnas.graph/v1"

// Op names, exactly as they appear in graph files.
const (
	OpConv     = "conv"
	OpBN       = "bn"
	OpReLU     = "relu"
	OpMaxPool  = "maxpool"
	OpAvgPool  = "avgpool"
	OpGAP      = "gap"
	OpLinear   = "linear"
	OpAdd      = "add"
	OpWSum     = "wsum"
	OpConcat   = "concat"
	OpSlice    = "slice"
	OpPadCh    = "padch"
	OpShuffle  = "shuffle"
	OpDropout  = "dropout"
	OpDropPath = "droppath"
)

// Graph is a network: one input, nodes in topological order, one output.
type Graph struct {
	Format string  `json:"format"`
	Name   string  `json:"name"`
	Input  Input   `json:"input"`
	Nodes  []*Node `json:"nodes"`
	// Output names the node whose value is the network's output (the logits).
	Output string `json:"output"`
	// Builder records which builder made the graph and with what parameters,
	// so a reader of the file can rebuild or at least understand it.
	Builder *BuilderInfo `json:"builder,omitempty"`
}

// Input is the graph's single input; Shape is per sample (C,H,W).
type Input struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// BuilderInfo names a builder (a key of Builders) and its parameters.
type BuilderInfo struct {
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Node is one operation. Its single output is named by Name; Inputs name
// earlier nodes or the graph input.
type Node struct {
	Name   string   `json:"name"`
	Op     string   `json:"op"`
	Inputs []string `json:"inputs"`
	Attrs  Attrs    `json:"attrs,omitzero"`
}

// Attrs holds every op's attributes; each op reads only its own fields (see
// Validate). Zero values are omitted from JSON, and validation never
// substitutes a default for a missing field: a conv with stride 0 is an error,
// not a stride-1 conv.
type Attrs struct {
	// OutChannels: conv output channels, linear output features, padch target channels.
	OutChannels int  `json:"out_channels,omitempty"`
	Kernel      int  `json:"kernel,omitempty"`
	Stride      int  `json:"stride,omitempty"`
	Pad         int  `json:"pad,omitempty"`
	Dilation    int  `json:"dilation,omitempty"`
	Groups      int  `json:"groups,omitempty"` // conv groups, shuffle groups
	Bias        bool `json:"bias,omitempty"`   // conv and linear
	// CountIncludePad: avgpool divides by kernel*kernel even over padding.
	CountIncludePad bool `json:"count_include_pad,omitempty"`
	// CeilMode: max/avg pool output size rounded up (an overhanging last
	// window still counts; PyramidNet's shortcut on odd maps).
	CeilMode bool `json:"ceil_mode,omitempty"`
	// Start, End: slice keeps channels [Start, End).
	Start int `json:"start,omitempty"`
	End   int `json:"end,omitempty"`
	// P: dropout / droppath drop probability.
	P        float64 `json:"p,omitempty"`
	Eps      float64 `json:"eps,omitempty"`      // bn
	Momentum float64 `json:"momentum,omitempty"` // bn, PyTorch convention
}

// Node returns the node with the given name, or nil.
func (g *Graph) Node(name string) *Node {
	for _, n := range g.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Validate checks the whole graph: format, input, names, topological order,
// each op's input count and attributes, and every shape (through shape
// inference). Errors name the node and the field.
func (g *Graph) Validate() error {
	_, err := g.InferShapes()
	return err
}

// NodeError is a validation error about one node.
type NodeError struct {
	Node string
	Op   string
	Err  error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("node %q (%s): %v", e.Node, e.Op, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }

func nodeErr(n *Node, format string, args ...any) error {
	return &NodeError{Node: n.Name, Op: n.Op, Err: fmt.Errorf(format, args...)}
}
