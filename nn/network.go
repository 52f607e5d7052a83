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

	plan gradPlan
	// fresh: ZeroGrad ran and the next Backward is the first since, so the
	// value gradients it left to the backward pass are still to be cleared.
	fresh bool
}

// gradLayer is what the network needs to defer clearing a value's gradient
// to the backward pass; the CPU backend's layers implement it.
type gradLayer interface {
	inputs() []*Value
	// setAssign switches the layer's next Backward to overwriting x's
	// gradient instead of adding into it (clearing each piece just before it
	// adds, while it is in cache). It reports false when the layer cannot.
	setAssign(x *Value, on bool) bool
}

// gradPlan says, for every layer, which value gradients start in its
// backward: those of the inputs whose last consumer in forward order it is.
type gradPlan struct {
	layers      []Layer // the layers it was built for, in order
	values      int
	eager       []*Value // cleared by ZeroGrad itself
	clearBefore [][]*Value
	assigned    [][]*Value // the layer overwrites them when fresh
}

func (n *Network) buildPlan() {
	p := &n.plan
	*p = gradPlan{layers: append([]Layer(nil), n.Layers...), values: len(n.Values)}
	last := make(map[*Value]int)
	lazy := true
	for i, l := range n.Layers {
		gl, ok := l.(gradLayer)
		if !ok {
			lazy = false
			break
		}
		for _, x := range gl.inputs() {
			last[x] = i
		}
	}
	p.clearBefore = make([][]*Value, len(n.Layers))
	p.assigned = make([][]*Value, len(n.Layers))
	for _, v := range n.Values {
		if v.Grad == nil {
			continue
		}
		i, used := last[v]
		// The loss writes Output's gradient between ZeroGrad and Backward,
		// so it must be cleared now, not later.
		if !lazy || !used || v == n.Output {
			p.eager = append(p.eager, v)
			continue
		}
		p.clearBefore[i] = append(p.clearBefore[i], v)
	}
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

// ZeroGrad clears the gradients of all values and parameters. Parameters and
// the output are cleared at once; every other value's gradient is cleared by
// the next Backward just before the first layer that writes into it (or that
// layer overwrites it), which saves a pass over memory. So between ZeroGrad
// and Backward only the parameters' and Output's gradients read as zero.
func (n *Network) ZeroGrad() {
	for _, p := range n.Params {
		clear(p.Grad)
	}
	if !n.planCurrent() {
		if n.fresh { // undo the old plan's assignments before replacing it
			for i, vs := range n.plan.assigned {
				for _, v := range vs {
					n.plan.layers[i].(gradLayer).setAssign(v, false)
				}
			}
			n.fresh = false
		}
		n.buildPlan()
	}
	for _, v := range n.plan.eager {
		clear(v.Grad)
	}
	if n.fresh {
		return // the assignments of the previous ZeroGrad still stand
	}
	for i, l := range n.Layers {
		vs := n.plan.clearBefore[i]
		if len(vs) == 0 {
			continue
		}
		gl := l.(gradLayer)
		// Partition in place, assigned values first, so that neither list
		// allocates.
		k := 0
		for j, v := range vs {
			if gl.setAssign(v, true) {
				vs[j], vs[k] = vs[k], vs[j]
				k++
			}
		}
		n.plan.assigned[i] = vs[:k]
	}
	n.fresh = true
}

// planCurrent reports whether the plan was built for the layers the network
// has now: callers (dynamic pruning) may replace or edit Layers between steps.
// Comparing every layer is a few hundred pointer compares per step.
func (n *Network) planCurrent() bool {
	p := &n.plan
	if p.clearBefore == nil || p.values != len(n.Values) || len(p.layers) != len(n.Layers) {
		return false
	}
	for i, l := range n.Layers {
		if p.layers[i] != l {
			return false
		}
	}
	return true
}

// Backward propagates Output.Grad (set by the loss) to every value and
// parameter, adding to what the gradients held. Call ZeroGrad first, and do
// not clear Output.Grad in between.
func (n *Network) Backward() {
	fresh := n.fresh
	for i := len(n.Layers) - 1; i >= 0; i-- {
		if fresh {
			for _, v := range n.plan.clearBefore[i][len(n.plan.assigned[i]):] {
				clear(v.Grad)
			}
		}
		n.Layers[i].Backward()
		if fresh {
			for _, v := range n.plan.assigned[i] {
				n.Layers[i].(gradLayer).setAssign(v, false)
			}
		}
	}
	n.fresh = false
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

// Every CPU layer lets the network defer clearing its inputs' gradients;
// one that did not would make ZeroGrad clear everything up front again.
var (
	_ gradLayer = (*bnLayer)(nil)
	_ gradLayer = (*reluLayer)(nil)
	_ gradLayer = (*poolLayer)(nil)
	_ gradLayer = (*globalAvgPoolLayer)(nil)
	_ gradLayer = (*addLayer)(nil)
	_ gradLayer = (*weightedSumLayer)(nil)
	_ gradLayer = (*copyLayer)(nil)
	_ gradLayer = (*conv)(nil)
	_ gradLayer = (*linearLayer)(nil)
	_ gradLayer = (*stochastic)(nil)
)
