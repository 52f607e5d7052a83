package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"bayesnas/nn"
)

// recordingBackend implements nn.Backend without kernels: each constructor
// records its call and allocates an output whose shape it computes itself
// (with nn.OutSize), independently of InferShapes. It lets Compile be tested
// before, and apart from, the real kernels.
type recordingBackend struct {
	calls    []string
	params   []string // names NewParam was asked for, in order
	wrongOut bool     // make conv outputs one channel too many
}

type nopLayer struct{ out *nn.Value }

func (l nopLayer) Forward(bool)          {}
func (l nopLayer) Backward()             {}
func (l nopLayer) Output() *nn.Value     { return l.out }
func (r *recordingBackend) Name() string { return "recording" }
func (r *recordingBackend) NewValue(name string, shape []int, withGrad bool) *nn.Value {
	return nn.NewValue(name, shape, withGrad)
}
func (r *recordingBackend) NewParam(name string, kind nn.ParamKind, shape ...int) *nn.Param {
	r.params = append(r.params, name)
	return nn.NewParam(name, kind, shape...)
}

func (r *recordingBackend) layer(call string, shape ...int) (nn.Layer, error) {
	r.calls = append(r.calls, call)
	return nopLayer{nn.NewValue("", shape, true)}, nil
}

func pnames(ps ...*nn.Param) string {
	var s []string
	for _, p := range ps {
		if p == nil {
			s = append(s, "nil")
		} else {
			s = append(s, p.Name)
		}
	}
	return strings.Join(s, ",")
}

func (r *recordingBackend) Conv2D(x *nn.Value, w, b *nn.Param, a nn.ConvAttrs) (nn.Layer, error) {
	c := a.OutC
	if r.wrongOut {
		c++
	}
	return r.layer(fmt.Sprintf("conv(%s;%s;%+v)", x.Name, pnames(w, b), a), x.N(), c,
		nn.OutSize(x.H(), a.Kernel, a.Stride, a.Pad, a.Dilation), nn.OutSize(x.W(), a.Kernel, a.Stride, a.Pad, a.Dilation))
}
func (r *recordingBackend) BatchNorm(x *nn.Value, g, b, m, v *nn.Param, a nn.BNAttrs) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("bn(%s;%s;%g,%g)", x.Name, pnames(g, b, m, v), a.Eps, a.Momentum), x.Shape...)
}
func (r *recordingBackend) ReLU(x *nn.Value) (nn.Layer, error) {
	return r.layer("relu("+x.Name+")", x.Shape...)
}
func (r *recordingBackend) MaxPool(x *nn.Value, a nn.PoolAttrs) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("maxpool(%s;%+v)", x.Name, a), x.N(), x.C(),
		nn.PoolOutSize(x.H(), a.Kernel, a.Stride, a.Pad, a.CeilMode), nn.PoolOutSize(x.W(), a.Kernel, a.Stride, a.Pad, a.CeilMode))
}
func (r *recordingBackend) AvgPool(x *nn.Value, a nn.PoolAttrs) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("avgpool(%s;%+v)", x.Name, a), x.N(), x.C(),
		nn.PoolOutSize(x.H(), a.Kernel, a.Stride, a.Pad, a.CeilMode), nn.PoolOutSize(x.W(), a.Kernel, a.Stride, a.Pad, a.CeilMode))
}
func (r *recordingBackend) GlobalAvgPool(x *nn.Value) (nn.Layer, error) {
	return r.layer("gap("+x.Name+")", x.N(), x.C(), 1, 1)
}
func (r *recordingBackend) Linear(x *nn.Value, w, b *nn.Param) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("linear(%s;%s)", x.Name, pnames(w, b)), x.N(), w.Shape[0])
}
func vnames(xs []*nn.Value) string {
	var s []string
	for _, x := range xs {
		s = append(s, x.Name)
	}
	return strings.Join(s, ",")
}
func (r *recordingBackend) Add(xs []*nn.Value) (nn.Layer, error) {
	return r.layer("add("+vnames(xs)+")", xs[0].Shape...)
}
func (r *recordingBackend) WeightedSum(xs []*nn.Value, w []*nn.Param) (nn.Layer, error) {
	return r.layer("wsum("+vnames(xs)+";"+pnames(w...)+")", xs[0].Shape...)
}
func (r *recordingBackend) Concat(xs []*nn.Value) (nn.Layer, error) {
	c := 0
	for _, x := range xs {
		c += x.C()
	}
	return r.layer("concat("+vnames(xs)+")", xs[0].N(), c, xs[0].H(), xs[0].W())
}
func (r *recordingBackend) SliceChannels(x *nn.Value, start, end int) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("slice(%s;%d,%d)", x.Name, start, end), x.N(), end-start, x.H(), x.W())
}
func (r *recordingBackend) PadChannels(x *nn.Value, outC int) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("padch(%s;%d)", x.Name, outC), x.N(), outC, x.H(), x.W())
}
func (r *recordingBackend) ChannelShuffle(x *nn.Value, groups int) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("shuffle(%s;%d)", x.Name, groups), x.Shape...)
}
func (r *recordingBackend) Dropout(x *nn.Value, p float32, seed uint64) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("dropout(%s;%g)", x.Name, p), x.Shape...)
}
func (r *recordingBackend) DropPath(x *nn.Value, p float32, seed uint64) (nn.Layer, error) {
	return r.layer(fmt.Sprintf("droppath(%s;%g)", x.Name, p), x.Shape...)
}

