package nn

import (
	"fmt"
	"slices"
	"strings"
)

// checkSameShape requires every input to be a valid feature value of xs[0]'s shape.
func checkSameShape(op string, xs []*Value) error {
	if len(xs) == 0 {
		return fmt.Errorf("%s: no inputs", op)
	}
	for i, x := range xs {
		if err := checkShape(op, x, false); err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
		if !slices.Equal(x.Shape, xs[0].Shape) {
			return fmt.Errorf("%s: input %s has shape %v, input %s has %v; all must match", op, x.Name, x.Shape, xs[0].Name, xs[0].Shape)
		}
	}
	return nil
}

func joinNames(xs []*Value) string {
	names := make([]string, len(xs))
	for i, x := range xs {
		names[i] = x.Name
	}
	return strings.Join(names, ",")
}

type addLayer struct {
	pool     *Pool
	xs       []*Value
	y        *Value
	per      int
	assign   []bool // per input: the next Backward overwrites its gradient
	fwd, bwd func(worker, n int)
}

// setAssignFirst marks x's first position in xs (a value may come twice;
// only its first writer may overwrite).
func setAssignFirst(xs []*Value, assign []bool, x *Value, on bool) bool {
	for j, v := range xs {
		if v == x {
			assign[j] = on
			return true
		}
	}
	return false
}

// Add sums inputs of equal shape (residual joins, cell nodes).
func (c *CPU) Add(xs []*Value) (Layer, error) {
	if err := checkSameShape("add", xs); err != nil {
		return nil, err
	}
	l := &addLayer{pool: c.Pool, xs: append([]*Value(nil), xs...), per: xs[0].PerSample(), assign: make([]bool, len(xs))}
	l.y = c.NewValue("add("+joinNames(xs)+")", xs[0].Shape, true)
	l.fwd = func(_, n int) {
		lo, hi := n*l.per, (n+1)*l.per
		y := l.y.Data[lo:hi]
		rest := l.xs[1:]
		if len(rest) == 0 {
			copy(y, l.xs[0].Data[lo:hi])
		} else {
			// One pass for the first two inputs (a residual join has no more).
			a, b := l.xs[0].Data[lo:hi], rest[0].Data[lo:hi]
			a, b = a[:len(y)], b[:len(y)]
			for i := range y {
				y[i] = a[i] + b[i]
			}
			rest = rest[1:]
		}
		for _, x := range rest {
			xs := x.Data[lo:hi]
			y := y[:len(xs)]
			for i, v := range xs {
				y[i] += v
			}
		}
	}
	l.bwd = func(_, n int) {
		lo, hi := n*l.per, (n+1)*l.per
		dy := l.y.Grad[lo:hi]
		for j, x := range l.xs {
			if x.Grad == nil {
				continue
			}
			dx := x.Grad[lo:hi]
			if l.assign[j] {
				copy(dx, dy)
				continue
			}
			dx = dx[:len(dy)]
			for i, g := range dy {
				dx[i] += g
			}
		}
	}
	return l, nil
}

func (l *addLayer) Forward(bool)     { l.pool.Run(l.y.N(), l.fwd) }
func (l *addLayer) Backward()        { l.pool.Run(l.y.N(), l.bwd) }
func (l *addLayer) Output() *Value   { return l.y }
func (l *addLayer) inputs() []*Value { return l.xs }
func (l *addLayer) setAssign(x *Value, on bool) bool {
	return setAssignFirst(l.xs, l.assign, x, on)
}

type weightedSumLayer struct {
	pool     *Pool
	xs       []*Value
	w        []*Param
	y        *Value
	per      int
	partial  []float64 // [sample][input] partial sums of dy*x_i for dw_i
	fwd, bwd func(worker, n int)
}

