package hwprofile

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"bayesnas/export"
	"bayesnas/models"
)

func network(t *testing.T, g *models.Graph) *export.Model {
	t.Helper()
	m, err := Network(g, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// testNets are networks of every space, small enough for unit tests.
func testNets(t *testing.T) []*models.Graph {
	t.Helper()
	var gs []*models.Graph
	for _, s := range Spaces {
		b, err := Base(s)
		if err != nil {
			t.Fatal(err)
		}
		gs = append(gs, b)
		sample, err := Sample(s, 3, 7)
		if err != nil {
			t.Fatal(err)
		}
		gs = append(gs, sample...)
	}
	return gs
}

// Shapes must agree with the IR's own shape inference on every tensor the
// exporter names after an IR node.
func TestShapesAgreeWithIR(t *testing.T) {
	for _, g := range testNets(t) {
		ir, err := g.InferShapes()
		if err != nil {
			t.Fatal(err)
		}
		m := network(t, g)
		got, err := Shapes(m)
		if err != nil {
			t.Fatalf("%s: %v", g.Name, err)
		}
		checked := 0
		for name, s := range got {
			if want, ok := ir[name]; ok {
				checked++
				if !slices.Equal(s, want) {
					t.Fatalf("%s: %s has shape %v, the IR says %v", g.Name, name, s, want)
				}
			}
		}
		if checked < len(g.Nodes)/3 {
			t.Fatalf("%s: only %d tensors compared", g.Name, checked)
		}
	}
}

// Every node of an exported network lands in exactly one kernel, Conv+Relu
// pairs are fused, and each kernel's micro model is a one-kernel model with
// the same key.
func TestKernelsCoverTheModel(t *testing.T) {
	for _, g := range testNets(t) {
		m := network(t, g)
		ks, err := Kernels(m)
		if err != nil {
			t.Fatalf("%s: %v", g.Name, err)
		}
		n := 0
		fused := 0
		for _, k := range ks {
			n += len(k.Nodes)
			if strings.HasPrefix(k.Key.Kind, "Conv+Relu") {
				fused++
			}
		}
		if n != len(m.Graph.Nodes) {
			t.Fatalf("%s: kernels hold %d nodes, the model %d", g.Name, n, len(m.Graph.Nodes))
		}
		if fused == 0 {
			t.Errorf("%s: no Conv+Relu kernel", g.Name)
		}
		shapes, _ := Shapes(m)
		for _, k := range ks {
			mm := MicroModel(m, k, shapes)
			mk, err := Kernels(mm)
			if err != nil {
				t.Fatalf("%s: micro model of %s: %v", g.Name, k.Key, err)
			}
			if len(mk) != 1 || mk[0].Key != k.Key {
				t.Fatalf("%s: micro model of %s has kernels %v", g.Name, k.Key, mk)
			}
		}
	}
}

// A plan's grid points are micro models whose one kernel has the grid key.
func TestPlanGrid(t *testing.T) {
	g, err := Base("pyramidnet")
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := Plan([]*export.Model{network(t, g)}, GridOptions{Step: 8})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[Key]bool{}
	grid, twins := 0, 0
	for _, j := range jobs {
		if seen[j.Key] {
			t.Fatalf("%s planned twice", j.Key)
		}
		seen[j.Key] = true
		ks, err := Kernels(j.Model)
		if err != nil {
			t.Fatalf("%s: %v", j.Key, err)
		}
		if len(ks) != 1 || ks[0].Key != j.Key {
			t.Fatalf("job %s: micro model has kernels %v", j.Key, ks)
		}
		if j.Key.C%8 == 0 && (j.Key.Out == 0 || j.Key.Out%8 == 0) {
			grid++
		}
		// PyramidNet's expanding conv3 is never fused with a ReLU; its
		// twin is planned all the same.
		if strings.HasPrefix(j.Key.Kind, "Conv+Relu k=1") && j.Key.Out > 128 {
			twins++
		}
	}
	// Every width compression can leave (multiples of 8) is on a grid: the
	// random-width networks are priced exactly or by interpolation.
	p := sampleProfile()
	p.Entries = nil
	for _, j := range jobs {
		p.Entries = append(p.Entries, Entry{Key: j.Key, MedianMs: 1, P90Ms: 1, Repeats: 1})
	}
	p.Calibration = nil
	nets, err := Sample("pyramidnet", 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range nets {
		ks, err := Kernels(network(t, g))
		if err != nil {
			t.Fatal(err)
		}
		pr, err := p.PredictKernels(ks, "")
		if err != nil {
			t.Fatalf("%s: %v", g.Name, err)
		}
		if math.Abs(pr.TotalMs-(p.OverheadMs+float64(len(ks)))) > 1e-9 {
			t.Fatalf("%s: %v, want %d kernels at 1 ms", g.Name, pr.TotalMs, len(ks))
		}
	}
	if grid < len(jobs)/2 {
		t.Fatalf("%d grid points of %d jobs", grid, len(jobs))
	}
	if twins == 0 {
		t.Fatal("no Conv+Relu twin of the unfused 1x1 convs planned")
	}
}

// Prediction on a hand-built graph is the sum the profile's entries say.
func TestPredictHandBuilt(t *testing.T) {
	b := models.NewGraphBuilder("hand", "input", [3]int{1, 14, 14})
	x := b.Conv("c1", "input", 8, 3, 1, 1)
	x = b.BN("bn1", x)
	x = b.ReLU("r1", x)
	x = b.Node("pool", models.OpMaxPool, models.Attrs{Kernel: 3, Stride: 1, Pad: 1}, x)
	y := b.Conv("c2", x, 16, 3, 1, 1)
	y = b.BN("bn2", y)
	y = b.ReLU("r2", y)
	y = b.Node("gap", models.OpGAP, models.Attrs{}, y)
	y = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 10, Bias: true}, y)
	g, err := b.Finish(y, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := Kernels(network(t, g))
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{
		{Kind: "Conv+Relu k=3 s=1 p=1 d=1 g=1 bias", C: 1, H: 14, W: 14, Out: 8},
		{Kind: "MaxPool k=3 s=1 p=1", C: 8, H: 14, W: 14},
		{Kind: "Conv+Relu k=3 s=1 p=1 d=1 g=1 bias", C: 8, H: 14, W: 14, Out: 16},
		{Kind: "GlobalAveragePool", C: 16, H: 14, W: 14},
		{Kind: "Flatten+Gemm", C: 16, H: 1, W: 1, Out: 10},
	}
	var got []Key
	for _, k := range ks {
		got = append(got, k.Key)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("kernels %v, want %v", got, want)
	}
	p := sampleProfile()
	p.Entries = nil
	for i, k := range want {
		p.Entries = append(p.Entries, Entry{Key: k, MedianMs: float64(i + 1), P90Ms: float64(i + 1), Repeats: 1})
	}
	p.Calibration = nil
	pr, err := p.PredictKernels(ks, "")
	if err != nil {
		t.Fatal(err)
	}
	if pr.TotalMs != p.OverheadMs+15 || pr.KernelsMs != 15 {
		t.Fatalf("total %v kernels %v, want %v and 15", pr.TotalMs, pr.KernelsMs, p.OverheadMs+15)
	}
	if wantMACs := int64(14*14*8*9 + 14*14*16*8*9 + 16*10); pr.MACs != wantMACs {
		t.Fatalf("MACs %d, want %d", pr.MACs, wantMACs)
	}
	// Calibrated: scale x kernels + per-kernel cost x 5 kernels.
	p.Calibration = []Calibration{{Space: "", Scale: 2, PerKernelMs: 0.25}, {Space: "tree", Scale: 3}}
	if pr, err = p.PredictKernels(ks, ""); err != nil {
		t.Fatal(err)
	}
	if want := p.OverheadMs + 2*15 + 0.25*5; math.Abs(pr.TotalMs-want) > 1e-12 || pr.Calibration != "all" {
		t.Fatalf("calibrated total %v (%s), want %v with the profile-wide calibration", pr.TotalMs, pr.Calibration, want)
	}
	// A space's own calibration, where the profile has one.
	if pr, err = p.PredictKernels(ks, "tree"); err != nil {
		t.Fatal(err)
	}
	if want := p.OverheadMs + 3*15; math.Abs(pr.TotalMs-want) > 1e-12 || pr.Calibration != "tree" {
		t.Fatalf("tree calibration: total %v (%s), want %v", pr.TotalMs, pr.Calibration, want)
	}
	// A profile without the pool's entry names the node.
	p.Entries = slices.Delete(p.Entries, 1, 2)
	p.idx = nil
	if _, err := p.PredictKernels(ks, ""); err == nil || !strings.Contains(err.Error(), `node "pool"`) {
		t.Fatalf("error %v, want one naming node pool", err)
	}
}

// Calibrate recovers an exact linear relation, and matches a brute-force
// search over a grid of candidate fits on a noisy one.
func TestCalibrate(t *testing.T) {
	p := sampleProfile()
	p.Calibration = []Calibration{{Scale: 1, Networks: 3}}
	var preds []*Prediction
	var meas []float64
	for i := range 12 {
		kernels := 0.1 + 0.05*float64(i)
		n := 10 + (i*i)%7
		preds = append(preds, &Prediction{KernelsMs: kernels, Nodes: make([]NodePrice, n)})
		meas = append(meas, p.OverheadMs+1.2*kernels+0.003*float64(n))
	}
	if err := p.Calibrate("proxy", preds, meas); err != nil {
		t.Fatal(err)
	}
	c := p.calibration("proxy")
	if c == nil || c.Space != "proxy" || len(p.Calibration) != 2 {
		t.Fatalf("calibrations %+v: want proxy's beside the profile-wide one", p.Calibration)
	}
	if math.Abs(c.Scale-1.2) > 1e-6 || math.Abs(c.PerKernelMs-0.003) > 1e-6 || c.Networks != 12 {
		t.Fatalf("calibration %+v, want scale 1.2, 0.003 ms per kernel", c)
	}
	// Noisy: the least-squares fit of the relative error is no worse than
	// any grid point.
	for i := range meas {
		meas[i] *= 1 + 0.05*math.Sin(float64(7*i))
	}
	if err := p.Calibrate("proxy", preds, meas); err != nil {
		t.Fatal(err)
	}
	if len(p.Calibration) != 2 {
		t.Fatalf("calibrating proxy again left %d calibrations, want it replaced", len(p.Calibration))
	}
	sse := func(s, k float64) float64 {
		v := 0.0
		for i, pr := range preds {
			d := (p.OverheadMs + s*pr.KernelsMs + k*float64(len(pr.Nodes)) - meas[i]) / meas[i]
			v += d * d
		}
		return v
	}
	c = p.calibration("proxy")
	best := sse(c.Scale, c.PerKernelMs)
	for s := 0.5; s <= 2.5; s += 0.01 {
		for k := 0.0; k <= 0.01; k += 0.0001 {
			if v := sse(s, k); v < best-1e-9 {
				t.Fatalf("grid point (%v, %v) fits better (%v) than the least squares %+v (%v)", s, k, v, c, best)
			}
		}
	}
	// Every network with the same kernel count (PyramidNets at any width):
	// the scale alone, however well an intercept would fit these.
	for i := range preds {
		preds[i].Nodes = make([]NodePrice, 54)
		meas[i] = p.OverheadMs + 0.7*preds[i].KernelsMs + 0.25
	}
	if err := p.Calibrate("pyramidnet", preds, meas); err != nil {
		t.Fatal(err)
	}
	if c := p.calibration("pyramidnet"); c.PerKernelMs != 0 || c.Scale <= 0.7 {
		t.Fatalf("calibration %+v on networks of 54 kernels each: want the scale alone", c)
	}
	// Too few networks: an error, the calibration unchanged.
	if err := p.Calibrate("proxy", preds[:2], meas[:2]); err == nil {
		t.Fatal("calibrated on 2 networks")
	}
}

// Split and Concat are keyed by their piece count and total channels (the
// input's for a Split, the output's for a Concat), whatever the cut.
func TestPieceKeys(t *testing.T) {
	b := models.NewGraphBuilder("pieces", "input", [3]int{1, 8, 8})
	x := b.Conv("c1", "input", 24, 3, 1, 1)
	s := b.Node("s", models.OpSlice, models.Attrs{Start: 8, End: 16}, x)
	y := b.Conv("c2", s, 16, 1, 1, 1)
	z := b.Node("cat", models.OpConcat, models.Attrs{}, y, x, s)
	// A cell whose two nodes are one value concatenates it twice.
	z2 := b.Node("cat2", models.OpConcat, models.Attrs{}, y, y, s)
	z = b.Node("join", models.OpConcat, models.Attrs{}, z, z2)
	z = b.Node("gap", models.OpGAP, models.Attrs{}, z)
	g, err := b.Finish(z, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := network(t, g)
	ks, err := Kernels(m)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Key{
		"s":    {Kind: "Split n=3", C: 24, H: 8, W: 8},
		"cat":  {Kind: "Concat n=3", C: 16 + 24 + 8, H: 8, W: 8},
		"cat2": {Kind: "Concat n=3", C: 16 + 16 + 8, H: 8, W: 8},
	}
	shapes, _ := Shapes(m)
	for _, k := range ks {
		w, ok := want[k.Name]
		if !ok {
			continue
		}
		delete(want, k.Name)
		if k.Key != w {
			t.Errorf("%s: key %s, want %s", k.Name, k.Key, w)
		}
		// The micro model (other pieces as constants) has the same key.
		micro := MicroModel(m, k, shapes)
		mk, err := Kernels(micro)
		if err != nil || len(mk) != 1 || mk[0].Key != w {
			t.Errorf("%s: micro model kernels %v (%v), want one %s", k.Name, mk, err, w)
		}
		// Its input stays an input (an initializer of the same name would
		// make ONNX Runtime see a model without inputs).
		for _, in := range micro.Graph.Initializers {
			if in.Name == micro.Graph.Inputs[0].Name {
				t.Errorf("%s: the micro model's input %s is also a constant", k.Name, in.Name)
			}
		}
	}
	if len(want) > 0 {
		t.Fatalf("no kernels %v", want)
	}
}

// The splits, concats and channel shuffles of proxy and tree cells get
// channel grids like the convs: every grid point's micro model has the grid
// key (the even cut of its channels), and a multiple of 8 below a family's
// widest is priced from the grid.
func TestPlanGridPieces(t *testing.T) {
	var nets []*export.Model
	for _, s := range []string{"proxy", "tree"} {
		g, err := Base(s)
		if err != nil {
			t.Fatal(err)
		}
		nets = append(nets, network(t, g))
	}
	jobs, err := Plan(nets, GridOptions{Step: 8})
	if err != nil {
		t.Fatal(err)
	}
	widest := map[string]int{}
	grid := map[string]int{}
	p := sampleProfile()
	p.Entries, p.Calibration = nil, nil
	for _, j := range jobs {
		p.Entries = append(p.Entries, Entry{Key: j.Key, MedianMs: 1, P90Ms: 1, Repeats: 1})
		op := strings.Fields(j.Key.Kind)[0]
		if op != "Split" && op != "Concat" && op != "Shuffle" {
			continue
		}
		ks, err := Kernels(j.Model)
		if err != nil {
			t.Fatalf("%s: %v", j.Key, err)
		}
		if len(ks) != 1 || ks[0].Key != j.Key {
			t.Fatalf("job %s: micro model has kernels %v", j.Key, ks)
		}
		f := j.Key.family()
		widest[f] = max(widest[f], j.Key.C)
		if j.Key.C%8 == 0 {
			grid[op]++
		}
	}
	for _, op := range []string{"Split", "Concat", "Shuffle"} {
		if grid[op] < 3 {
			t.Errorf("%d %s grid points", grid[op], op)
		}
	}
	for f, hi := range widest {
		kind, hw, _ := strings.Cut(f, "@")
		var h, w int
		if _, err := fmt.Sscanf(hw, "%dx%d", &h, &w); err != nil {
			t.Fatal(err)
		}
		n := 1
		if _, after, ok := strings.Cut(kind, " n="); ok {
			n, _ = strconv.Atoi(after)
		}
		for c := 8; c <= hi; c += 8 {
			if c < n {
				continue
			}
			if _, _, err := p.Price(Key{Kind: kind, C: c, H: h, W: w}); err != nil {
				t.Errorf("%s at %d channels: %v", f, c, err)
			}
		}
	}
}