func TestCompileWiring(t *testing.T) {
	g := tinyGraph()
	rb := &recordingBackend{}
	net, err := Compile(g, rb, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"conv(x;c1.weight,c1.bias;{OutC:8 Kernel:3 Stride:1 Pad:1 Dilation:1 Groups:2})",
		"bn(c1;b1.weight,b1.bias,b1.running_mean,b1.running_var;1e-05,0.1)",
		"relu(b1)", "shuffle(r1;2)", "slice(sh;0,4)", "slice(sh;4,8)", "concat(s2,s1)",
		"maxpool(cat;{Kernel:3 Stride:2 Pad:1 CountIncludePad:false CeilMode:false})",
		"avgpool(cat;{Kernel:2 Stride:2 Pad:0 CountIncludePad:true CeilMode:false})",
		"wsum(mp,ap;ws.w0,ws.w1)", "padch(ws;12)",
		"conv(ws;c2.weight,nil;{OutC:12 Kernel:3 Stride:1 Pad:2 Dilation:2 Groups:4})",
		"add(pc,c2)", "droppath(ad;0.2)", "gap(dp)", "dropout(gp;0.5)", "linear(do;fc.weight,fc.bias)",
	}
	if !slices.Equal(rb.calls, want) {
		t.Errorf("backend calls\n got %q\nwant %q", rb.calls, want)
	}
	specs, _ := g.ParamSpecs()
	if len(net.Params) != len(specs) {
		t.Fatalf("%d params, want %d", len(net.Params), len(specs))
	}
	// Every parameter comes from the backend, so a device backend owns its storage.
	if len(rb.params) != len(specs) {
		t.Fatalf("backend created %d params, want %d", len(rb.params), len(specs))
	}
	for i, s := range specs {
		if rb.params[i] != s.Name {
			t.Errorf("backend param %d is %q, want %q", i, rb.params[i], s.Name)
		}
		p := net.Params[i]
		if p.Name != s.Name || !slices.Equal(p.Shape, s.Shape) || p.Kind != s.Kind {
			t.Errorf("param %d: %s %v %v, want %s %v %v", i, p.Name, p.Shape, p.Kind, s.Name, s.Shape, s.Kind)
		}
		if (p.Kind == nn.Buffer) != (p.Grad == nil) {
			t.Errorf("%s: gradient allocation does not match kind", p.Name)
		}
	}
	if v := net.Param("b1.running_var").Data; v[0] != 1 || net.Param("b1.weight").Data[7] != 1 || net.Param("b1.running_mean").Data[0] != 0 {
		t.Error("BN scale and running variance must start at 1, running mean at 0")
	}
	if net.Input.Grad != nil || !slices.Equal(net.Input.Shape, []int{3, 4, 8, 8}) {
		t.Errorf("input %v (grad %v)", net.Input.Shape, net.Input.Grad != nil)
	}
	if len(net.Values) != 1+len(g.Nodes) || net.Values[5].Name != "s1" || net.Output.Name != "fc" || len(net.Layers) != len(g.Nodes) {
		t.Errorf("values/layers wired wrongly: %d values, output %q", len(net.Values), net.Output.Name)
	}
	if !slices.Equal(net.Output.Shape, []int{3, 5}) {
		t.Errorf("output shape %v", net.Output.Shape)
	}
}

func TestCompileErrors(t *testing.T) {
	g := tinyGraph()
	if _, err := Compile(g, &recordingBackend{wrongOut: true}, 2); err == nil || !strings.Contains(err.Error(), `node "c1"`) {
		t.Errorf("backend/IR shape disagreement: %v", err)
	}
	if _, err := Compile(g, &recordingBackend{}, 0); err == nil || !strings.Contains(err.Error(), "batch 0") {
		t.Errorf("batch 0: %v", err)
	}
	g.Node("c2").Attrs.Groups = 3
	if _, err := Compile(g, &recordingBackend{}, 2); err == nil || !strings.Contains(err.Error(), `"c2"`) {
		t.Errorf("invalid graph: %v", err)
	}
}

