package nn

// Network is a compiled graph: layers in topological order over values and
// parameters that were all allocated at compile time.
type Network struct {
	Backend Backend
	Input   *Value
	Output  *Value
	Layers  []Layer
	Values  []*Value // every value, input first
	Params  []*Param
}

// SetBatch sets the current batch size (at most the compiled one).
func (n *Network) SetBatch(b int) {
	for _, v := range n.Values {
		v.SetBatch(b)
	}
}

// Forward runs every layer; train selects batch statistics, dropout and drop-path.
func (n *Network) Forward(train bool) {
	for _, l := range n.Layers {
		l.Forward(train)
	}
}

// ZeroGrad clears the gradients of all values and parameters.
func (n *Network) ZeroGrad() {
	for _, v := range n.Values {
		clear(v.Grad)
	}
	for _, p := range n.Params {
		clear(p.Grad)
	}
}

// Backward propagates Output.Grad (set by the loss) to every value and
// parameter. Call ZeroGrad first, and do not clear Output.Grad in between.
func (n *Network) Backward() {
	for i := len(n.Layers) - 1; i >= 0; i-- {
		n.Layers[i].Backward()
	}
}

// Param returns the parameter with the given name, or nil.
func (n *Network) Param(name string) *Param {
	for _, p := range n.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}
