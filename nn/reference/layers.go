package reference

import (
	"fmt"
	"slices"
	"strings"

	"bayesnas/nn"
)

// ---------------------------------------------------------------------------
// Pooling

// MaxPool: y[n,c,i,j] = max over the window's real inputs
// x[n,c,i*S-P+p, j*S-P+q], p,q < K (padding never wins); Backward adds
// dy[n,c,i,j] to the input that won (the first maximum in row-major
// window order). The output size is nn.PoolOutSize (floor, or ceil mode).
func (*Backend) MaxPool(x *nn.Value, a nn.PoolAttrs) (nn.Layer, error) {
	return newPool("maxpool", x, a, true)
}

// AvgPool: y[n,c,i,j] = (sum of the window's real inputs) / d, with
// d = K*K when CountIncludePad and the number of real inputs otherwise;
// Backward adds dy[n,c,i,j]/d to each of them.
func (*Backend) AvgPool(x *nn.Value, a nn.PoolAttrs) (nn.Layer, error) {
	return newPool("avgpool", x, a, false)
}

func newPool(op string, x *nn.Value, a nn.PoolAttrs, isMax bool) (nn.Layer, error) {
	if err := checkInput(op, x, true); err != nil {
		return nil, err
	}
	switch {
	case a.Kernel < 1 || a.Stride < 1:
		return nil, fmt.Errorf("%s on %s: kernel %d and stride %d must be positive", op, x.Name, a.Kernel, a.Stride)
	case a.Pad < 0 || 2*a.Pad > a.Kernel:
		return nil, fmt.Errorf("%s on %s: pad %d must be in [0, kernel/2 = %d]", op, x.Name, a.Pad, a.Kernel/2)
	case a.CeilMode && a.CountIncludePad:
		return nil, fmt.Errorf("%s on %s: ceil mode with count_include_pad is not supported", op, x.Name)
	}
	oh := nn.PoolOutSize(x.H(), a.Kernel, a.Stride, a.Pad, a.CeilMode)
	ow := nn.PoolOutSize(x.W(), a.Kernel, a.Stride, a.Pad, a.CeilMode)
	if oh < 1 || ow < 1 {
		return nil, fmt.Errorf("%s on %s: kernel %d does not fit the padded %dx%d input", op, x.Name, a.Kernel, x.H(), x.W())
	}
	l := &pool{x: x, a: a, isMax: isMax}
	l.y = nn.NewValue(fmt.Sprintf("%s(%s)", op, x.Name), []int{x.N(), x.C(), oh, ow}, true)
	return l, nil
}

type pool struct {
	x, y  *nn.Value
	a     nn.PoolAttrs
	isMax bool
}

func (l *pool) Output() *nn.Value { return l.y }

// window returns the offsets of the real inputs of output (i, j) in plane
// (n, c), in row-major window order.
func (l *pool) window(n, c, i, j int) []int {
	var ks []int
	for p := 0; p < l.a.Kernel; p++ {
		for q := 0; q < l.a.Kernel; q++ {
			iy, ix := i*l.a.Stride-l.a.Pad+p, j*l.a.Stride-l.a.Pad+q
			if iy >= 0 && iy < l.x.H() && ix >= 0 && ix < l.x.W() {
				ks = append(ks, at4(n, c, iy, ix, l.x.C(), l.x.H(), l.x.W()))
			}
		}
	}
	return ks
}

// each calls f for every output element with its offset and window.
func (l *pool) each(f func(out int, window []int)) {
	N, C, OH, OW := l.y.N(), l.y.C(), l.y.H(), l.y.W()
	for n := 0; n < N; n++ {
		for c := 0; c < C; c++ {
			for i := 0; i < OH; i++ {
				for j := 0; j < OW; j++ {
					f(at4(n, c, i, j, C, OH, OW), l.window(n, c, i, j))
				}
			}
		}
	}
}

func (l *pool) divisor(window []int) float64 {
	if l.a.CountIncludePad {
		return float64(l.a.Kernel * l.a.Kernel)
	}
	return float64(len(window))
}

func (l *pool) argmax(window []int) int {
	best := window[0]
	for _, k := range window[1:] {
		if l.x.Data[k] > l.x.Data[best] {
			best = k
		}
	}
	return best
}

func (l *pool) Forward(bool) {
	l.each(func(out int, window []int) {
		if l.isMax {
			l.y.Data[out] = l.x.Data[l.argmax(window)]
			return
		}
		var s float64
		for _, k := range window {
			s += float64(l.x.Data[k])
		}
		l.y.Data[out] = float32(s / l.divisor(window))
	})
}