func TestInitParams(t *testing.T) {
	g, err := PyramidNet(PyramidNetDefault())
	if err != nil {
		t.Fatal(err)
	}
	compile := func() *nn.Network {
		net, err := Compile(g, &recordingBackend{}, 1)
		if err != nil {
			t.Fatal(err)
		}
		return net
	}
	a, b, c := compile(), compile(), compile()
	for _, net := range []*nn.Network{a, b} {
		if err := InitParams(net, g, 7); err != nil {
			t.Fatal(err)
		}
	}
	if err := InitParams(c, g, 8); err != nil {
		t.Fatal(err)
	}
	for i, p := range a.Params {
		if !slices.Equal(p.Data, b.Params[i].Data) {
			t.Errorf("%s: same seed, different values", p.Name)
		}
	}
	if slices.Equal(a.Param("stem.conv.weight").Data, c.Param("stem.conv.weight").Data) {
		t.Error("different seeds gave the same conv weights")
	}
	// He normal, fan-out: std sqrt(2/(k*k*out)); check the sample std of a large conv.
	w := a.Param("stage3.block2.conv3.weight") // 1x1, out 256
	if got, want := std(w.Data), math.Sqrt(2.0/256); math.Abs(got-want) > 0.05*want {
		t.Errorf("conv3 weight std %.4f, want %.4f", got, want)
	}
	w = a.Param("stage2.block0.conv2.weight") // 3x3, out 42 (groups do not enter the fan)
	if got, want := std(w.Data), math.Sqrt(2.0/(9*float64(w.Shape[0]))); math.Abs(got-want) > 0.1*want {
		t.Errorf("conv2 weight std %.4f, want %.4f", got, want)
	}
	fc := a.Param("head.fc.weight") // U(-1/sqrt(256), 1/sqrt(256))
	bound := float32(1 / math.Sqrt(float64(fc.Shape[1])))
	lo, hi := slices.Min(fc.Data), slices.Max(fc.Data)
	if lo < -bound || hi > bound || hi < 0.9*bound || lo > -0.9*bound {
		t.Errorf("fc weights in [%g, %g], want U(-%g, %g)", lo, hi, bound, bound)
	}
	for _, p := range a.Params {
		switch {
		case strings.HasSuffix(p.Name, ".bias") || strings.HasSuffix(p.Name, ".running_mean"):
			if slices.Max(p.Data) != 0 || slices.Min(p.Data) != 0 {
				t.Errorf("%s not zero", p.Name)
			}
		case strings.HasSuffix(p.Name, ".running_var") || strings.HasPrefix(p.Name, "stem.bn.weight"):
			if slices.Max(p.Data) != 1 || slices.Min(p.Data) != 1 {
				t.Errorf("%s not one", p.Name)
			}
		}
	}
	// Initialisation is per tensor: an extra node does not change the others.
	tg := tinyGraph()
	tn, _ := Compile(tg, &recordingBackend{}, 1)
	if err := InitParams(tn, tg, 7); err != nil {
		t.Fatal(err)
	}
	if ws := tn.Param("ws.w1").Data[0]; ws != 1 {
		t.Errorf("wsum weight %g, want 1", ws)
	}
	if err := InitParams(tn, g, 7); err == nil || !strings.Contains(err.Error(), "stem.conv") {
		t.Errorf("network from another graph: %v", err)
	}
}

