package devicesim_test

import (
	"math/rand/v2"
	"testing"

	"bayesnas/bayes"
	"bayesnas/models"
	"bayesnas/models/backendtest"
	"bayesnas/nn"
	"bayesnas/nn/devicesim"
)

// archSet is one group over every architecture variable of a network.
type archSet struct{ groups []*bayes.Group }

func (s archSet) Priors() []*bayes.Group { return s.groups }
func (s archSet) ApplyDependency()       { bayes.Independent(s.groups) }

// TestSearchMath: the curvature of a supernet's architecture weights (the
// per-sample gradients through nn.PerSampleWeighter) and the group
// penalty's gradient, as the search computes them, on the simulated device
// and on the CPU.
func TestSearchMath(t *testing.T) {
	g, _, err := models.ProxyNetwork(backendtest.SmallProxySupernet())
	if err != nil {
		t.Fatal(err)
	}
	const batch = 6
	run := func(be nn.Backend) (map[string]float64, []float32, float64) {
		net, err := models.Compile(g, be, batch)
		if err != nil {
			t.Fatal(err)
		}
		if err := models.InitParams(net, g, 1); err != nil {
			t.Fatal(err)
		}
		c, err := bayes.NewCurvature(net, bayes.EmpiricalFisher, 1, bayes.WeightedSums)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(4, 5))
		x := make([]float32, batch*net.Input.PerSample())
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		labels := make([]int32, batch)
		for i := range labels {
			labels[i] = int32(rng.IntN(net.Output.PerSample()))
		}
		if err := c.AddBatch(x, labels); err != nil {
			t.Fatal(err)
		}
		h := map[string]float64{}
		for v, hv := range c.Diagonal() {
			h[v.P.Name] = hv
		}
		grp := &bayes.Group{Name: "all", Lambda: 0.5, Omega: 2}
		var arch []*nn.Param
		for _, p := range net.Params {
			if p.Kind == nn.ArchVar {
				grp.Vars = append(grp.Vars, bayes.Var{P: p})
				arch = append(arch, p)
			}
		}
		net.ZeroGrad()
		pen := bayes.AddPenaltyGrad(archSet{[]*bayes.Group{grp}})
		var grads []float32
		for _, p := range arch {
			grads = append(grads, p.HostGrad()...)
		}
		return h, grads, pen
	}
	hd, gd, pd := run(devicesim.New(2))
	hc, gc, pc := run(nn.NewCPU(nn.DefaultGemm(), 2))
	if len(hc) == 0 || len(hd) != len(hc) {
		t.Fatalf("curvature over %d variables on devicesim, %d on the CPU", len(hd), len(hc))
	}
	for name, want := range hc {
		if got := hd[name]; got != want {
			t.Errorf("curvature of %s: %g on devicesim, %g on the CPU", name, got, want)
		}
	}
	if pd != pc || !(pc > 0) {
		t.Errorf("penalty %g on devicesim, %g on the CPU", pd, pc)
	}
	for i := range gc {
		if gd[i] != gc[i] || gc[i] == 0 {
			t.Fatalf("penalty gradient %d: %g on devicesim, %g on the CPU", i, gd[i], gc[i])
		}
	}
}
