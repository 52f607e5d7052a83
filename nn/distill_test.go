package nn

import (
	"math"
	"strings"
	"testing"
)

// naiveDistillation computes the distillation loss straight from its
// definition, in float64, with plain softmaxes.
func naiveDistillation(z, t [][]float32, labels []int32, alpha, temp, smoothing float64) float64 {
	softmax := func(v []float32, temp float64) []float64 {
		p := make([]float64, len(v))
		var s float64
		for j, x := range v {
			p[j] = math.Exp(float64(x) / temp)
			s += p[j]
		}
		for j := range p {
			p[j] /= s
		}
		return p
	}
	var total float64
	for i := range z {
		k := len(z[i])
		p, ps, pt := softmax(z[i], 1), softmax(z[i], temp), softmax(t[i], temp)
		var ce, kl float64
		for j := range k {
			q := smoothing / float64(k)
			if j == int(labels[i]) {
				q += 1 - smoothing
			}
			ce -= q * math.Log(p[j])
			kl += pt[j] * math.Log(pt[j]/ps[j])
		}
		total += (1-alpha)*ce + alpha*temp*temp*kl
	}
	return total / float64(len(z))
}

func TestDistillationAgainstDefinition(t *testing.T) {
	z := [][]float32{{0.3, -1.2, 2.0, 0.5}, {1.5, 1.4, -0.3, 0}, {-2, 0.1, 0.2, 3}}
	teacher := [][]float32{{1, -1, 3, 0}, {2, 0.5, -1, 0.2}, {-1, 0, 0.4, 2}}
	labels := []int32{2, 0, 3}
	var flat []float32
	for _, r := range teacher {
		flat = append(flat, r...)
	}
	for _, tc := range []struct{ alpha, temp, smoothing float32 }{
		{0, 4, 0}, {0.5, 4, 0}, {1, 1, 0}, {0.7, 2.5, 0.1},
	} {
		l := Distillation{Alpha: tc.alpha, Temperature: tc.temp, Smoothing: tc.smoothing}
		logits := logitsValue(z)
		got, correct, err := l.Forward(logits, flat, labels)
		if err != nil {
			t.Fatal(err)
		}
		want := naiveDistillation(z, teacher, labels, float64(tc.alpha), float64(tc.temp), float64(tc.smoothing))
		if math.Abs(got-want) > 1e-6*max(1, math.Abs(want)) || correct != 3 {
			t.Errorf("%+v: loss %.8f correct %d, want %.8f and 3", tc, got, correct, want)
		}
		// Gradient by central differences of the loss.
		grad := append([]float32(nil), logits.Grad...)
		plain := logitsValue(z)
		plain.Grad = nil
		const eps = 1e-3
		for i := range plain.Data {
			old := plain.Data[i]
			plain.Data[i] = old + eps
			lp, _, _ := l.Forward(plain, flat, labels)
			plain.Data[i] = old - eps
			lm, _, _ := l.Forward(plain, flat, labels)
			plain.Data[i] = old
			if num := (lp - lm) / (2 * eps); math.Abs(num-float64(grad[i])) > 2e-4 {
				t.Errorf("%+v: grad[%d] = %g, finite difference %g", tc, i, grad[i], num)
			}
		}
	}
}

// A student that already matches its teacher gets no pull from the soft
// term: with alpha 1 the loss and gradient are zero.
func TestDistillationMatchedTeacher(t *testing.T) {
	z := [][]float32{{0.3, -1.2, 2.0}, {100, -100, 0}}
	logits := logitsValue(z)
	loss, _, err := Distillation{Alpha: 1, Temperature: 3}.Forward(logits, append(append([]float32(nil), z[0]...), z[1]...), []int32{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(loss) > 1e-9 {
		t.Errorf("loss %g, want 0", loss)
	}
	for i, g := range logits.Grad {
		if math.Abs(float64(g)) > 1e-7 {
			t.Errorf("grad[%d] = %g, want 0", i, g)
		}
	}
}

func TestDistillationErrors(t *testing.T) {
	logits := logitsValue([][]float32{{1, 2}, {3, 4}})
	for _, tc := range []struct {
		l       Distillation
		teacher []float32
		want    string
	}{
		{Distillation{Alpha: 1.5, Temperature: 1}, make([]float32, 4), "alpha 1.5"},
		{Distillation{Alpha: 0.5, Temperature: 0}, make([]float32, 4), "temperature 0"},
		{Distillation{Alpha: 0.5, Temperature: float32(math.NaN())}, make([]float32, 4), "temperature NaN"},
		{Distillation{Alpha: 0.5, Temperature: 2}, make([]float32, 3), "3 teacher logits for a batch of 2 x 2"},
	} {
		_, _, err := tc.l.Forward(logits, tc.teacher, []int32{0, 1})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one saying %q", tc.l, err, tc.want)
		}
	}
}
