package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// testBackends is the reference suite's set of backends: the CPU backend on
// every available GEMM, with two workers so the parallel paths run.
func testBackends() []*CPU {
	var bs []*CPU
	for _, g := range Gemms() {
		bs = append(bs, NewCPU(g, 2))
	}
	return bs
}

// randFill fills s with uniform values in [-1, 1).
func randFill(rng *rand.Rand, s []float32) {
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
}

// gradCheck compares a layer's analytic gradients with central finite
// differences of L = sum(out * r) for a fixed random r, for every input value
// and every trainable parameter. At most maxPer elements of each tensor are
// checked (chosen at random). The forward pass must be deterministic for
// fixed inputs (dropout layers must be reseeded to the same mask).
func gradCheck(t *testing.T, l Layer, inputs []*Value, params []*Param, train bool, maxPer int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	out := l.Output()
	r := make([]float32, len(out.Data))
	randFill(rng, r)
	loss := func() float64 {
		l.Forward(train)
		s := 0.0
		for i, v := range out.Data {
			s += float64(v) * float64(r[i])
		}
		return s
	}
	loss()
	for _, x := range inputs {
		clear(x.Grad)
	}
	for _, p := range params {
		clear(p.Grad)
	}
	copy(out.Grad, r)
	l.Backward()

	const eps = 1e-2
	check := func(what string, data, grad []float32) {
		idx := rng.Perm(len(data))
		if len(idx) > maxPer {
			idx = idx[:maxPer]
		}
		for _, i := range idx {
			old := data[i]
			data[i] = old + eps
			lp := loss()
			data[i] = old - eps
			lm := loss()
			data[i] = old
			num := (lp - lm) / (2 * eps)
			got := float64(grad[i])
			if math.Abs(num-got) > 2e-2*math.Max(1, math.Abs(num)) {
				t.Errorf("%s[%d]: analytic %.6g, finite difference %.6g", what, i, got, num)
			}
		}
	}
	// Snapshot gradients: the check's forward passes must not disturb them.
	for _, x := range inputs {
		g := append([]float32(nil), x.Grad...)
		check("input "+x.Name, x.Data, g)
	}
	for _, p := range params {
		if !p.Trainable() {
			continue
		}
		g := append([]float32(nil), p.Grad...)
		check("param "+p.Name, p.Data, g)
	}
}

func TestPoolRunsEveryIndexOnce(t *testing.T) {
	p := NewPool(3)
	for _, n := range []int{0, 1, 2, 5, 100} {
		hits := make([]int32, n)
		p.Run(n, func(w, i int) {
			if w < 0 || w >= 3 {
				t.Errorf("worker %d out of range", w)
			}
			hits[i]++
		})
		for i, h := range hits {
			if h != 1 {
				t.Fatalf("n=%d: index %d ran %d times", n, i, h)
			}
		}
	}
}