func (l *pool) Backward() {
	if l.x.Grad == nil {
		return
	}
	l.each(func(out int, window []int) {
		g := l.y.Grad[out]
		if l.isMax {
			l.x.Grad[l.argmax(window)] += g
			return
		}
		for _, k := range window {
			l.x.Grad[k] += float32(float64(g) / l.divisor(window))
		}
	})
}

// GlobalAvgPool: y[n,c] = mean over positions of x[n,c] ([N,C,1,1]);
// Backward adds dy[n,c]/(H*W) to every position.
func (*Backend) GlobalAvgPool(x *nn.Value) (nn.Layer, error) {
	if err := checkInput("globalavgpool", x, true); err != nil {
		return nil, err
	}
	l := &globalAvgPool{x: x}
	l.y = nn.NewValue("globalavgpool("+x.Name+")", []int{x.N(), x.C(), 1, 1}, true)
	return l, nil
}

type globalAvgPool struct{ x, y *nn.Value }

func (l *globalAvgPool) Output() *nn.Value { return l.y }

func (l *globalAvgPool) Forward(bool) {
	hw := l.x.H() * l.x.W()
	for p := 0; p < l.x.N()*l.x.C(); p++ {
		var s float64
		for i := 0; i < hw; i++ {
			s += float64(l.x.Data[p*hw+i])
		}
		l.y.Data[p] = float32(s / float64(hw))
	}
}

func (l *globalAvgPool) Backward() {
	if l.x.Grad == nil {
		return
	}
	hw := l.x.H() * l.x.W()
	for p := 0; p < l.x.N()*l.x.C(); p++ {
		g := float32(float64(l.y.Grad[p]) / float64(hw))
		for i := 0; i < hw; i++ {
			l.x.Grad[p*hw+i] += g
		}
	}
}

// ---------------------------------------------------------------------------
// Elementwise and dense

// ReLU: y = max(x, 0); dx += dy where y > 0.
func (*Backend) ReLU(x *nn.Value) (nn.Layer, error) {
	if err := checkInput("relu", x, false); err != nil {
		return nil, err
	}
	l := &relu{x: x}
	l.y = nn.NewValue("relu("+x.Name+")", x.Shape, true)
	return l, nil
}

type relu struct{ x, y *nn.Value }

func (l *relu) Output() *nn.Value { return l.y }

func (l *relu) Forward(bool) {
	for i, v := range l.x.Data {
		l.y.Data[i] = max(v, 0)
	}
}

func (l *relu) Backward() {
	if l.x.Grad == nil {
		return
	}
	for i, v := range l.y.Data {
		if v > 0 {
			l.x.Grad[i] += l.y.Grad[i]
		}
	}
}

// Linear: with x read as [N, In] (In = C*H*W), W [Out, In], b [Out] or nil,
//
//	y[n,o] = b[o] + sum_i x[n,i] W[o,i];
//	dx[n,i] += sum_o dy[n,o] W[o,i],  dW[o,i] += sum_n dy[n,o] x[n,i],  db[o] += sum_n dy[n,o].
func (*Backend) Linear(x *nn.Value, w, b *nn.Param) (nn.Layer, error) {
	if err := checkInput("linear", x, false); err != nil {
		return nil, err
	}
	in := x.PerSample()
	if w == nil || len(w.Shape) != 2 || w.Shape[1] != in || w.Shape[0] < 1 || len(w.Data) != w.Shape[0]*in {
		var shape []int
		if w != nil {
			shape = w.Shape
		}
		return nil, fmt.Errorf("linear on %s: weight shape %v, want [Out, %d] (input %v flattened)", x.Name, shape, in, x.Shape)
	}
	if b != nil && len(b.Data) != w.Shape[0] {
		return nil, fmt.Errorf("linear on %s: bias %s has %d elements, want %d", x.Name, b.Name, len(b.Data), w.Shape[0])
	}
	l := &linear{x: x, w: w, b: b, in: in, out: w.Shape[0]}
	l.y = nn.NewValue("linear("+x.Name+")", []int{x.N(), l.out}, true)
	return l, nil
}

type linear struct {
	x, y    *nn.Value
	w, b    *nn.Param
	in, out int
}

func (l *linear) Output() *nn.Value { return l.y }

