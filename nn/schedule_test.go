package nn

import (
	"math"
	"testing"
)

func TestSchedules(t *testing.T) {
	cos, err := NewCosine(0.1, 0.001, 0, 5, 105)
	if err != nil {
		t.Fatal(err)
	}
	step, err := NewStepDecay(0.1, 0.1, 0.01, []int{10, 20}, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s    Schedule
		step int
		want float64
	}{
		{cos, 0, 0},
		{cos, 2, 0.04},
		{cos, 5, 0.1},
		{cos, 55, 0.001 + 0.099*0.5}, // halfway: cos(pi/2) = 0
		{cos, 30, 0.001 + 0.099*(1+math.Cos(math.Pi/4))/2}, // a quarter of the way
		{cos, 105, 0.001},
		{cos, 500, 0.001},
		{step, 0, 0.01},
		{step, 2, 0.055},
		{step, 4, 0.1},
		{step, 9, 0.1},
		{step, 10, 0.01},
		{step, 19, 0.01},
		{step, 20, 0.001},
		{step, 1000, 0.001},
	} {
		if got := tc.s.LR(tc.step); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%T.LR(%d) = %g, want %g", tc.s, tc.step, got, tc.want)
		}
	}
	_, err = NewCosine(0.1, 0.2, 0, 0, 10)
	wantErr(t, "min above base", err, "min")
	_, err = NewCosine(0.1, 0, 0, 10, 10)
	wantErr(t, "warm-up too long", err, "total")
	_, err = NewStepDecay(0.1, 0.1, 0, []int{20, 10}, 0)
	wantErr(t, "unsorted milestones", err, "milestones")
}
