package nntest

import (
	"math"
	"math/rand/v2"
	"testing"

	"bayesnas/nn"
)

// smallNet is a network assembled by hand from a backend's layers: a conv
// stem, batch norm, ReLU, a residual join of a depthwise branch mixed by
// architecture weights with the identity, global pooling and a linear head.
type smallNet struct {
	net    *nn.Network
	labels []int32
}

func newSmallNet(t *testing.T, be nn.Backend, seed uint64) *smallNet {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 17))
	const n, c = 4, 6
	x := NewInput(be, rng, "x", n, 2, 7, 7)
	net := &nn.Network{Backend: be, Input: x, Values: []*nn.Value{x}}
	add := func(ps ...*nn.Param) func(nn.Layer, error) *nn.Value {
		return func(l nn.Layer, err error) *nn.Value {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			net.Layers = append(net.Layers, l)
			net.Values = append(net.Values, l.Output())
			net.Params = append(net.Params, ps...)
			return l.Output()
		}
	}
	param := func(name string, kind nn.ParamKind, scale float32, shape ...int) *nn.Param {
		p := be.NewParam(name, kind, shape...)
		FillParam(rng, p, scale)
		return p
	}
	w0, b0 := param("stem.w", nn.Weight, 0.5, c, 2, 3, 3), param("stem.b", nn.NoDecay, 0.1, c)
	h := add(w0, b0)(be.Conv2D(x, w0, b0, Attrs(c, 3, 2, 1, 1, 1)))
	gamma, beta := param("bn.gamma", nn.NoDecay, 0.2, c), param("bn.beta", nn.NoDecay, 0.2, c)
	for i := range gamma.Data {
		gamma.Data[i] += 1 // FillParam left the host copy current
	}
	gamma.Commit()
	rm, rv := be.NewParam("bn.running_mean", nn.Buffer, c), be.NewParam("bn.running_var", nn.Buffer, c)
	for i := range rv.Data { // every element: nothing stale is committed
		rv.Data[i] = 1
	}
	rv.Commit()
	h = add(gamma, beta, rm, rv)(be.BatchNorm(h, gamma, beta, rm, rv, nn.BNAttrs{Eps: 1e-5, Momentum: 0.1}))
	h = add()(be.ReLU(h))
	wd := param("dw.w", nn.Weight, 0.5, c, 1, 3, 3)
	d := add(wd)(be.Conv2D(h, wd, nil, Attrs(c, 3, 1, 1, 1, c)))
	a0, a1 := param("mix.w0", nn.ArchVar, 1, 1), param("mix.w1", nn.ArchVar, 1, 1)
	h = add(a0, a1)(be.WeightedSum([]*nn.Value{d, h}, []*nn.Param{a0, a1}))
	h = add()(be.AvgPool(h, nn.PoolAttrs{Kernel: 2, Stride: 2, CeilMode: true}))
	h = add()(be.GlobalAvgPool(h))
	wf, bf := param("fc.w", nn.Weight, 0.5, 3, c), param("fc.b", nn.NoDecay, 0.1, 3)
	net.Output = add(wf, bf)(be.Linear(h, wf, bf))
	labels := make([]int32, n)
	for i := range labels {
		labels[i] = int32(rng.IntN(3))
	}
	return &smallNet{net: net, labels: labels}
}

// step runs ZeroGrad, a training forward, the loss and Backward.
func (s *smallNet) step(t *testing.T) float64 {
	t.Helper()
	s.net.ZeroGrad()
	s.net.Forward(true)
	loss, _, err := s.net.Loss(nn.SoftmaxCrossEntropy{}, s.labels)
	if err != nil {
		t.Fatal(err)
	}
	s.net.Backward()
	return loss
}

// evalLoss is the loss of a training-mode forward without gradients,
// restoring the running statistics it moved.
func (s *smallNet) evalLoss(t *testing.T) float64 {
	var saved [][]float32
	for _, p := range s.net.Params {
		if !p.Trainable() {
			saved = append(saved, append([]float32(nil), p.Host()...))
		}
	}
	s.net.Forward(true)
	// A host value over a copy of the logits: the loss without writing
	// the network's output gradient.
	logits := &nn.Value{Name: "logits", Shape: s.net.Output.Shape, Data: append([]float32(nil), s.net.Output.Host()...)}
	loss, _, err := (&nn.SoftmaxCrossEntropy{}).Forward(logits, s.labels)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for _, p := range s.net.Params {
		if !p.Trainable() {
			p.SetHost(saved[i])
			i++
		}
	}
	return loss
}