// WeightedSum is y = sum_i w_i x_i with scalar parameters w_i (architecture
// weights of a mixed operation). The w_i gradients are reduced per sample and
// then summed over samples in order, so they do not depend on the workers.
func (c *CPU) WeightedSum(xs []*Value, w []*Param) (Layer, error) {
	if err := checkSameShape("weightedsum", xs); err != nil {
		return nil, err
	}
	if len(w) != len(xs) {
		return nil, fmt.Errorf("weightedsum of %s: %d weights for %d inputs", joinNames(xs), len(w), len(xs))
	}
	for i, p := range w {
		if p == nil || len(p.Data) != 1 {
			return nil, fmt.Errorf("weightedsum of %s: weight %d must be a scalar param of shape [1]", joinNames(xs), i)
		}
	}
	k := len(xs)
	l := &weightedSumLayer{pool: c.Pool, xs: append([]*Value(nil), xs...), w: append([]*Param(nil), w...),
		per: xs[0].PerSample(), partial: make([]float64, xs[0].N()*k)}
	l.y = c.NewValue("weightedsum("+joinNames(xs)+")", xs[0].Shape, true)
	l.fwd = func(_, n int) {
		lo, hi := n*l.per, (n+1)*l.per
		y := l.y.Data[lo:hi]
		clear(y)
		for j, x := range l.xs {
			wj := l.w[j].Data[0]
			for i, v := range x.Data[lo:hi] {
				y[i] += wj * v
			}
		}
	}
	l.bwd = func(_, n int) {
		lo, hi := n*l.per, (n+1)*l.per
		dy := l.y.Grad[lo:hi]
		for j, x := range l.xs {
			var s float64
			for i, v := range x.Data[lo:hi] {
				s += float64(dy[i]) * float64(v)
			}
			l.partial[n*k+j] = s
			if x.Grad == nil {
				continue
			}
			wj, dx := l.w[j].Data[0], x.Grad[lo:hi]
			for i, g := range dy {
				dx[i] += wj * g
			}
		}
	}
	return l, nil
}

func (l *weightedSumLayer) Forward(bool) { l.pool.Run(l.y.N(), l.fwd) }

func (l *weightedSumLayer) Backward() {
	n, k := l.y.N(), len(l.xs)
	l.pool.Run(n, l.bwd)
	for j, p := range l.w {
		if p.Grad == nil {
			continue
		}
		var s float64
		for b := 0; b < n; b++ {
			s += l.partial[b*k+j]
		}
		p.Grad[0] += float32(s)
	}
}

func (l *weightedSumLayer) Output() *Value { return l.y }

func (l *weightedSumLayer) inputs() []*Value { return l.xs }

func (l *weightedSumLayer) setAssign(*Value, bool) bool { return false }

// copyLayer covers the kernels that only move whole channel blocks: each
// sample's output is a sequence of contiguous runs copied from the input
// (Concat, SliceChannels, PadChannels, ChannelShuffle).
type copyLayer struct {
	pool     *Pool
	xs       []*Value
	y        *Value
	runs     []channelRun
	zeroFrom int    // per-sample offset from which the output is zero (PadChannels)
	assign   []bool // per input: the next Backward overwrites its gradient
	// whole: per input, its runs cover it exactly once, so an overwriting
	// Backward can copy instead of clearing and adding.
	whole    []bool
	fwd, bwd func(worker, n int)
}

// channelRun copies length elements from input src at per-sample offset
// from to per-sample offset to of the output.
type channelRun struct {
	src, from, to, length int
}

func (c *CPU) newCopyLayer(name string, xs []*Value, shape []int, runs []channelRun) *copyLayer {
	l := &copyLayer{pool: c.Pool, xs: xs, runs: runs, assign: make([]bool, len(xs)), whole: make([]bool, len(xs))}
	for j, x := range xs {
		// The kernels' runs never overlap, so covering means summing to the size.
		n := 0
		for _, r := range runs {
			if r.src == j {
				n += r.length
			}
		}
		l.whole[j] = n == x.PerSample()
	}
	l.y = c.NewValue(name, shape, true)
	l.zeroFrom = l.y.PerSample()
	l.fwd = func(_, n int) {
		outPer := l.y.PerSample()
		y := l.y.Data[n*outPer : (n+1)*outPer]
		for _, r := range l.runs {
			x := l.xs[r.src]
			inPer := x.PerSample()
			copy(y[r.to:r.to+r.length], x.Data[n*inPer+r.from:n*inPer+r.from+r.length])
		}
		clear(y[l.zeroFrom:])
	}
	l.bwd = func(_, n int) {
		outPer := l.y.PerSample()
		dy := l.y.Grad[n*outPer : (n+1)*outPer]
		for j, x := range l.xs {
			// Runs need not cover the input (slices), so overwriting is a
			// clear of this sample's gradient, in cache, before the adds.
			if l.assign[j] && !l.whole[j] && x.Grad != nil {
				inPer := x.PerSample()
				clear(x.Grad[n*inPer : (n+1)*inPer])
			}
		}
		for _, r := range l.runs {
			x := l.xs[r.src]
			if x.Grad == nil {
				continue
			}
			inPer := x.PerSample()
			dx := x.Grad[n*inPer+r.from : n*inPer+r.from+r.length]
			g := dy[r.to : r.to+r.length]
			if l.assign[r.src] && l.whole[r.src] {
				copy(dx, g)
				continue
			}
			g = g[:len(dx)]
			for i, v := range g {
				dx[i] += v
			}
		}
	}
	return l
}

