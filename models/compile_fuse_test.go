package models

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"bayesnas/nn"
)

// unfusing hides the backend's nn.BNFuser, so Compile builds every node's
// own layer: the reference the fused network must equal.
type unfusing struct{ nn.Backend }

// fusedReaders counts, by the reader's op, the batch norms that a compiled
// network runs inside their reader's layer.
func fusedReaders(t *testing.T, g *Graph, net *nn.Network) map[string]int {
	t.Helper()
	skipped := reflect.TypeOf(nn.Skipped(nil))
	readers := map[string][]*Node{}
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			readers[in] = append(readers[in], n)
		}
	}
	counts := map[string]int{}
	for i, l := range net.Layers {
		if reflect.TypeOf(l) != skipped {
			continue
		}
		n := g.Nodes[i]
		if n.Op != OpBN || len(readers[n.Name]) != 1 {
			t.Fatalf("node %s (%s, %d readers) was skipped", n.Name, n.Op, len(readers[n.Name]))
		}
		counts[readers[n.Name][0].Op]++
	}
	return counts
}

// trainTwice runs two SGD steps of net from the given input and labels and
// returns the logits of both, an evaluation pass's logits, and every
// parameter (data and gradient, running statistics included) after them.
func trainTwice(t *testing.T, net *nn.Network, x []float32, labels []int32) [][]float32 {
	t.Helper()
	opt, err := nn.NewSGD(net.Params, nn.SGDConfig{Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true})
	if err != nil {
		t.Fatal(err)
	}
	var lossFn nn.SoftmaxCrossEntropy
	var out [][]float32
	for range 2 {
		copy(net.Input.Data, x)
		net.ZeroGrad()
		net.Forward(true)
		if _, _, err := lossFn.Forward(net.Output, labels); err != nil {
			t.Fatal(err)
		}
		net.Backward()
		opt.Step(0.05)
		out = append(out, append([]float32(nil), net.Output.Data...))
	}
	net.Forward(false)
	out = append(out, append([]float32(nil), net.Output.Data...))
	for _, p := range net.Params {
		out = append(out, p.Data, p.Grad)
	}
	return out
}

func compileInit(t *testing.T, g *Graph, be nn.Backend, batch int) *nn.Network {
	t.Helper()
	net, err := Compile(g, be, batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitParams(net, g, 1); err != nil {
		t.Fatal(err)
	}
	return net
}

// checkFusion compiles g fused and unfused, checks which batch norms were
// fused, and requires two training steps and an evaluation pass to give
// bit-identical logits, weights, gradients and running statistics; the
// fused network again on 1 and 3 workers must agree bit for bit too.
func checkFusion(t *testing.T, g *Graph, batch int, want map[string]int) {
	t.Helper()
	before, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(41, 42))
	x := make([]float32, batch*g.Input.Shape[0]*g.Input.Shape[1]*g.Input.Shape[2])
	randomize(rng, x)
	labels := make([]int32, batch)
	shapes, err := g.InferShapes()
	if err != nil {
		t.Fatal(err)
	}
	classes := shapes[g.Output][0]
	for i := range labels {
		labels[i] = int32(rng.IntN(classes))
	}
	var ref [][]float32
	for _, c := range []struct {
		name    string
		be      nn.Backend
		unfused bool
	}{
		{"unfused", unfusing{nn.NewCPU(nn.DefaultGemm(), 2)}, true},
		{"fused, 2 workers", nn.NewCPU(nn.DefaultGemm(), 2), false},
		{"fused, 1 worker", nn.NewCPU(nn.DefaultGemm(), 1), false},
		{"fused, 3 workers", nn.NewCPU(nn.DefaultGemm(), 3), false},
	} {
		net := compileInit(t, g, c.be, batch)
		got := fusedReaders(t, g, net)
		if c.unfused && len(got) != 0 {
			t.Fatalf("%s: fused %v", c.name, got)
		}
		if !c.unfused && !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: fused batch norms by reader %v, want %v", c.name, got, want)
		}
		res := trainTwice(t, net, x, labels)
		if ref == nil {
			ref = res
			continue
		}
		for i := range ref {
			for j := range ref[i] {
				if math.Float32bits(ref[i][j]) != math.Float32bits(res[i][j]) {
					t.Fatalf("%s: tensor %d element %d: %g, unfused %g", c.name, i, j, res[i][j], ref[i][j])
				}
			}
		}
	}
	if after, _ := json.Marshal(g); string(after) != string(before) {
		t.Fatal("compiling changed the graph")
	}
}

// TestBNFusionPyramidNetDefault: the default PyramidNet fuses each block's
// bn2 and bn3 and the head's BN with their ReLU (2*9+1) and each block's
// bn4 with its residual add (9), and trains exactly as unfused.
func TestBNFusionPyramidNetDefault(t *testing.T) {
	g, err := PyramidNet(PyramidNetDefault())
	if err != nil {
		t.Fatal(err)
	}
	checkFusion(t, g, 4, map[string]int{OpReLU: 19, OpAdd: 9})
}

// TestBNFusionPatterns covers what fuses and what must not: a BN read by a
// ReLU or by a two-input add fuses; of an add of two BNs only the first; a
// BN read twice (by a ReLU and a three-input add) and a BN added to its own
// input do not.
func TestBNFusionPatterns(t *testing.T) {
	b := NewGraphBuilder("bnpatterns", "x", [3]int{2, 5, 5})
	c0 := b.Conv("c0", "x", 4, 3, 1, 1)
	r := b.ReLU("r0", b.BN("bn0", c0))                    // fuses with its ReLU
	a := b.Node("a0", OpAdd, Attrs{}, b.BN("bn1", r), c0) // fuses with the add
	both := b.Node("a1", OpAdd, Attrs{}, b.BN("bn2", a), b.BN("bn3", a))
	twice := b.BN("bn4", both) // read by two nodes: not fused
	t3 := b.Node("a2", OpAdd, Attrs{}, twice, b.ReLU("r4", twice), both)
	own := b.Node("a3", OpAdd, Attrs{}, b.BN("bn5", t3), t3) // x + BN(x): not fused
	fc := b.Node("fc", OpLinear, Attrs{OutChannels: 3}, b.Node("gap", OpGAP, Attrs{}, b.ReLU("r6", b.BN("bn6", own))))
	g, err := b.Finish(fc, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFusion(t, g, 3, map[string]int{OpReLU: 2, OpAdd: 2})
}
