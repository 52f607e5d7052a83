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
	// zeroer is the backend's gradient clearing, nil for the host loops;
	// resolved with the plan so a step asserts no interface.
	zeroer GradZeroer
	// fresh: ZeroGrad ran and the next Backward is the first since, so the
	// value gradients it left to the backward pass are still to be cleared.
	fresh bool
}

// GradLayer is a layer that lets the network defer clearing the gradients
// of its inputs to the backward pass, which saves a pass over memory per
// step. A backend's layers implement it in any package; a network with a
// layer that does not clears every gradient in ZeroGrad instead.
type GradLayer interface {
	Layer
	// GradInputs lists the values whose gradients Backward adds into.
	GradInputs() []*Value
	// SetGradAssign switches the layer's next Backward to overwriting x's
	// gradient instead of adding into it (clearing each piece just before
	// it adds, while it is in cache). It reports false when the layer
	// cannot; the network then clears x's gradient just before the layer's
	// Backward.
	SetGradAssign(x *Value, on bool) bool
}

// GradZeroer is a backend that clears gradients in its own storage; without
// it the network clears the host slices.
type GradZeroer interface {
	// ZeroGrads clears the gradients of ps and of vs (each over its
	// current batch).
	ZeroGrads(ps []*Param, vs []*Value)
}

// gradLayer is GradLayer as the CPU backend's layers implement it
// (unexported methods, so the CPU kernels' files need no exported surface);
// gradAdapter gives it a GradLayer from another package.
type gradLayer interface {
	inputs() []*Value
	setAssign(x *Value, on bool) bool
}

type gradAdapter struct{ l GradLayer }

func (a gradAdapter) inputs() []*Value                 { return a.l.GradInputs() }
func (a gradAdapter) setAssign(x *Value, on bool) bool { return a.l.SetGradAssign(x, on) }

// asGradLayer resolves a layer's deferred-clearing methods, if it has them.
func asGradLayer(l Layer) (gradLayer, bool) {
	if gl, ok := l.(gradLayer); ok {
		return gl, true
	}
	if gl, ok := l.(GradLayer); ok {
		return gradAdapter{gl}, true
	}
	return nil, false
}

// gradPlan says, for every layer, which value gradients start in its
// backward: those of the inputs whose last consumer in forward order it is.
type gradPlan struct {
	layers      []Layer     // the layers it was built for, in order
	grads       []gradLayer // their deferred-clearing methods (nil when not lazy)
	values      int
	eager       []*Value // cleared by ZeroGrad itself
	clearBefore [][]*Value
	assigned    [][]*Value // the layer overwrites them when fresh
}

func (n *Network) buildPlan() {
	p := &n.plan
	*p = gradPlan{layers: append([]Layer(nil), n.Layers...), values: len(n.Values)}
	n.zeroer, _ = n.Backend.(GradZeroer)
	last := make(map[*Value]int)
	lazy := true
	p.grads = make([]gradLayer, len(n.Layers))
	for i, l := range n.Layers {
		gl, ok := asGradLayer(l)
		if !ok {
			lazy = false
			break
		}
		p.grads[i] = gl
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
	if !n.planCurrent() {
		if n.fresh { // undo the old plan's assignments before replacing it
			for i, vs := range n.plan.assigned {
				for _, v := range vs {
					n.plan.grads[i].setAssign(v, false)
				}
			}
			n.fresh = false
		}
		n.buildPlan()
	}
	if n.zeroer != nil {
		n.zeroer.ZeroGrads(n.Params, n.plan.eager)
	} else {
		for _, p := range n.Params {
			clear(p.Grad)
		}
		for _, v := range n.plan.eager {
			clear(v.Grad)
		}
	}
	if n.fresh {
		return // the assignments of the previous ZeroGrad still stand
	}
	for i := range n.Layers {
		vs := n.plan.clearBefore[i]
		if len(vs) == 0 {
			continue
		}
		gl := n.plan.grads[i]
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
			if vs := n.plan.clearBefore[i][len(n.plan.assigned[i]):]; n.zeroer != nil {
				if len(vs) > 0 {
					n.zeroer.ZeroGrads(nil, vs)
				}
			} else {
				for _, v := range vs {
					clear(v.Grad)
				}
			}
		}
		n.Layers[i].Backward()
		if fresh {
			for _, v := range n.plan.assigned[i] {
				n.plan.grads[i].setAssign(v, false)
			}
		}
	}
	n.fresh = false
}

// Loss is l on the network's output for labels (the current batch),
// computed by the backend when it implements LossKernel; it writes the
// output's gradient for Backward.
func (n *Network) Loss(l SoftmaxCrossEntropy, labels []int32) (meanLoss float64, correct int, err error) {
	return l.ForwardOn(n.Backend, n.Output, labels)
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