func (l *copyLayer) Forward(bool)     { l.pool.Run(l.y.N(), l.fwd) }
func (l *copyLayer) Backward()        { l.pool.Run(l.y.N(), l.bwd) }
func (l *copyLayer) Output() *Value   { return l.y }
func (l *copyLayer) inputs() []*Value { return l.xs }
func (l *copyLayer) setAssign(x *Value, on bool) bool {
	return setAssignFirst(l.xs, l.assign, x, on)
}

// Concat joins inputs along the channel axis; batch and spatial sizes must agree.
func (c *CPU) Concat(xs []*Value) (Layer, error) {
	if len(xs) == 0 {
		return nil, fmt.Errorf("concat: no inputs")
	}
	total := 0
	var runs []channelRun
	for i, x := range xs {
		if err := checkShape("concat", x, false); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		f := xs[0]
		if len(x.Shape) != len(f.Shape) || x.N() != f.N() || x.H() != f.H() || x.W() != f.W() {
			return nil, fmt.Errorf("concat: input %s has shape %v, input %s has %v; only channels may differ", x.Name, x.Shape, f.Name, f.Shape)
		}
		hw := x.H() * x.W()
		runs = append(runs, channelRun{src: i, from: 0, to: total * hw, length: x.C() * hw})
		total += x.C()
	}
	return c.newCopyLayer("concat("+joinNames(xs)+")", append([]*Value(nil), xs...), withChannels(xs[0], total), runs), nil
}

// SliceChannels keeps channels [start, end) (channel split).
func (c *CPU) SliceChannels(x *Value, start, end int) (Layer, error) {
	if err := checkShape("slicechannels", x, false); err != nil {
		return nil, err
	}
	if start < 0 || end > x.C() || start >= end {
		return nil, fmt.Errorf("slicechannels on %s: range [%d,%d) is not a non-empty part of its %d channels", x.Name, start, end, x.C())
	}
	hw := x.H() * x.W()
	runs := []channelRun{{from: start * hw, to: 0, length: (end - start) * hw}}
	name := fmt.Sprintf("slice(%s,%d:%d)", x.Name, start, end)
	return c.newCopyLayer(name, []*Value{x}, withChannels(x, end-start), runs), nil
}

// PadChannels appends zero channels up to outC (PyramidNet's shortcut when
// the residual branch widens).
func (c *CPU) PadChannels(x *Value, outC int) (Layer, error) {
	if err := checkShape("padchannels", x, false); err != nil {
		return nil, err
	}
	if outC < x.C() {
		return nil, fmt.Errorf("padchannels on %s: target %d channels is fewer than its %d", x.Name, outC, x.C())
	}
	per := x.PerSample()
	l := c.newCopyLayer(fmt.Sprintf("pad(%s,%d)", x.Name, outC), []*Value{x}, withChannels(x, outC),
		[]channelRun{{length: per}})
	l.zeroFrom = per
	return l, nil
}

// ChannelShuffle (ShuffleNet) views the channels as [groups, C/groups],
// transposes to [C/groups, groups] and flattens back: output channel
// j*groups+i is input channel i*(C/groups)+j.
func (c *CPU) ChannelShuffle(x *Value, groups int) (Layer, error) {
	if err := checkShape("channelshuffle", x, false); err != nil {
		return nil, err
	}
	if groups < 1 || x.C()%groups != 0 {
		return nil, fmt.Errorf("channelshuffle on %s: %d groups do not divide its %d channels", x.Name, groups, x.C())
	}
	hw, per := x.H()*x.W(), x.C()/groups
	runs := make([]channelRun, 0, x.C())
	for j := 0; j < per; j++ {
		for i := 0; i < groups; i++ {
			runs = append(runs, channelRun{from: (i*per + j) * hw, to: (j*groups + i) * hw, length: hw})
		}
	}
	name := fmt.Sprintf("shuffle(%s,%d)", x.Name, groups)
	return c.newCopyLayer(name, []*Value{x}, x.Shape, runs), nil
}
