package nn

import (
	"testing"

	"bayesnas/internal/tapsum"
)

// depthwiseCases are the indices of the depthwise convolutions in convCases.
func depthwiseCases() []int {
	var idx []int
	for i, cc := range convCases {
		if cc.a.Groups == cc.c && cc.c > 1 {
			idx = append(idx, i)
		}
	}
	return idx
}

// TestDepthwiseGoKernels runs the worker-count and gradient checks again
// with the Go kernels of tapsum, which the AVX2 assembly otherwise replaces
// on this machine (and which all non-amd64 builds use); the comparison with
// the naive reference is TestConformanceGoKernels's.
func TestDepthwiseGoKernels(t *testing.T) {
	if !tapsum.UseAVX2 {
		t.Log("tapsum runs its Go kernels already")
	}
	defer func(on bool) { tapsum.UseAVX2 = on }(tapsum.UseAVX2)
	tapsum.UseAVX2 = false
	t.Run("workers", TestConvWorkerCountInvariant)
	t.Run("gradcheck", TestDepthwiseGradCheck)
}

// TestDepthwiseGradCheck checks every depthwise case of convCases (kernels
// 3/5/7, strides 1/2/3, dilations 1/2, multipliers 1/2) against finite
// differences.
func TestDepthwiseGradCheck(t *testing.T) {
	be := NewCPU(DefaultGemm(), 2)
	for _, ci := range depthwiseCases() {
		cc := convCases[ci]
		t.Run(cc.String(), func(t *testing.T) {
			ts := newConvTensors(cc, 13)
			l, err := be.Conv2D(ts.x, ts.w, ts.b, cc.a)
			if err != nil {
				t.Fatal(err)
			}
			params := []*Param{ts.w}
			if ts.b != nil {
				params = append(params, ts.b)
			}
			gradCheck(t, l, []*Value{ts.x}, params, true, 10)
		})
	}
}

// TestDepthwiseWorkerCountInvariant: 1, 2 and 3 workers give bit-identical
// results for every depthwise case (TestConvWorkerCountInvariant samples
// one).
func TestDepthwiseWorkerCountInvariant(t *testing.T) {
	for _, ci := range depthwiseCases() {
		cc := convCases[ci]
		cc.n = 5
		var ref []float32
		for _, workers := range []int{1, 2, 3} {
			ts := newConvTensors(cc, 17)
			l, err := NewCPU(DefaultGemm(), workers).Conv2D(ts.x, ts.w, ts.b, cc.a)
			if err != nil {
				t.Fatal(err)
			}
			l.Forward(true)
			copy(l.Output().Grad, ts.dy)
			l.Backward()
			got := append(append(append([]float32(nil), l.Output().Data...), ts.x.Grad...), ts.w.Grad...)
			if ts.b != nil {
				got = append(got, ts.b.Grad...)
			}
			if ref == nil {
				ref = got
				continue
			}
			for j := range ref {
				if got[j] != ref[j] {
					t.Fatalf("%s: output/gradient element %d differs between 1 and %d workers: %g vs %g",
						cc, j, workers, ref[j], got[j])
				}
			}
		}
	}
}
