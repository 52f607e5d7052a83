package nn

import (
	"math"
	"testing"
)

// optimFixture: a decayed weight, an undecayed bias, an architecture
// variable and a buffer that no optimizer may touch.
func optimFixture() (w, b, a, buf *Param, all []*Param) {
	w, b = NewParam("w", Weight, 2), NewParam("b", NoDecay, 1)
	a, buf = NewParam("alpha", ArchVar, 1), NewParam("bn.running_mean", Buffer, 1)
	w.Data[0], w.Data[1], b.Data[0], a.Data[0], buf.Data[0] = 0.5, -1.5, 0.2, 1.0, 3.0
	return w, b, a, buf, []*Param{w, buf, b, a}
}

// grads of steps 1 and 2, in the order w0, w1, b, alpha.
var optimGrads = [2][4]float32{{0.3, -0.2, 1.0, -0.5}, {-0.1, 0.4, 0.5, 0.25}}

func setGrads(step int, w, b, a *Param) {
	g := optimGrads[step]
	w.Grad[0], w.Grad[1], b.Grad[0], a.Grad[0] = g[0], g[1], g[2], g[3]
}

func near(t *testing.T, what string, got float32, want float64) {
	t.Helper()
	if math.Abs(float64(got)-want) > 1e-6*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.8g, want %.8g", what, got, want)
	}
}

// sgdByHand unrolls torch.optim.SGD for two steps on one element.
func sgdByHand(p0, g1, g2, wd, mom, damp float64, nesterov bool, lr1, lr2 float64) float64 {
	g := g1 + wd*p0
	buf := g // first step: the buffer is the gradient itself, undampened
	d := buf
	if nesterov {
		d = g + mom*buf
	}
	p1 := p0 - lr1*d
	g = g2 + wd*p1
	buf = mom*buf + (1-damp)*g
	d = buf
	if nesterov {
		d = g + mom*buf
	}
	return p1 - lr2*d
}

func TestSGDTwoSteps(t *testing.T) {
	for _, cfg := range []SGDConfig{
		{Momentum: 0.9, Dampening: 0.1, WeightDecay: 0.01},
		{Momentum: 0.9, WeightDecay: 0.01, Nesterov: true},
	} {
		w, b, a, buf, all := optimFixture()
		p0 := []float64{0.5, -1.5, 0.2, 1.0}
		o, err := NewSGD(all, cfg)
		if err != nil {
			t.Fatal(err)
		}
		setGrads(0, w, b, a)
		o.Step(0.1)
		setGrads(1, w, b, a)
		o.Step(0.05)
		for i, p := range []*float32{&w.Data[0], &w.Data[1], &b.Data[0], &a.Data[0]} {
			wd := 0.0
			if i < 2 {
				wd = float64(cfg.WeightDecay)
			}
			want := sgdByHand(p0[i], float64(optimGrads[0][i]), float64(optimGrads[1][i]), wd,
				float64(cfg.Momentum), float64(cfg.Dampening), cfg.Nesterov, 0.1, 0.05)
			near(t, "sgd param", *p, want)
		}
		if buf.Data[0] != 3 || o.Steps() != 2 {
			t.Errorf("buffer %g (want 3 untouched), steps %d (want 2)", buf.Data[0], o.Steps())
		}
		if len(o.State()) != 3 || o.State()["w.momentum_buffer"] == nil || o.State()["bn.running_mean.momentum_buffer"] != nil {
			t.Errorf("state keys %v", keys(o.State()))
		}
		if allocs := testing.AllocsPerRun(5, func() { o.Step(0.01) }); allocs != 0 {
			t.Errorf("sgd step: %v allocations", allocs)
		}
	}
	_, err := NewSGD(nil, SGDConfig{Nesterov: true})
	wantErr(t, "nesterov without momentum", err, "nesterov")
	p := NewParam("dup", Weight, 1)
	_, err = NewSGD([]*Param{p, p}, SGDConfig{})
	wantErr(t, "duplicate", err, "dup", "twice")
}

func keys(m map[string][]float32) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	return k
}

