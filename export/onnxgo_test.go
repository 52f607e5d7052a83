package export

import (
	"math"
	"testing"

	onnx "github.com/owulveryck/onnx-go"
	"github.com/owulveryck/onnx-go/backend/x/gorgonnx"
	"gorgonia.org/tensor"

	"bayesnas/models"
)

// TestOnnxGoReadsPlainConvNet gives our file to an independent reader,
// onnx-go v0.5.0 with its gorgonia backend, on the plain-conv subset that
// backend runs (no groups, no AveragePool), and compares its output with the
// engine's.
func TestOnnxGoReadsPlainConvNet(t *testing.T) {
	conv := func(out, k, p int) models.Attrs {
		return models.Attrs{OutChannels: out, Kernel: k, Stride: 1, Pad: p, Dilation: 1, Groups: 1, Bias: true}
	}
	g := &models.Graph{Format: models.Format, Name: "plain", Input: models.Input{Name: "image", Shape: []int{2, 8, 8}},
		Nodes: []*models.Node{
			{Name: "c1", Op: models.OpConv, Inputs: []string{"image"}, Attrs: conv(4, 3, 1)},
			{Name: "bn1", Op: models.OpBN, Inputs: []string{"c1"}, Attrs: models.Attrs{Eps: 1e-5, Momentum: 0.1}},
			{Name: "r1", Op: models.OpReLU, Inputs: []string{"bn1"}},
			{Name: "p1", Op: models.OpMaxPool, Inputs: []string{"r1"}, Attrs: models.Attrs{Kernel: 2, Stride: 2}},
			{Name: "c2", Op: models.OpConv, Inputs: []string{"p1"}, Attrs: conv(6, 3, 1)},
			{Name: "r2", Op: models.OpReLU, Inputs: []string{"c2"}},
			{Name: "fc", Op: models.OpLinear, Inputs: []string{"r2"}, Attrs: models.Attrs{OutChannels: 3, Bias: true}},
		}, Output: "fc"}
	const n = 2
	net := compiled(t, g, n, 11)
	b, err := Marshal(g, net.Params, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, n*2*8*8)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	copy(net.Input.Data, x)
	net.Forward(false)
	want := net.Output.Data

	backend := gorgonnx.NewGraph()
	model := onnx.NewModel(backend)
	if err := model.UnmarshalBinary(b); err != nil {
		t.Fatalf("onnx-go cannot read our file: %v", err)
	}
	in := tensor.New(tensor.WithShape(n, 2, 8, 8), tensor.Of(tensor.Float32), tensor.WithBacking(append([]float32(nil), x...)))
	if err := model.SetInput(0, in); err != nil {
		t.Fatal(err)
	}
	if err := backend.Run(); err != nil {
		t.Fatalf("onnx-go run: %v", err)
	}
	outs, err := model.GetOutputTensors()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := outs[0].Data().([]float32)
	if !ok || len(got) != len(want) {
		t.Fatalf("onnx-go output %v (%T), want %d float32 values", outs[0].Shape(), outs[0].Data(), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-5+1e-4*math.Abs(float64(want[i])) {
			t.Errorf("output %d: onnx-go %g, engine %g", i, got[i], want[i])
		}
	}
}
