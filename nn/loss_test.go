package nn

import (
	"math"
	"testing"
)

func logitsValue(rows [][]float32) *Value {
	v := NewValue("logits", []int{len(rows), len(rows[0])}, true)
	for i, r := range rows {
		copy(v.Data[i*len(r):], r)
	}
	return v
}

func TestSoftmaxCrossEntropyByHand(t *testing.T) {
	// Rows [1,2,3] and [1,0,-1] share log(1+e^-1+e^-2): logZ = 3+c and 1+c.
	c := math.Log(1 + math.Exp(-1) + math.Exp(-2))
	for _, tc := range []struct {
		smoothing float32
		want      float64
	}{
		// label 2 of row 1: logZ-3; label 1 of row 2: logZ-0.
		{0, ((3 + c - 3) + (1 + c - 0)) / 2},
		// q = 0.7*onehot + 0.1: row 1 logZ - 0.7*3 - 0.1*6, row 2 logZ - 0.7*0 - 0.1*0.
		{0.3, ((3 + c - 2.1 - 0.6) + (1 + c)) / 2},
	} {
		logits := logitsValue([][]float32{{1, 2, 3}, {1, 0, -1}})
		loss, correct, err := SoftmaxCrossEntropy{Smoothing: tc.smoothing}.Forward(logits, []int32{2, 1})
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(loss-tc.want) > 1e-6 || correct != 1 {
			t.Errorf("smoothing %g: loss %.8f, correct %d; want %.8f, 1", tc.smoothing, loss, correct, tc.want)
		}
		// Row 1, label 2, no smoothing: grad = (softmax - onehot)/N.
		if tc.smoothing == 0 {
			p2 := math.Exp(3 - (3 + c))
			if math.Abs(float64(logits.Grad[2])-(p2-1)/2) > 1e-6 {
				t.Errorf("grad[0,2] = %g, want %g", logits.Grad[2], (p2-1)/2)
			}
		}
	}
}

func TestSoftmaxCrossEntropyGradient(t *testing.T) {
	for _, smoothing := range []float32{0, 0.1} {
		crit := SoftmaxCrossEntropy{Smoothing: smoothing}
		logits := logitsValue([][]float32{{0.3, -1.2, 2.0, 0.5}, {1.5, 1.4, -0.3, 0}, {-2, 0.1, 0.2, 3}})
		labels := []int32{1, 0, 3}
		// Stale values in Grad must be overwritten, not added to.
		for i := range logits.Grad {
			logits.Grad[i] = 5
		}
		if _, _, err := crit.Forward(logits, labels); err != nil {
			t.Fatal(err)
		}
		grad := append([]float32(nil), logits.Grad...)
		plain := NewValue("plain", logits.Shape, false)
		copy(plain.Data, logits.Data)
		const eps = 1e-3
		for i := range plain.Data {
			old := plain.Data[i]
			plain.Data[i] = old + eps
			lp, _, _ := crit.Forward(plain, labels)
			plain.Data[i] = old - eps
			lm, _, _ := crit.Forward(plain, labels)
			plain.Data[i] = old
			if num := (lp - lm) / (2 * eps); math.Abs(num-float64(grad[i])) > 1e-4 {
				t.Errorf("smoothing %g: grad[%d] = %g, finite difference %g", smoothing, i, grad[i], num)
			}
		}
	}
}

func TestSoftmaxCrossEntropyStableAndErrors(t *testing.T) {
	logits := logitsValue([][]float32{{1000, -1000, 0}, {-1000, 1000, 0}})
	loss, correct, err := SoftmaxCrossEntropy{}.Forward(logits, []int32{0, 0})
	if err != nil {
		t.Fatal(err)
	}
	// Sample 0 is certain and right (loss 0), sample 1 wrong by 2000.
	if math.IsNaN(loss) || math.Abs(loss-1000) > 1e-3 || correct != 1 {
		t.Errorf("extreme logits: loss %g correct %d, want 1000, 1", loss, correct)
	}
	for _, g := range logits.Grad {
		if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
			t.Fatalf("non-finite gradient %v", logits.Grad)
		}
	}
	_, _, err = SoftmaxCrossEntropy{}.Forward(logits, []int32{0, 3})
	wantErr(t, "label out of range", err, "label 3 of sample 1", "[0,3)")
	_, _, err = SoftmaxCrossEntropy{}.Forward(logits, []int32{-1, 0})
	wantErr(t, "negative label", err, "sample 0")
	_, _, err = SoftmaxCrossEntropy{}.Forward(logits, []int32{0})
	wantErr(t, "label count", err, "1 labels for a batch of 2")
	_, _, err = SoftmaxCrossEntropy{Smoothing: 1.5}.Forward(logits, []int32{0, 0})
	wantErr(t, "smoothing", err, "smoothing")
}
