package models

import "fmt"

// PyTorch's BatchNorm2d defaults; builders write them into every bn node
// explicitly because the IR has no defaults.
const (
	bnEps      = 1e-5
	bnMomentum = 0.1
)

// GraphBuilder appends nodes to a graph under construction. Its methods
// return the new node's name so calls chain the way the data flows;
// mistakes (bad channels, duplicate names) surface when Finish validates.
type GraphBuilder struct {
	g *Graph
}

// NewGraphBuilder starts a graph with one (C,H,W) input.
func NewGraphBuilder(name, input string, shape [3]int) *GraphBuilder {
	return &GraphBuilder{g: &Graph{Format: Format, Name: name, Input: Input{Name: input, Shape: shape[:]}}}
}

// Node appends a node and returns its name.
func (b *GraphBuilder) Node(name, op string, a Attrs, inputs ...string) string {
	b.g.Nodes = append(b.g.Nodes, &Node{Name: name, Op: op, Inputs: inputs, Attrs: a})
	return name
}

// Conv appends a bias-free square convolution with "same" padding for odd k.
func (b *GraphBuilder) Conv(name, in string, out, k, stride, groups int) string {
	return b.Node(name, OpConv, Attrs{OutChannels: out, Kernel: k, Stride: stride, Pad: k / 2, Dilation: 1, Groups: groups}, in)
}

// BN appends a batch normalization with PyTorch's default eps and momentum.
func (b *GraphBuilder) BN(name, in string) string {
	return b.Node(name, OpBN, Attrs{Eps: bnEps, Momentum: bnMomentum}, in)
}

// ReLU appends a ReLU.
func (b *GraphBuilder) ReLU(name, in string) string { return b.Node(name, OpReLU, Attrs{}, in) }

// Finish sets the output and validates the graph.
func (b *GraphBuilder) Finish(output string, info *BuilderInfo) (*Graph, error) {
	b.g.Output = output
	b.g.Builder = info
	if err := b.g.Validate(); err != nil {
		return nil, fmt.Errorf("building %s: %w", b.g.Name, err)
	}
	return b.g, nil
}