// testNetwork: the gradients a network of the backend's layers leaves
// after ZeroGrad/Forward/loss/Backward match finite differences of the
// loss, are the same when the step repeats (gradients cleared, not
// accumulated across steps), and SGD steps lower the loss.
func testNetwork(t *testing.T, be nn.Backend) {
	s := newSmallNet(t, be, 1)
	first := s.step(t)
	grads := make([][]float32, len(s.net.Params))
	for i, p := range s.net.Params {
		grads[i] = append([]float32(nil), p.HostGrad()...)
	}
	if again := s.step(t); again != first || math.IsNaN(first) {
		t.Fatalf("the same step gave loss %g, then %g", first, again)
	}
	for i, p := range s.net.Params {
		for j, g := range p.HostGrad() {
			if math.Float32bits(g) != math.Float32bits(grads[i][j]) || math.IsNaN(float64(g)) {
				t.Fatalf("%s[%d]: gradient %g on the first step, %g on the repeat (not cleared?)", p.Name, j, grads[i][j], g)
			}
		}
	}
	rng := rand.New(rand.NewPCG(2, 3))
	const eps = 1e-2
	for i, p := range s.net.Params {
		if !p.Trainable() {
			continue
		}
		for _, j := range rng.Perm(len(p.Data))[:min(4, len(p.Data))] {
			old := p.Host()[j]
			p.Set(j, old+eps)
			lp := s.evalLoss(t)
			p.Set(j, old-eps)
			lm := s.evalLoss(t)
			p.Set(j, old)
			num := (lp - lm) / (2 * eps)
			if got := float64(grads[i][j]); !(math.Abs(num-got) <= 2e-2*math.Max(0.05, math.Abs(num))) {
				t.Errorf("%s[%d]: gradient %.6g, finite difference %.6g", p.Name, j, got, num)
			}
		}
	}
	opt, err := nn.NewSGDOn(be, s.net.Params, nn.SGDConfig{Momentum: 0.9, Nesterov: true, WeightDecay: 5e-4})
	if err != nil {
		t.Fatal(err)
	}
	loss := first
	for range 10 {
		loss = s.step(t)
		opt.Step(0.1)
	}
	if !(loss < first) {
		t.Errorf("10 SGD steps on one batch: loss %g, first %g", loss, first)
	}
}