// adamByHand unrolls torch.optim.Adam for two steps on one element.
func adamByHand(p0, g1, g2, wd, b1, b2, eps, lr1, lr2 float64) float64 {
	g := g1 + wd*p0
	m := (1 - b1) * g
	v := (1 - b2) * g * g
	p1 := p0 - lr1/(1-b1)*m/(math.Sqrt(v)/math.Sqrt(1-b2)+eps)
	g = g2 + wd*p1
	m = b1*m + (1-b1)*g
	v = b2*v + (1-b2)*g*g
	return p1 - lr2/(1-b1*b1)*m/(math.Sqrt(v)/math.Sqrt(1-b2*b2)+eps)
}

func TestAdamTwoStepsAndRestore(t *testing.T) {
	cfg := AdamConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	w, b, a, buf, all := optimFixture()
	p0 := []float64{0.5, -1.5, 0.2, 1.0}
	o, err := NewAdam(all, cfg)
	if err != nil {
		t.Fatal(err)
	}
	setGrads(0, w, b, a)
	o.Step(0.1)

	// Checkpoint after one step, restore into a fresh optimizer over fresh params.
	w2, b2, a2, _, all2 := optimFixture()
	copy(w2.Data, w.Data)
	b2.Data[0], a2.Data[0] = b.Data[0], a.Data[0]
	o2, err := NewAdam(all2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range o.State() {
		copy(o2.State()[name], s)
	}
	o2.SetSteps(o.Steps())

	setGrads(1, w, b, a)
	o.Step(0.05)
	setGrads(1, w2, b2, a2)
	o2.Step(0.05)
	for i, p := range []*float32{&w.Data[0], &w.Data[1], &b.Data[0], &a.Data[0]} {
		wd := 0.0
		if i < 2 {
			wd = float64(cfg.WeightDecay)
		}
		want := adamByHand(p0[i], float64(optimGrads[0][i]), float64(optimGrads[1][i]), wd, 0.9, 0.999, 1e-8, 0.1, 0.05)
		near(t, "adam param", *p, want)
	}
	for i, p := range []float32{w2.Data[0], w2.Data[1], b2.Data[0], a2.Data[0]} {
		want := []float32{w.Data[0], w.Data[1], b.Data[0], a.Data[0]}[i]
		if p != want {
			t.Errorf("restored optimizer: param %d = %g, uninterrupted %g", i, p, want)
		}
	}
	if buf.Data[0] != 3 {
		t.Errorf("buffer changed to %g", buf.Data[0])
	}
	if len(o.State()) != 6 || o.State()["alpha.exp_avg_sq"] == nil {
		t.Errorf("state keys %v", keys(o.State()))
	}
	if allocs := testing.AllocsPerRun(5, func() { o.Step(0.01) }); allocs != 0 {
		t.Errorf("adam step: %v allocations", allocs)
	}
	_, err = NewAdam(all, AdamConfig{Beta1: 1, Beta2: 0.999})
	wantErr(t, "beta1", err, "betas")
}

// InvDenom is the factor of Adam's last step on a unit gradient: a step on
// gradient g with zero first moment history would move p by lr*g*InvDenom
// (checked here through the reference formula on the saved moments).
func TestAdamInvDenom(t *testing.T) {
	cfg := AdamConfig{Beta1: 0.5, Beta2: 0.999, Eps: 1e-8}
	w, b, a, _, all := optimFixture()
	o, err := NewAdam(all, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.InvDenom(a, 0); got != 0 {
		t.Errorf("before a step: %g, want 0", got)
	}
	setGrads(0, w, b, a)
	o.Step(0.1)
	setGrads(1, w, b, a)
	o.Step(0.1)
	v := o.State()[a.Name+".exp_avg_sq"][0]
	b2 := float64(cfg.Beta2)
	want := 1 / (math.Sqrt(float64(v)/(1-b2*b2)) + float64(cfg.Eps))
	if got := o.InvDenom(a, 0); math.Abs(got-want) > 1e-9*want {
		t.Errorf("InvDenom %g, want %g", got, want)
	}
	if got := o.InvDenom(NewParam("other", ArchVar, 1), 0); got != 0 {
		t.Errorf("unknown param: %g, want 0", got)
	}
}