func (l *linear) Forward(bool) {
	for n := 0; n < l.x.N(); n++ {
		for o := 0; o < l.out; o++ {
			var s float64
			if l.b != nil {
				s = float64(l.b.Data[o])
			}
			for i := 0; i < l.in; i++ {
				s += float64(l.x.Data[n*l.in+i]) * float64(l.w.Data[o*l.in+i])
			}
			l.y.Data[n*l.out+o] = float32(s)
		}
	}
}

func (l *linear) Backward() {
	N, dy := l.x.N(), l.y.Grad
	if l.x.Grad != nil {
		for n := 0; n < N; n++ {
			for i := 0; i < l.in; i++ {
				var s float64
				for o := 0; o < l.out; o++ {
					s += float64(dy[n*l.out+o]) * float64(l.w.Data[o*l.in+i])
				}
				l.x.Grad[n*l.in+i] += float32(s)
			}
		}
	}
	for o := 0; o < l.out; o++ {
		if l.w.Grad != nil {
			for i := 0; i < l.in; i++ {
				var s float64
				for n := 0; n < N; n++ {
					s += float64(dy[n*l.out+o]) * float64(l.x.Data[n*l.in+i])
				}
				l.w.Grad[o*l.in+i] += float32(s)
			}
		}
		if l.b != nil && l.b.Grad != nil {
			var s float64
			for n := 0; n < N; n++ {
				s += float64(dy[n*l.out+o])
			}
			l.b.Grad[o] += float32(s)
		}
	}
}

// ---------------------------------------------------------------------------
// Joins

func sameShapes(op string, xs []*nn.Value) error {
	if len(xs) == 0 {
		return fmt.Errorf("%s: no inputs", op)
	}
	for i, x := range xs {
		if err := checkInput(op, x, false); err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
		if !slices.Equal(x.Shape, xs[0].Shape) {
			return fmt.Errorf("%s: input %s has shape %v, input %s has %v; all must match", op, x.Name, x.Shape, xs[0].Name, xs[0].Shape)
		}
	}
	return nil
}

func names(xs []*nn.Value) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.Name
	}
	return strings.Join(s, ",")
}

// Add: y = sum_j x_j (equal shapes); dx_j += dy.
func (b *Backend) Add(xs []*nn.Value) (nn.Layer, error) {
	l, err := b.weightedSum("add", xs, nil)
	if err != nil {
		return nil, err
	}
	return add{l}, nil
}

// add is a sum without weights; it has no per-sample weight gradients.
type add struct{ s *sum }

func (l add) Forward(train bool) { l.s.Forward(train) }
func (l add) Backward()          { l.s.Backward() }
func (l add) Output() *nn.Value  { return l.s.Output() }

// WeightedSum: y = sum_j w_j x_j with scalar parameters w_j;
// dx_j += w_j dy, dw_j += sum_n g[n,j] with the per-sample gradients
// g[n,j] = <dy_n, x_{n,j}> kept for nn.PerSampleWeightGrads.
func (b *Backend) WeightedSum(xs []*nn.Value, w []*nn.Param) (nn.Layer, error) {
	if len(w) != len(xs) {
		return nil, fmt.Errorf("weightedsum of %s: %d weights for %d inputs", names(xs), len(w), len(xs))
	}
	for i, p := range w {
		if p == nil || len(p.Data) != 1 {
			return nil, fmt.Errorf("weightedsum of %s: weight %d must be a scalar param of shape [1]", names(xs), i)
		}
	}
	l, err := b.weightedSum("weightedsum", xs, w)
	if err != nil {
		return nil, err // not a nil *sum in a non-nil interface
	}
	return l, nil
}

func (*Backend) weightedSum(op string, xs []*nn.Value, w []*nn.Param) (*sum, error) {
	if err := sameShapes(op, xs); err != nil {
		return nil, err
	}
	l := &sum{xs: slices.Clone(xs), w: slices.Clone(w)}
	if w != nil {
		l.perSample = make([]float64, xs[0].N()*len(xs))
	}
	l.y = nn.NewValue(op+"("+names(xs)+")", xs[0].Shape, true)
	return l, nil
}

type sum struct {
	xs        []*nn.Value
	w         []*nn.Param // nil: a plain sum
	y         *nn.Value
	perSample []float64 // [n][j]
}

func (l *sum) Output() *nn.Value { return l.y }

func (l *sum) weight(j int) float32 {
	if l.w == nil {
		return 1
	}
	return l.w[j].Data[0]
}

func (l *sum) Forward(bool) {
	for i := range l.y.Data {
		var s float64
		for j, x := range l.xs {
			s += float64(l.weight(j)) * float64(x.Data[i])
		}
		l.y.Data[i] = float32(s)
	}
}