// testOptimizers runs SGD in its variants and Adam for three steps on the
// parameters of a network built from the backend's layers, recomputing the
// gradients each step, and checks every trainable element against the
// update written out in float64 from the gradients the step saw. Buffers
// (running statistics) must not be touched by the optimizer.
func testOptimizers(t *testing.T, be nn.Backend) {
	type variant struct {
		name string
		make func([]*nn.Param) (nn.Optimizer, error)
		// update returns the new value and slots from p, g and the slots.
		update func(step int, p, g float64, kind nn.ParamKind, slot []float64) float64
	}
	const lr = 0.05
	sgd := func(mom, damp, wd float64, nesterov bool) variant {
		return variant{
			name: "sgd",
			make: func(ps []*nn.Param) (nn.Optimizer, error) {
				return nn.NewSGDOn(be, ps, nn.SGDConfig{Momentum: float32(mom), Dampening: float32(damp), WeightDecay: float32(wd), Nesterov: nesterov})
			},
			update: func(step int, p, g float64, kind nn.ParamKind, slot []float64) float64 {
				if kind == nn.Weight {
					g += float64(float32(wd)) * p
				}
				if mom != 0 {
					if step == 0 {
						slot[0] = g
					} else {
						slot[0] = float64(float32(mom))*slot[0] + (1-float64(float32(damp)))*g
					}
					if nesterov {
						g += float64(float32(mom)) * slot[0]
					} else {
						g = slot[0]
					}
				}
				return p - lr*g
			},
		}
	}
	adam := variant{
		name: "adam",
		make: func(ps []*nn.Param) (nn.Optimizer, error) {
			return nn.NewAdamOn(be, ps, nn.AdamConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-3})
		},
		update: func(step int, p, g float64, kind nn.ParamKind, slot []float64) float64 {
			b1, b2, eps := float64(float32(0.9)), float64(float32(0.999)), float64(float32(1e-8))
			if kind == nn.Weight {
				g += float64(float32(1e-3)) * p
			}
			slot[0] = b1*slot[0] + (1-b1)*g
			slot[1] = b2*slot[1] + (1-b2)*g*g
			t := float64(step + 1)
			return p - lr/(1-math.Pow(b1, t))*slot[0]/(math.Sqrt(slot[1])/math.Sqrt(1-math.Pow(b2, t))+eps)
		},
	}
	for _, v := range []struct {
		label string
		variant
	}{
		{"plain", sgd(0, 0, 0, false)},
		{"momentum-dampening-decay", sgd(0.9, 0.1, 5e-4, false)},
		{"nesterov-decay", sgd(0.9, 0, 5e-4, true)},
		{"adam", adam},
	} {
		t.Run(v.label, func(t *testing.T) {
			s := newSmallNet(t, be, 4)
			opt, err := v.make(s.net.Params)
			if err != nil {
				t.Fatal(err)
			}
			want := make([][]float64, len(s.net.Params))
			slots := make([][][]float64, len(s.net.Params))
			for i, p := range s.net.Params {
				want[i] = make([]float64, len(p.Data))
				slots[i] = make([][]float64, len(p.Data))
				for j := range slots[i] {
					slots[i][j] = make([]float64, 2)
				}
			}
			for step := range 3 {
				s.step(t)
				for i, p := range s.net.Params {
					data := p.Host()
					var grad []float32
					if p.Trainable() {
						grad = p.HostGrad()
					}
					for j := range data {
						if p.Trainable() {
							want[i][j] = v.update(step, float64(data[j]), float64(grad[j]), p.Kind, slots[i][j])
						} else {
							want[i][j] = float64(data[j]) // the optimizer leaves buffers alone
						}
					}
				}
				opt.Step(lr)
				for i, p := range s.net.Params {
					data := p.Host()
					for j, w := range want[i] {
						if got := float64(data[j]); !(math.Abs(got-w) <= 1e-5*math.Max(1, math.Abs(w))) {
							t.Fatalf("step %d: %s[%d] = %.8g, want %.8g", step, p.Name, j, got, w)
						}
						want[i][j] = float64(data[j]) // compare steps, not drift
					}
				}
			}
			if opt.Steps() != 3 {
				t.Errorf("%d steps counted, want 3", opt.Steps())
			}
		})
	}
}

