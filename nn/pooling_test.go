package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestPoolingGradients(t *testing.T) {
	for _, c := range testBackends() {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, a := range []PoolAttrs{
			{Kernel: 3, Stride: 2, Pad: 1},
			{Kernel: 3, Stride: 2, Pad: 1, CountIncludePad: true},
			{Kernel: 2, Stride: 2},
			{Kernel: 3, Stride: 1, Pad: 1},
			{Kernel: 3, Stride: 1, Pad: 1, CountIncludePad: true},
			{Kernel: 2, Stride: 2, CountIncludePad: true},
			{Kernel: 2, Stride: 2, CeilMode: true}, // 5x7: overhanging last windows
			{Kernel: 3, Stride: 2, Pad: 1, CeilMode: true},
			{Kernel: 3, Stride: 3, CeilMode: true},
		} {
			for _, isMax := range []bool{true, false} {
				if isMax && a.CountIncludePad {
					continue
				}
				x := c.NewValue("x", []int{2, 2, 5, 7}, true)
				fillSpaced(rng, x.Data)
				var l Layer
				var err error
				if isMax {
					l, err = c.MaxPool(x, a)
				} else {
					l, err = c.AvgPool(x, a)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Run(fmt.Sprintf("max=%v/%+v", isMax, a), func(t *testing.T) {
					gradCheck(t, l, []*Value{x}, nil, true, 25)
					checkAccumulates(t, l, []*Value{x}, nil, true)
					checkNoAllocs(t, "pool", l, true)
				})
			}
		}
		x := newInput(c, rng, "x", 3, 4, 5, 3)
		l, err := c.GlobalAvgPool(x)
		if err != nil {
			t.Fatal(err)
		}
		if s := l.Output().Shape; len(s) != 4 || s[0] != 3 || s[1] != 4 || s[2] != 1 || s[3] != 1 {
			t.Fatalf("global pool output shape %v, want [3 4 1 1]", s)
		}
		l.Forward(true)
		for p := 0; p < 12; p++ {
			var s float64
			for _, v := range x.Data[p*15 : (p+1)*15] {
				s += float64(v)
			}
			if got := l.Output().Data[p]; math.Abs(float64(got)-s/15) > 1e-6 {
				t.Fatalf("global pool plane %d = %g, want %g", p, got, s/15)
			}
		}
		gradCheck(t, l, []*Value{x}, nil, true, 20)
		checkAccumulates(t, l, []*Value{x}, nil, true)
		checkNoAllocs(t, "globalavgpool", l, true)
	}
}

// Ceil mode changes the output size only where a window overhangs, and is
// refused with count_include_pad (no shared convention for the divisor).
func TestPoolCeilMode(t *testing.T) {
	for _, c := range []struct{ in, k, s, p, floor, ceil int }{
		{7, 2, 2, 0, 3, 4}, {8, 2, 2, 0, 4, 4}, {5, 3, 2, 1, 3, 3}, {6, 3, 2, 1, 3, 4}, {7, 3, 3, 0, 2, 3}, {4, 3, 3, 1, 2, 2},
	} {
		if got := PoolOutSize(c.in, c.k, c.s, c.p, false); got != c.floor {
			t.Errorf("%+v: floor size %d, want %d", c, got, c.floor)
		}
		if got := PoolOutSize(c.in, c.k, c.s, c.p, true); got != c.ceil {
			t.Errorf("%+v: ceil size %d, want %d", c, got, c.ceil)
		}
	}
	be := NewCPU(DefaultGemm(), 1)
	x := be.NewValue("x", []int{1, 1, 5, 5}, true)
	if _, err := be.AvgPool(x, PoolAttrs{Kernel: 2, Stride: 2, CeilMode: true, CountIncludePad: true}); err == nil || !strings.Contains(err.Error(), "ceil mode") {
		t.Errorf("ceil mode with count_include_pad: err = %v", err)
	}
}
