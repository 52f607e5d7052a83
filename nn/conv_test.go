package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

type convCase struct {
	n, c, h, w int
	a          ConvAttrs
	bias       bool
}

func (cc convCase) String() string {
	return fmt.Sprintf("n%d_c%d_%dx%d_oc%d_k%d_s%d_p%d_d%d_g%d_bias%v", cc.n, cc.c, cc.h, cc.w,
		cc.a.OutC, cc.a.Kernel, cc.a.Stride, cc.a.Pad, cc.a.Dilation, cc.a.Groups, cc.bias)
}

func ca(outC, k, s, p, d, g int) ConvAttrs {
	return ConvAttrs{OutC: outC, Kernel: k, Stride: s, Pad: p, Dilation: d, Groups: g}
}

// convCases cover kernels 1/3/5/7, strides 1/2, pads 0-3, dilations 1/2,
// dense, grouped, depthwise and depthwise-multiplier-2 convolutions on odd
// sizes, with batches 1 and 3, with and without bias.
var convCases = []convCase{
	{3, 4, 9, 7, ca(6, 3, 1, 1, 1, 1), true},
	{1, 3, 11, 10, ca(5, 5, 2, 2, 1, 1), false},
	{3, 4, 7, 9, ca(4, 1, 1, 0, 1, 1), true},  // pointwise GEMM
	{3, 8, 5, 5, ca(8, 1, 1, 0, 2, 2), false}, // grouped pointwise
	{1, 2, 13, 11, ca(3, 7, 1, 3, 1, 1), true},
	{3, 4, 9, 9, ca(8, 3, 2, 1, 2, 2), true},
	{3, 8, 7, 8, ca(8, 3, 1, 2, 2, 4), false},
	{3, 3, 5, 6, ca(4, 1, 2, 1, 1, 1), true}, // 1x1 with stride and pad: im2col path
	{1, 4, 7, 7, ca(4, 7, 2, 3, 1, 2), true},
	{3, 1, 6, 5, ca(2, 3, 1, 0, 1, 1), false},
	{3, 6, 9, 7, ca(6, 3, 1, 1, 1, 6), true}, // depthwise
	{1, 6, 9, 7, ca(6, 5, 2, 2, 1, 6), false},
	{3, 5, 7, 7, ca(5, 3, 2, 0, 1, 5), true},
	{3, 4, 9, 9, ca(4, 3, 1, 2, 2, 4), false},
	{1, 2, 3, 2, ca(2, 3, 1, 1, 1, 2), true},    // narrower than the kernel
	{3, 4, 8, 9, ca(8, 3, 1, 1, 1, 4), true},    // depthwise, multiplier 2
	{3, 4, 11, 9, ca(8, 5, 1, 3, 2, 4), false},  // depthwise, multiplier 2, dilated
	{3, 3, 10, 11, ca(6, 7, 2, 3, 1, 3), true},  // depthwise, multiplier 2, strided 7x7
	{3, 3, 5, 6, ca(4, 1, 1, 1, 1, 1), false},   // pad > dil*(k-1): input gradient by col2im
	{1, 3, 6, 7, ca(4, 3, 1, 3, 1, 1), true},    // pad > dil*(k-1): input gradient by col2im
	{3, 4, 12, 13, ca(4, 7, 1, 3, 1, 4), true},  // depthwise 7x7
	{3, 4, 9, 10, ca(4, 3, 2, 2, 2, 4), false},  // depthwise, strided and dilated: one phase plane
	{2, 3, 11, 9, ca(3, 5, 2, 4, 2, 3), true},   // depthwise 5x5, strided and dilated
	{2, 3, 10, 11, ca(3, 3, 3, 1, 1, 3), true},  // depthwise, stride 3: nine phase planes
	{2, 3, 33, 35, ca(3, 5, 1, 2, 1, 3), false}, // depthwise, planes of several 64-output blocks
	{2, 3, 6, 5, ca(3, 3, 1, 3, 1, 3), true},    // depthwise, pad > dil*(k-1)
	{3, 2, 8, 8, ca(4, 7, 1, 6, 2, 2), false},   // depthwise 7x7, dilated, multiplier 2
}

// convTensors holds the input, parameters and upstream gradient of a case.
type convTensors struct {
	x    *Value
	w, b *Param
	dy   []float32
}

func newConvTensors(cc convCase, seed uint64) convTensors {
	rng := rand.New(rand.NewPCG(seed, 99))
	x := NewValue("x", []int{cc.n, cc.c, cc.h, cc.w}, true)
	w := NewParam("w", Weight, cc.a.OutC, cc.c/cc.a.Groups, cc.a.Kernel, cc.a.Kernel)
	randFill(rng, x.Data)
	randFill(rng, w.Data)
	var b *Param
	if cc.bias {
		b = NewParam("b", NoDecay, cc.a.OutC)
		randFill(rng, b.Data)
	}
	oh := OutSize(cc.h, cc.a.Kernel, cc.a.Stride, cc.a.Pad, cc.a.Dilation)
	ow := OutSize(cc.w, cc.a.Kernel, cc.a.Stride, cc.a.Pad, cc.a.Dilation)
	dy := make([]float32, cc.n*cc.a.OutC*oh*ow)
	randFill(rng, dy)
	return convTensors{x, w, b, dy}
}