// testPerSample: the per-sample weight gradients of the backend's weighted
// sum are <dy_b, x_{b,j}> and sum to the weight's gradient; the per-sample
// scale gradients of its batch norm (evaluation mode) and of a channel
// scale (1x1 depthwise conv, no bias) are their definitions; batch norm in
// training mode refuses; other layers report ok false.
func testPerSample(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(3, 4))
	xs := []*nn.Value{NewInput(be, rng, "a", 3, 2, 2, 2), NewInput(be, rng, "b", 3, 2, 2, 2)}
	w := []*nn.Param{be.NewParam("w0", nn.ArchVar, 1), be.NewParam("w1", nn.ArchVar, 1)}
	w[0].Set(0, 0.7)
	w[1].Set(0, -1.3)
	l, err := be.WeightedSum(xs, w)
	if err != nil {
		t.Fatal(err)
	}
	add, err := be.Add(xs)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := nn.PerSampleWeightGrads(add); ok {
		t.Fatal("an add layer reports per-sample weight gradients")
	}
	l.Forward(true)
	dy := make([]float32, len(l.Output().Grad))
	RandFill(rng, dy)
	copy(l.Output().Grad, dy)
	l.Output().CommitGrad()
	l.Backward()
	ws, g, ok := nn.PerSampleWeightGrads(l)
	if !ok || len(ws) != 2 || ws[0] != w[0] || ws[1] != w[1] || len(g) != 3*2 {
		t.Fatalf("PerSampleWeightGrads: ok %v, %d weights, %d per-sample values", ok, len(ws), len(g))
	}
	per := l.Output().PerSample()
	for j := range 2 {
		var s float64
		x := xs[j].Host()
		for b := range 3 {
			var want float64
			for i := b * per; i < (b+1)*per; i++ {
				want += float64(dy[i]) * float64(x[i])
			}
			if d := g[b*2+j] - want; !(math.Abs(d) <= 1e-6) {
				t.Errorf("sample %d weight %d: %g, want %g", b, j, g[b*2+j], want)
			}
			s += g[b*2+j]
		}
		if d := s - float64(w[j].HostGrad()[0]); !(math.Abs(d) <= 1e-5) {
			t.Errorf("weight %d: per-sample sum %g, gradient %g", j, s, w[j].HostGrad()[0])
		}
	}

	// Batch norm scales, evaluation mode.
	f := newBN(t, be, rng, 3, 4, 2, 3)
	if nn.IsChannelScale(f.l) {
		t.Error("a batch norm reports being a channel scale")
	}
	f.l.Forward(true)
	RandFill(rng, f.l.Output().Grad)
	f.l.Output().CommitGrad()
	f.l.Backward()
	buf := make([]float64, 3*4)
	if _, ok, err := nn.PerSampleScaleGrads(f.l, buf); !ok || err == nil {
		t.Errorf("batch norm in training mode: ok %v, err %v; want an error", ok, err)
	}
	f.l.Forward(false)
	f.l.Backward()
	gamma, ok, err := nn.PerSampleScaleGrads(f.l, buf)
	if !ok || err != nil || gamma != f.gamma {
		t.Fatalf("batch norm: ok %v, err %v, gamma %v", ok, err, gamma)
	}
	dyb, x, rm, rv := f.l.Output().HostGrad(), f.x.Host(), f.runMean.Host(), f.runVar.Host()
	for b := range 3 {
		for ch := range 4 {
			mean, inv := float64(rm[ch]), 1/math.Sqrt(float64(rv[ch])+1e-5)
			var want float64
			for i := range 6 {
				k := (b*4+ch)*6 + i
				want += float64(dyb[k]) * (float64(x[k]) - mean) * inv
			}
			if !(math.Abs(buf[b*4+ch]-want) <= 1e-5*math.Max(1, math.Abs(want))) {
				t.Errorf("batch norm sample %d channel %d: %g, want %g", b, ch, buf[b*4+ch], want)
			}
		}
	}

	// A channel scale and a conv that is not one.
	xc := NewInput(be, rng, "xc", 3, 4, 3, 3)
	sw := be.NewParam("gate.w", nn.Weight, 4, 1, 1, 1)
	FillParam(rng, sw, 1)
	cs, err := be.Conv2D(xc, sw, nil, Attrs(4, 1, 1, 0, 1, 4))
	if err != nil {
		t.Fatal(err)
	}
	other, err := be.Conv2D(xc, be.NewParam("dw.w", nn.Weight, 4, 1, 3, 3), nil, Attrs(4, 3, 1, 1, 1, 4))
	if err != nil {
		t.Fatal(err)
	}
	if !nn.IsChannelScale(cs) || nn.IsChannelScale(other) {
		t.Fatalf("IsChannelScale: %v for a 1x1 depthwise conv, %v for a 3x3 one", nn.IsChannelScale(cs), nn.IsChannelScale(other))
	}
	if _, ok, _ := nn.PerSampleScaleGrads(other, buf); ok {
		t.Error("a 3x3 depthwise conv reports per-sample scale gradients")
	}
	cs.Forward(true)
	RandFill(rng, cs.Output().Grad)
	cs.Output().CommitGrad()
	cs.Backward()
	scale, ok, err := nn.PerSampleScaleGrads(cs, buf)
	if !ok || err != nil || scale != sw {
		t.Fatalf("channel scale: ok %v, err %v", ok, err)
	}
	dyc, xcd := cs.Output().HostGrad(), xc.Host()
	for b := range 3 {
		for ch := range 4 {
			var want float64
			for i := range 9 {
				k := (b*4+ch)*9 + i
				want += float64(dyc[k]) * float64(xcd[k])
			}
			if !(math.Abs(buf[b*4+ch]-want) <= 1e-5*math.Max(1, math.Abs(want))) {
				t.Errorf("channel scale sample %d channel %d: %g, want %g", b, ch, buf[b*4+ch], want)
			}
		}
	}
}

