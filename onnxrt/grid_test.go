//go:build cgo

package onnxrt

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/export"
	"bayesnas/hwprofile"
)

// The grid points a plan adds for splits, concats and channel shuffles are
// models ONNX Runtime runs, and compute what their key says: a shuffle of C
// channels permutes them, a split's first piece and a concat's first input
// are the leading channels of the even cut. (One run each, nothing timed.)
func TestPieceGridMicroModelsRun(t *testing.T) {
	needORT(t)
	var nets []*export.Model
	for _, s := range []string{"proxy", "tree"} {
		g, err := hwprofile.Base(s)
		if err != nil {
			t.Fatal(err)
		}
		m, err := hwprofile.Network(g, nil)
		if err != nil {
			t.Fatal(err)
		}
		nets = append(nets, m)
	}
	jobs, err := hwprofile.Plan(nets, hwprofile.GridOptions{Step: 8})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ran := map[string]int{}
	for i, j := range jobs {
		op := strings.Fields(j.Key.Kind)[0]
		if (op != "Split" && op != "Concat" && op != "Shuffle") || j.Key.C%8 != 0 {
			continue
		}
		path := filepath.Join(dir, "m.onnx")
		if err := os.WriteFile(path, j.Model.Marshal(), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, SessionOptions{IntraOpThreads: 1})
		if err != nil {
			t.Fatalf("job %d %s: %v", i, j.Key, err)
		}
		hw := j.Key.H * j.Key.W
		x := make([]float32, prod(s.InShape))
		for v := range x {
			x[v] = float32(v)
		}
		y, err := s.RunBatch(x, 1, 1)
		s.Close()
		if err != nil {
			t.Fatalf("job %s: %v", j.Key, err)
		}
		c := j.Key.C
		switch op {
		case "Shuffle":
			var g int
			if _, err := fmt.Sscanf(j.Key.Kind, "Shuffle g=%d", &g); err != nil {
				t.Fatal(err)
			}
			// Output channel a*g+b is input channel b*(c/g)+a.
			for a := range c / g {
				for b := range g {
					if got, want := y[(a*g+b)*hw], x[(b*(c/g)+a)*hw]; got != want {
						t.Fatalf("%s: output channel %d is %v, want input channel %d (%v)", j.Key, a*g+b, got, b*(c/g)+a, want)
					}
				}
			}
		case "Split":
			if len(x) != c*hw || len(y) > len(x) || y[len(y)-1] != x[len(y)-1] {
				t.Fatalf("%s: %d values in, %d out: not the leading piece", j.Key, len(x), len(y))
			}
		case "Concat":
			if len(y) != c*hw || y[len(x)-1] != x[len(x)-1] {
				t.Fatalf("%s: %d values in, %d out: not the leading piece", j.Key, len(x), len(y))
			}
		}
		ran[op]++
	}
	for _, op := range []string{"Split", "Concat", "Shuffle"} {
		if ran[op] < 3 {
			t.Errorf("%d %s grid models ran", ran[op], op)
		}
	}
	t.Logf("ran %v", ran)
}