func std(s []float32) float64 {
	var sum, sq float64
	for _, v := range s {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	n := float64(len(s))
	return math.Sqrt(sq/n - (sum/n)*(sum/n))
}

// cpuBackend returns the real CPU backend, or skips the test (saying why)
// while the kernels are not merged into this branch: the models branch is
// developed alongside the kernel branches and compiles against nn.Backend only.
func cpuBackend(tb testing.TB) nn.Backend {
	tb.Helper()
	if len(nn.Gemms()) == 0 {
		tb.Skip("no GEMM registered in package nn yet (branch conv not merged): cannot run kernels")
	}
	be, ok := any(nn.NewCPU(nn.DefaultGemm(), 2)).(nn.Backend)
	if !ok {
		tb.Skip("nn.CPU does not implement nn.Backend yet (branches conv and kernels not merged): cannot run kernels")
	}
	return be
}

func randomize(rng *rand.Rand, s []float32) {
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
}

// TestCompiledForwardBackward runs the every-op graph on the CPU backend:
// a network-level finite-difference check of d(sum(out*r))/d(param) in eval
// mode, batch-size independence of eval outputs, and zero allocations per
// training step.
func TestCompiledForwardBackward(t *testing.T) {
	be := cpuBackend(t)
	g := tinyGraph()
	net, err := Compile(g, be, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	randomize(rng, net.Input.Data)
	for _, p := range net.Params {
		if p.Kind == nn.Buffer {
			continue
		}
		for i := range p.Data { // move BN and wsum away from their symmetric start
			p.Data[i] += 0.3 * (rng.Float32()*2 - 1)
		}
	}
	// One training step updates BN running statistics away from (0, 1).
	net.Forward(true)
	r := make([]float32, len(net.Output.Data))
	randomize(rng, r)
	loss := func() float64 {
		net.Forward(false)
		s := 0.0
		for i, v := range net.Output.Data {
			s += float64(v) * float64(r[i])
		}
		return s
	}
	loss()
	net.ZeroGrad()
	copy(net.Output.Grad, r)
	net.Backward()
	const eps = 1e-2
	checked := 0
	for _, p := range net.Params {
		if !p.Trainable() {
			continue
		}
		grad := slices.Clone(p.Grad)
		for _, i := range rng.Perm(len(p.Data))[:min(3, len(p.Data))] {
			old := p.Data[i]
			p.Data[i] = old + eps
			lp := loss()
			p.Data[i] = old - eps
			lm := loss()
			p.Data[i] = old
			num := (lp - lm) / (2 * eps)
			if math.Abs(num-float64(grad[i])) > 3e-2*math.Max(1, math.Abs(num)) {
				t.Errorf("%s[%d]: backward %.5g, finite difference %.5g", p.Name, i, grad[i], num)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Errorf("only %d gradient entries checked", checked)
	}
	var nonzero bool
	for _, v := range net.Param("c1.weight").Grad {
		nonzero = nonzero || v != 0
	}
	if !nonzero {
		t.Error("no gradient reached the first conv")
	}

	// Eval outputs do not depend on the batch: the first two samples agree.
	net.Forward(false)
	full := slices.Clone(net.Output.Data)
	net.SetBatch(2)
	net.Forward(false)
	if len(net.Output.Data) != 2*5 || !slices.Equal(net.Output.Data, full[:10]) {
		t.Errorf("batch 2 outputs %v, batch 4 gave %v", net.Output.Data, full[:10])
	}
	net.SetBatch(4)

	allocs := testing.AllocsPerRun(5, func() {
		net.Forward(true)
		net.ZeroGrad()
		copy(net.Output.Grad, r)
		net.Backward()
	})
	if allocs != 0 {
		t.Errorf("%g allocations per training step, want 0", allocs)
	}
	// The whole step as training runs it, through the backend's seams:
	// input copied in, the loss and the optimizer dispatched once each.
	opt, err := nn.NewSGDOn(be, net.Params, nn.SGDConfig{Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true})
	if err != nil {
		t.Fatal(err)
	}
	x := slices.Clone(net.Input.Data)
	labels := []int32{0, 1, 2, 3}
	var lossErr error
	allocs = testing.AllocsPerRun(5, func() {
		net.Input.SetHost(x)
		net.ZeroGrad()
		net.Forward(true)
		_, _, lossErr = net.Loss(nn.SoftmaxCrossEntropy{Smoothing: 0.1}, labels)
		net.Backward()
		opt.Step(0.01)
	})
	if lossErr != nil {
		t.Fatal(lossErr)
	}
	if allocs != 0 {
		t.Errorf("%g allocations per step with the loss and SGD, want 0", allocs)
	}
}

// TestCompiledDeterministic: same graph, seed and worker count give
// bit-identical outputs and gradients, including dropout and drop-path masks.
func TestCompiledDeterministic(t *testing.T) {
	be := cpuBackend(t)
	g := tinyGraph()
	run := func() ([]float32, []float32) {
		net, err := Compile(g, be, 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := InitParams(net, g, 5); err != nil {
			t.Fatal(err)
		}
		randomize(rand.New(rand.NewPCG(1, 2)), net.Input.Data)
		net.Forward(true)
		net.ZeroGrad()
		for i := range net.Output.Grad {
			net.Output.Grad[i] = 1
		}
		net.Backward()
		return slices.Clone(net.Output.Data), slices.Clone(net.Param("c1.weight").Grad)
	}
	o1, g1 := run()
	o2, g2 := run()
	if !slices.Equal(o1, o2) || !slices.Equal(g1, g2) {
		t.Error("two identical runs differ")
	}
}