// testLoss: the softmax cross entropy the backend computes (ForwardOn, as
// Network.Loss calls it) against its definition in float64, with and
// without label smoothing, on a batch smaller than the allocated one; the
// gradient it writes overwrites the logits' gradient; bad labels are
// errors.
func testLoss(t *testing.T, be nn.Backend) {
	rng := rand.New(rand.NewPCG(21, 22))
	const n, k = 5, 7
	logits := be.NewValue("logits", []int{n + 2, k}, true)
	RandFill(rng, logits.Data)
	for i := range logits.Data {
		logits.Data[i] *= 4
	}
	logits.Commit()
	logits.SetBatch(n)
	labels := make([]int32, n)
	for i := range labels {
		labels[i] = int32(rng.IntN(k))
	}
	for _, smoothing := range []float32{0, 0.1} {
		FillSpaced(rng, logits.Grad) // stale values the loss must overwrite
		logits.CommitGrad()
		l := nn.SoftmaxCrossEntropy{Smoothing: smoothing}
		got, correct, err := l.ForwardOn(be, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		want, wantCorrect, grad := NaiveSoftmaxCrossEntropy(logits.Host(), labels, k, float64(smoothing))
		if !(math.Abs(got-want) <= 1e-6*math.Max(1, math.Abs(want))) || correct != wantCorrect {
			t.Errorf("smoothing %g: loss %.9g, %d correct; want %.9g, %d", smoothing, got, correct, want, wantCorrect)
		}
		CompareSlices(t, "dlogits", logits.HostGrad(), grad)
	}
	labels[2] = k
	if _, _, err := (nn.SoftmaxCrossEntropy{}).ForwardOn(be, logits, labels); err == nil {
		t.Error("a label outside [0,K) was accepted")
	}
	if _, _, err := (nn.SoftmaxCrossEntropy{}).ForwardOn(be, logits, labels[:3]); err == nil {
		t.Error("3 labels for a batch of 5 were accepted")
	}
}

// testZeroGrad: after ZeroGrad the parameters' and the output's gradients
// read zero, and a Backward from gradients left full of stale values gives
// bit for bit what the layers' Backward gives when every gradient was
// cleared by hand first: the network's deferred clearing (through
// nn.GradLayer where the layers implement it, nn.GradZeroer where the
// backend does) clears what it defers, before the first layer adds into it.
func testZeroGrad(t *testing.T, be nn.Backend) {
	s := newSmallNet(t, be, 5)
	// Reference: every gradient cleared, layers run backward by hand.
	s.net.Forward(true)
	for _, v := range s.net.Values {
		if v.Grad != nil {
			clear(v.Grad)
			v.CommitGrad()
		}
	}
	for _, p := range s.net.Params {
		if p.Grad != nil {
			clear(p.Grad)
			p.CommitGrad()
		}
	}
	if _, _, err := s.net.Loss(nn.SoftmaxCrossEntropy{}, s.labels); err != nil {
		t.Fatal(err)
	}
	for i := len(s.net.Layers) - 1; i >= 0; i-- {
		s.net.Layers[i].Backward()
	}
	want := make([][]float32, len(s.net.Params))
	for i, p := range s.net.Params {
		want[i] = append([]float32(nil), p.HostGrad()...)
	}
	rng := rand.New(rand.NewPCG(23, 24))
	for round := range 2 { // the second round reuses the plan ZeroGrad built
		for _, v := range s.net.Values {
			if v.Grad != nil {
				FillSpaced(rng, v.Grad)
				v.CommitGrad()
			}
		}
		for _, p := range s.net.Params {
			if p.Grad != nil {
				FillSpaced(rng, p.Grad)
				p.CommitGrad()
			}
		}
		s.net.ZeroGrad()
		for _, p := range s.net.Params {
			for j, g := range p.HostGrad() {
				if g != 0 {
					t.Fatalf("round %d: after ZeroGrad %s.grad[%d] = %g", round, p.Name, j, g)
				}
			}
		}
		for j, g := range s.net.Output.HostGrad() {
			if g != 0 {
				t.Fatalf("round %d: after ZeroGrad the output's gradient [%d] = %g", round, j, g)
			}
		}
		s.net.Forward(true)
		if _, _, err := s.net.Loss(nn.SoftmaxCrossEntropy{}, s.labels); err != nil {
			t.Fatal(err)
		}
		s.net.Backward()
		for i, p := range s.net.Params {
			for j, g := range p.HostGrad() {
				if math.Float32bits(g) != math.Float32bits(want[i][j]) || math.IsNaN(float64(g)) {
					t.Fatalf("round %d: %s.grad[%d] = %g after ZeroGrad/Backward, %g with every gradient cleared by hand", round, p.Name, j, g, want[i][j])
				}
			}
		}
	}
}
