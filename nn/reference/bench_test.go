package reference_test

import (
	"testing"

	"bayesnas/models"
	"bayesnas/models/backendtest"
	"bayesnas/nn"
	"bayesnas/nn/reference"
)

// BenchmarkTrainStep times one training step (forward, loss, backward,
// SGD) at batch 8 of backendtest.SmallPyramidNet and of the demo network
// models.PyramidNetDefault() on the CPU backend (2 workers) and on the
// reference backend, for the record: the reference is not meant to be fast.
func BenchmarkTrainStep(b *testing.B) {
	for _, net := range []struct {
		name string
		cfg  models.PyramidNetConfig
	}{{"small", backendtest.SmallPyramidNet()}, {"default", models.PyramidNetDefault()}} {
		g, err := models.PyramidNet(net.cfg)
		if err != nil {
			b.Fatal(err)
		}
		for _, be := range []nn.Backend{nn.NewCPU(nn.DefaultGemm(), 2), reference.New()} {
			name := "cpu"
			if be.Name() == "reference" {
				name = "reference"
			}
			b.Run(net.name+"/"+name, func(b *testing.B) {
				tr, err := backendtest.NewTrainer(g, be, 8)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tr.Step(0); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if _, err := tr.Step(i + 1); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(8*b.N)/b.Elapsed().Seconds(), "images/s")
			})
		}
	}
}