func compareSlices(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	for i, w := range want {
		g := float64(got[i])
		if math.IsNaN(g) || math.Abs(g-w) > 1e-4*(1+math.Abs(w)) {
			t.Fatalf("%s[%d] = %.7g, want %.7g", what, i, g, w)
		}
	}
}

func TestConvGradCheck(t *testing.T) {
	for _, be := range testBackends() {
		for _, ci := range []int{0, 5, 8, 16} {
			cc := convCases[ci]
			t.Run(be.Gemm.Name()+"/"+cc.String(), func(t *testing.T) {
				ts := newConvTensors(cc, 7)
				l, err := be.Conv2D(ts.x, ts.w, ts.b, cc.a)
				if err != nil {
					t.Fatal(err)
				}
				params := []*Param{ts.w}
				if ts.b != nil {
					params = append(params, ts.b)
				}
				gradCheck(t, l, []*Value{ts.x}, params, true, 15)
			})
		}
	}
}

// TestConvNoAllocs checks that steady-state passes allocate nothing, for each
// kernel path (im2col, pointwise, depthwise).
func TestConvNoAllocs(t *testing.T) {
	for _, be := range testBackends() {
		for _, ci := range []int{0, 2, 15} {
			cc := convCases[ci]
			ts := newConvTensors(cc, 3)
			l, err := be.Conv2D(ts.x, ts.w, ts.b, cc.a)
			if err != nil {
				t.Fatal(err)
			}
			step := func() {
				l.Forward(true)
				l.Backward()
			}
			step()
			if n := testing.AllocsPerRun(20, step); n != 0 {
				t.Errorf("%s/%s: %v allocations per forward+backward", be.Gemm.Name(), cc, n)
			}
		}
	}
}

// TestConvWorkerCountInvariant: 1, 2 and 3 workers give bit-identical results.
func TestConvWorkerCountInvariant(t *testing.T) {
	for _, g := range Gemms() {
		for _, ci := range []int{0, 3, 15} {
			cc := convCases[ci]
			cc.n = 7
			type result struct{ y, dx, dw, db []float32 }
			var results []result
			for _, workers := range []int{1, 2, 3} {
				ts := newConvTensors(cc, 11)
				l, err := NewCPU(g, workers).Conv2D(ts.x, ts.w, ts.b, cc.a)
				if err != nil {
					t.Fatal(err)
				}
				l.Forward(true)
				copy(l.Output().Grad, ts.dy)
				l.Backward()
				r := result{y: l.Output().Data, dx: ts.x.Grad, dw: ts.w.Grad}
				if ts.b != nil {
					r.db = ts.b.Grad
				}
				results = append(results, r)
			}
			for i := 1; i < len(results); i++ {
				for what, pair := range map[string][2][]float32{
					"y": {results[0].y, results[i].y}, "dx": {results[0].dx, results[i].dx},
					"dw": {results[0].dw, results[i].dw}, "db": {results[0].db, results[i].db},
				} {
					for j := range pair[0] {
						if math.Float32bits(pair[0][j]) != math.Float32bits(pair[1][j]) {
							t.Fatalf("%s/%s: %s[%d] differs between 1 and %d workers: %g vs %g",
								g.Name(), cc, what, j, i+1, pair[0][j], pair[1][j])
						}
					}
				}
			}
		}
	}
}

func TestConvErrors(t *testing.T) {
	be := NewCPU(DefaultGemm(), 1)
	x := NewValue("x", []int{2, 4, 8, 8}, true)
	w := NewParam("conv1.w", Weight, 6, 4, 3, 3)
	cases := []struct {
		x    *Value
		w, b *Param
		a    ConvAttrs
		want string
	}{
		{NewValue("flat", []int{2, 4}, true), w, nil, ca(6, 3, 1, 1, 1, 1), "want N,C,H,W"},
		{x, w, nil, ca(6, 0, 1, 1, 1, 1), "kernel 0"},
		{x, w, nil, ca(6, 3, 0, 1, 1, 1), "stride 0"},
		{x, w, nil, ca(6, 3, 1, -1, 1, 1), "pad -1"},
		{x, w, nil, ca(6, 3, 1, 1, 0, 1), "dilation 0"},
		{x, w, nil, ca(6, 3, 1, 1, 1, 0), "groups 0"},
		{x, w, nil, ca(6, 3, 1, 1, 1, 3), "divisible by groups 3"},
		{x, w, nil, ca(5, 3, 1, 1, 1, 1), "weight shape [6 4 3 3], want [5 4 3 3]"},
		{x, NewParam("conv1.w", Weight, 6, 4, 3, 3), NewParam("conv1.b", NoDecay, 5), ca(6, 3, 1, 1, 1, 1), "bias conv1.b shape [5]"},
		{x, NewParam("conv1.w", Weight, 6, 4, 9, 9), nil, ca(6, 9, 1, 0, 1, 1), "too small"},
		{nil, w, nil, ca(6, 3, 1, 1, 1, 1), "input is nil"},
	}
	for _, c := range cases {
		_, err := be.Conv2D(c.x, c.w, c.b, c.a)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "conv1.w") {
			t.Errorf("attrs %+v: got error %v, want one naming conv1.w and containing %q", c.a, err, c.want)
		}
	}
}