func (l *sum) Backward() {
	for j, x := range l.xs {
		if x.Grad != nil {
			for i, g := range l.y.Grad {
				x.Grad[i] += l.weight(j) * g
			}
		}
	}
	if l.w == nil {
		return
	}
	N, per, k := l.y.N(), l.y.PerSample(), len(l.xs)
	for j, x := range l.xs {
		var total float64
		for n := 0; n < N; n++ {
			var s float64
			for i := n * per; i < (n+1)*per; i++ {
				s += float64(l.y.Grad[i]) * float64(x.Data[i])
			}
			l.perSample[n*k+j] = s
			total += s
		}
		if l.w[j].Grad != nil {
			l.w[j].Grad[0] += float32(total)
		}
	}
}

// PerSampleWeightGrads returns the weights and g[n*len(w)+j] of the last
// Backward (nn.PerSampleWeighter).
func (l *sum) PerSampleWeightGrads() ([]*nn.Param, []float64) {
	return l.w, l.perSample[:l.y.N()*len(l.w)]
}

var _ nn.PerSampleWeighter = (*sum)(nil)

// ---------------------------------------------------------------------------
// Channel moves: each output channel is a copy of one input channel, or zero.

// source is where an output channel comes from: input in, channel c; in < 0
// is a zero channel.
type source struct{ in, c int }

type channelMap struct {
	xs  []*nn.Value
	y   *nn.Value
	src []source // per output channel
}

func (l *channelMap) Output() *nn.Value { return l.y }

// plane is the offset and length of channel c of sample n of v.
func plane(v *nn.Value, n, c int) (int, int) {
	hw := v.PerSample() / v.C()
	return (n*v.C() + c) * hw, hw
}

func (l *channelMap) Forward(bool) {
	for n := 0; n < l.y.N(); n++ {
		for c, s := range l.src {
			off, hw := plane(l.y, n, c)
			if s.in < 0 {
				clear(l.y.Data[off : off+hw])
				continue
			}
			from, _ := plane(l.xs[s.in], n, s.c)
			copy(l.y.Data[off:off+hw], l.xs[s.in].Data[from:from+hw])
		}
	}
}

func (l *channelMap) Backward() {
	for n := 0; n < l.y.N(); n++ {
		for c, s := range l.src {
			if s.in < 0 || l.xs[s.in].Grad == nil {
				continue
			}
			off, hw := plane(l.y, n, c)
			from, _ := plane(l.xs[s.in], n, s.c)
			for i := 0; i < hw; i++ {
				l.xs[s.in].Grad[from+i] += l.y.Grad[off+i]
			}
		}
	}
}

func newChannelMap(name string, xs []*nn.Value, src []source) *channelMap {
	shape := slices.Clone(xs[0].Shape)
	shape[1] = len(src)
	return &channelMap{xs: slices.Clone(xs), src: src, y: nn.NewValue(name, shape, true)}
}

// Concat: the inputs' channels one after another (batch and positions
// must agree); each input's gradient is its block of dy.
func (*Backend) Concat(xs []*nn.Value) (nn.Layer, error) {
	if len(xs) == 0 {
		return nil, fmt.Errorf("concat: no inputs")
	}
	var src []source
	for i, x := range xs {
		if err := checkInput("concat", x, false); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		f := xs[0]
		if len(x.Shape) != len(f.Shape) || x.N() != f.N() || x.H() != f.H() || x.W() != f.W() {
			return nil, fmt.Errorf("concat: input %s has shape %v, input %s has %v; only channels may differ", x.Name, x.Shape, f.Name, f.Shape)
		}
		for c := 0; c < x.C(); c++ {
			src = append(src, source{i, c})
		}
	}
	return newChannelMap("concat("+names(xs)+")", xs, src), nil
}

// SliceChannels: channels [start, end) of x.
func (*Backend) SliceChannels(x *nn.Value, start, end int) (nn.Layer, error) {
	if err := checkInput("slicechannels", x, false); err != nil {
		return nil, err
	}
	if start < 0 || end > x.C() || start >= end {
		return nil, fmt.Errorf("slicechannels on %s: range [%d,%d) is not a non-empty part of its %d channels", x.Name, start, end, x.C())
	}
	var src []source
	for c := start; c < end; c++ {
		src = append(src, source{0, c})
	}
	return newChannelMap(fmt.Sprintf("slice(%s,%d:%d)", x.Name, start, end), []*nn.Value{x}, src), nil
}

// PadChannels: x's channels, then zero channels up to outC.
func (*Backend) PadChannels(x *nn.Value, outC int) (nn.Layer, error) {
	if err := checkInput("padchannels", x, false); err != nil {
		return nil, err
	}
	if outC < x.C() {
		return nil, fmt.Errorf("padchannels on %s: target %d channels is fewer than its %d", x.Name, outC, x.C())
	}
	src := make([]source, outC)
	for c := range src {
		src[c] = source{-1, 0}
		if c < x.C() {
			src[c] = source{0, c}
		}
	}
	return newChannelMap(fmt.Sprintf("pad(%s,%d)", x.Name, outC), []*nn.Value{x}, src), nil
}

// ChannelShuffle: with C = G*P channels viewed as [G, P], output channel
// j*G + i is input channel i*P + j (transpose to [P, G]).
func (*Backend) ChannelShuffle(x *nn.Value, groups int) (nn.Layer, error) {
	if err := checkInput("channelshuffle", x, false); err != nil {
		return nil, err
	}
	if groups < 1 || x.C()%groups != 0 {
		return nil, fmt.Errorf("channelshuffle on %s: %d groups do not divide its %d channels", x.Name, groups, x.C())
	}
	per := x.C() / groups
	src := make([]source, x.C())
	for j := 0; j < per; j++ {
		for i := 0; i < groups; i++ {
			src[j*groups+i] = source{0, i*per + j}
		}
	}
	return newChannelMap(fmt.Sprintf("shuffle(%s,%d)", x.Name, groups), []*nn.Value{x}, src), nil
}

// ---------------------------------------------------------------------------
// Stochastic layers

// Dropout: in training, element i of the current batch is kept when
// nn.DropKeep(seed, step, i, p) and then scaled by 1/(1-p), else zeroed;
// step is the layer's counter, which each training forward advances
// (unless frozen). Evaluation is the identity. Backward applies the same
// mask and scale to dy.
func (*Backend) Dropout(x *nn.Value, p float32, seed uint64) (nn.Layer, error) {
	return newStochastic("dropout", x, p, seed, false)
}

// DropPath: as Dropout with one draw per sample, nn.DropKeep(seed, step,
// n, p), keeping or zeroing the whole sample (stochastic depth).
func (*Backend) DropPath(x *nn.Value, p float32, seed uint64) (nn.Layer, error) {
	return newStochastic("droppath", x, p, seed, true)
}

func newStochastic(op string, x *nn.Value, p float32, seed uint64, perSample bool) (nn.Layer, error) {
	if err := checkInput(op, x, false); err != nil {
		return nil, err
	}
	if !(p >= 0 && p < 1) {
		return nil, fmt.Errorf("%s on %s: drop probability %g must be in [0,1)", op, x.Name, p)
	}
	l := &stochastic{x: x, p: p, seed: seed, perSample: perSample}
	l.y = nn.NewValue(op+"("+x.Name+")", x.Shape, true)
	return l, nil
}

type stochastic struct {
	x, y          *nn.Value
	p             float32
	seed, step    uint64
	perSample     bool
	frozen, train bool
	used          uint64 // the counter the last training forward drew with
}

func (l *stochastic) Output() *nn.Value   { return l.y }
func (l *stochastic) Step() uint64        { return l.step }
func (l *stochastic) SetStep(step uint64) { l.step = step }
func (l *stochastic) Freeze(frozen bool)  { l.frozen = frozen }

// scale is the factor element i gets under the mask drawn at counter used.
func (l *stochastic) scale(i int) float32 {
	idx := i
	if l.perSample {
		idx = i / l.x.PerSample()
	}
	if !nn.DropKeep(l.seed, l.used, idx, l.p) {
		return 0
	}
	return 1 / (1 - l.p)
}

func (l *stochastic) Forward(train bool) {
	l.train = train
	if !train {
		copy(l.y.Data, l.x.Data)
		return
	}
	l.used = l.step
	if !l.frozen {
		l.step++
	}
	for i, v := range l.x.Data {
		l.y.Data[i] = 0 // dropped: zero even where x is not finite
		if s := l.scale(i); s != 0 {
			l.y.Data[i] = v * s
		}
	}
}

func (l *stochastic) Backward() {
	if l.x.Grad == nil {
		return
	}
	for i, g := range l.y.Grad {
		if l.train {
			s := l.scale(i)
			if s == 0 {
				continue
			}
			g *= s
		}
		l.x.Grad[i] += g
	}
}

var _ nn.Stochastic = (*stochastic)(nil)
