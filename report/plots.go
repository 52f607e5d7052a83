package report

import (
	"bytes"
	"fmt"
	"image/color"
	"maps"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"bayesnas/models"
)

// dpi of the PNGs: sharp on high-density screens, and the HTML scales them
// to the page width.
const dpi = 144

// palette colours every data series. Reference marks (the budget line, the
// y = x diagonal) are gray, so a plot's coloured pixels are its data: the
// tests count them to tell a plot with data from an empty canvas.
var palette = []color.Color{
	color.RGBA{31, 119, 180, 255},  // blue
	color.RGBA{214, 39, 40, 255},   // red
	color.RGBA{44, 160, 44, 255},   // green
	color.RGBA{255, 127, 14, 255},  // orange
	color.RGBA{148, 103, 189, 255}, // purple
	color.RGBA{140, 86, 75, 255},   // brown
	color.RGBA{227, 119, 194, 255}, // pink
	color.RGBA{23, 190, 207, 255},  // cyan
	color.RGBA{188, 189, 34, 255},  // olive
}

func colorOf(i int) color.Color { return palette[i%len(palette)] }

var refGray = color.Gray{Y: 110}

// render draws onto a white w x h canvas and encodes it as PNG.
func render(w, h vg.Length, drawFn func(dc draw.Canvas)) ([]byte, error) {
	c := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(dpi), vgimg.UseBackgroundColor(color.White))
	drawFn(draw.New(c))
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encoding PNG: %w", err)
	}
	return buf.Bytes(), nil
}

func renderPlot(p *plot.Plot, w, h vg.Length) ([]byte, error) {
	return render(w, h, p.Draw)
}

// renderColumn stacks plots vertically with their data areas aligned.
func renderColumn(ps []*plot.Plot, w, h vg.Length) ([]byte, error) {
	rows := make([][]*plot.Plot, len(ps))
	for i, p := range ps {
		rows[i] = []*plot.Plot{p}
	}
	return render(w, h, func(dc draw.Canvas) {
		t := draw.Tiles{Rows: len(ps), Cols: 1, PadX: vg.Millimeter, PadY: 3 * vg.Millimeter,
			PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
		cs := plot.Align(rows, t, dc)
		for i, p := range ps {
			p.Draw(cs[i][0])
		}
	})
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

// addLine adds a line with point markers in colour i, and its legend entry.
func addLine(p *plot.Plot, name string, i int, xys plotter.XYs) error {
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("plotting %s: %w", name, err)
	}
	l.Color = colorOf(i)
	l.Width = vg.Points(1.5)
	s.Color = colorOf(i)
	s.Shape = draw.CircleGlyph{}
	s.Radius = vg.Points(2)
	p.Add(l, s)
	if name != "" {
		p.Legend.Add(name, l, s)
	}
	return nil
}

// intTicks marks whole numbers only: iterations and epochs are counts, and
// a short search would otherwise get ticks at 0.25 and 2.50.
var intTicks = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, t := range (plot.DefaultTicks{}).Ticks(lo, hi) {
		if t.Label != "" && t.Value == math.Trunc(t.Value) {
			ts = append(ts, plot.Tick{Value: t.Value, Label: fmt.Sprint(int64(t.Value))})
		}
	}
	if len(ts) >= 2 {
		return ts
	}
	ts = ts[:0]
	for v := math.Ceil(lo); v <= hi; v++ {
		ts = append(ts, plot.Tick{Value: v, Label: fmt.Sprint(int64(v))})
	}
	return ts
})

// legendRoom widens the x axis to the right of the data, so that a legend
// in the top right corner covers no line: the lines of the search converge
// there.
func legendRoom(p *plot.Plot, xmin, xmax float64) {
	p.X.Min = xmin
	p.X.Max = xmax + 0.3*max(xmax-xmin, 1)
	p.X.Tick.Marker = intTicks
	p.Legend.Top, p.Legend.Left = true, false
}

// xRange is the smallest and largest iteration of the search log.
func (in *inputs) xRange() (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, it := range in.searchLog {
		lo, hi = min(lo, float64(it.Iteration)), max(hi, float64(it.Iteration))
	}
	return lo, hi
}

// searchCurves is the search's progress per iteration: validation
// accuracy, sparsity and the live ops of each cell type.
func (in *inputs) searchCurves() ([]byte, int, error) {
	log := in.searchLog
	var acc, trainAcc, sparsity plotter.XYs
	live := map[string]plotter.XYs{}
	for _, it := range log {
		x := float64(it.Iteration)
		acc = append(acc, plotter.XY{X: x, Y: 100 * it.ValAcc})
		trainAcc = append(trainAcc, plotter.XY{X: x, Y: 100 * it.TrainAcc})
		sparsity = append(sparsity, plotter.XY{X: x, Y: 100 * it.Sparsity})
		for ct, n := range it.LiveOps {
			live[ct] = append(live[ct], plotter.XY{X: x, Y: float64(n)})
		}
	}
	const xl = "iteration (0: after warm-up)"
	pa := newPlot("Search: accuracy", xl, "accuracy (%)")
	if err := addLine(pa, "validation", 0, acc); err != nil {
		return nil, 0, err
	}
	if err := addLine(pa, "training (epoch mean)", 3, trainAcc); err != nil {
		return nil, 0, err
	}
	ps := newPlot("Sparsity: ops pruned of the candidates", xl, "sparsity (%)")
	if err := addLine(ps, "", 2, sparsity); err != nil {
		return nil, 0, err
	}
	ps.Y.Min, ps.Y.Max = 0, 100
	pl := newPlot("Live ops after derivation", xl, "ops")
	for i, ct := range slices.Sorted(maps.Keys(live)) {
		if err := addLine(pl, ct+" cell", 4+i, live[ct]); err != nil {
			return nil, 0, err
		}
	}
	pl.Y.Min = 0
	lo, hi := in.xRange()
	for _, p := range []*plot.Plot{pa, ps, pl} {
		legendRoom(p, lo, hi)
	}
	b, err := renderColumn([]*plot.Plot{pa, ps, pl}, 8*vg.Inch, 9*vg.Inch)
	return b, len(log), err
}

// archVarCurves is the trajectory of the architecture variables: the mean
// prior variance gamma of each op kind (and of the edge switches) per
// iteration. The search log keeps the means; decisions.json has the final
// value of every variable.
func (in *inputs) archVarCurves() ([]byte, int, error) {
	series := map[string]plotter.XYs{}
	positive := true
	for _, it := range in.searchLog {
		for op, g := range it.MeanGamma {
			series[op] = append(series[op], plotter.XY{X: float64(it.Iteration), Y: g})
			if !(g > 0) {
				positive = false
			}
		}
	}
	if len(series) == 0 {
		return nil, 0, nil
	}
	p := newPlot("Architecture variables: mean gamma per op kind", "iteration (0: after warm-up)", "mean gamma")
	if positive {
		// Gammas of dying ops fall by orders of magnitude; only a log
		// axis shows both them and the survivors.
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Label.Text = "mean gamma (log scale)"
	}
	n := 0
	for i, op := range slices.Sorted(maps.Keys(series)) {
		if err := addLine(p, op, i, series[op]); err != nil {
			return nil, 0, err
		}
		n += len(series[op])
	}
	lo, hi := in.xRange()
	legendRoom(p, lo, hi)
	b, err := renderPlot(p, 8*vg.Inch, 4.5*vg.Inch)
	return b, n, err
}

// trainCurve is the retraining's accuracy per epoch.
func (in *inputs) trainCurvePlot() ([]byte, int, error) {
	var tr, val plotter.XYs
	for _, m := range in.trainCurve {
		tr = append(tr, plotter.XY{X: float64(m.Epoch), Y: 100 * m.TrainAcc})
		if m.ValAcc > 0 {
			val = append(val, plotter.XY{X: float64(m.Epoch), Y: 100 * m.ValAcc})
		}
	}
	p := newPlot("Retraining the derived network", "epoch", "accuracy (%)")
	if err := addLine(p, "training", 3, tr); err != nil {
		return nil, 0, err
	}
	if len(val) > 0 {
		if err := addLine(p, "validation", 0, val); err != nil {
			return nil, 0, err
		}
	}
	p.Legend.Left = false
	p.Legend.Top = false
	p.X.Tick.Marker = intTicks
	b, err := renderPlot(p, 8*vg.Inch, 3.5*vg.Inch)
	return b, len(tr) + len(val), err
}

// widthsPlot shows the output channels of every conv and linear before and
// after compression (batch norms repeat their conv's width).
func (in *inputs) widthsPlot() ([]byte, int, error) {
	var names []string
	var before, after plotter.Values
	for _, l := range in.compression.Layers {
		if l.Op != models.OpConv && l.Op != models.OpLinear {
			continue
		}
		names = append(names, l.Node)
		before = append(before, float64(l.OutBefore))
		after = append(after, float64(l.OutAfter))
	}
	if len(names) == 0 {
		return nil, 0, nil
	}
	p := newPlot("Output channels per layer", "", "channels")
	bw := vg.Length(8*72) / vg.Length(len(names)) * 0.8
	bw = min(max(bw, vg.Points(1)), vg.Points(14))
	bb, err := plotter.NewBarChart(before, bw)
	if err != nil {
		return nil, 0, fmt.Errorf("plotting widths: %w", err)
	}
	bb.Color = color.RGBA{174, 199, 232, 255} // light blue: what was there
	bb.LineStyle.Width = 0
	ab, err := plotter.NewBarChart(after, bw*0.55)
	if err != nil {
		return nil, 0, fmt.Errorf("plotting widths: %w", err)
	}
	ab.Color = colorOf(0)
	ab.LineStyle.Width = 0
	p.Add(bb, ab)
	p.Legend.Add("before", bb)
	p.Legend.Add("after", ab)
	// Headroom above the widest layer for the legend.
	p.Y.Min, p.Y.Max = 0, 1.2*slices.Max(before)
	h := 4 * vg.Inch
	if len(names) <= 40 {
		// Few enough layers to name each one.
		p.NominalX(names...)
		p.X.Tick.Label.Rotation = math.Pi / 2.5
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
		h = 5 * vg.Inch
	} else {
		p.X.Label.Text = "layer (conv and linear, in graph order)"
	}
	b, err := renderPlot(p, 9*vg.Inch, h)
	return b, 2 * len(names), err
}

// point is one network in the accuracy-latency plane.
type point struct {
	name     string
	acc, ms  float64
	measured bool
}

// accLatencyPoints collects the networks the run knows both an accuracy and
// a latency of.
func (in *inputs) accLatencyPoints() []point {
	var pts []point
	if in.train != nil && in.compression != nil {
		// The unpruned network where the export stage timed it beside the
		// compressed one (the same rounds), else where compress did.
		if l := in.latency; l != nil && l.UnprunedMs > 0 && l.MeasuredMs > 0 {
			pts = append(pts, point{name: "unpruned", acc: in.train.TestAcc, ms: l.UnprunedMs, measured: true})
		} else if v := in.compression.Verify; v != nil && v.BaseMeasuredMs > 0 {
			pts = append(pts, point{name: "unpruned", acc: in.train.TestAcc, ms: v.BaseMeasuredMs, measured: true})
		} else {
			pts = append(pts, point{name: "unpruned (predicted)", acc: in.train.TestAcc, ms: in.compression.Before.PredictedMs})
		}
	}
	if acc, ok := in.finalAccuracy(); ok {
		switch {
		case in.latency != nil && in.latency.MeasuredMs > 0:
			pts = append(pts, point{name: "compressed", acc: acc, ms: in.latency.MeasuredMs, measured: true})
		case in.compression != nil:
			pts = append(pts, point{name: "compressed (predicted)", acc: acc, ms: in.compression.After.PredictedMs})
		}
	}
	for _, b := range in.baselines {
		pts = append(pts, point{name: b.Name, acc: b.Accuracy, ms: b.LatencyMs, measured: true})
	}
	return pts
}

// accLatencyPlot places the unpruned, the compressed network and the
// baselines by accuracy and latency, with the budget as a vertical line.
func (in *inputs) accLatencyPlot() ([]byte, int, error) {
	pts := in.accLatencyPoints()
	if len(pts) == 0 {
		return nil, 0, nil
	}
	p := newPlot("Accuracy against latency", "latency (ms)", "test accuracy (%)")
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for i, pt := range pts {
		s, err := plotter.NewScatter(plotter.XYs{{X: pt.ms, Y: 100 * pt.acc}})
		if err != nil {
			return nil, 0, fmt.Errorf("plotting %s: %w", pt.name, err)
		}
		s.Color = colorOf(i)
		s.Radius = vg.Points(5)
		s.Shape = draw.CircleGlyph{}
		if !pt.measured {
			s.Shape = draw.RingGlyph{} // hollow: a prediction, not a measurement
		}
		p.Add(s)
		p.Legend.Add(pt.name, s)
		xmin, xmax = min(xmin, pt.ms), max(xmax, pt.ms)
		ymin, ymax = min(ymin, 100*pt.acc), max(ymax, 100*pt.acc)
	}
	// Each point named beside it: the legend alone makes a reader match
	// colours.
	var named plotter.XYLabels
	for _, pt := range pts {
		named.XYs = append(named.XYs, plotter.XY{X: pt.ms, Y: 100 * pt.acc})
		named.Labels = append(named.Labels, "   "+pt.name)
	}
	lb, err := plotter.NewLabels(named)
	if err != nil {
		return nil, 0, fmt.Errorf("plotting the networks' names: %w", err)
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].Font.Size = vg.Points(9)
		lb.TextStyle[i].YAlign = draw.YCenter
	}
	p.Add(lb)
	budget := in.budgetMs()
	if budget > 0 {
		xmin, xmax = min(xmin, budget), max(xmax, budget)
		bl, err := plotter.NewLine(plotter.XYs{{X: budget, Y: ymin - 1}, {X: budget, Y: ymax + 1}})
		if err != nil {
			return nil, 0, fmt.Errorf("plotting the budget: %w", err)
		}
		bl.Color = refGray
		bl.Width = vg.Points(1.5)
		bl.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
		p.Add(bl)
		p.Legend.Add(fmt.Sprintf("budget %.3g ms", budget), bl)
	}
	// Room around the points so that none sits on the frame.
	padX := 0.08 * max(xmax-xmin, 0.1*xmax, 1e-3)
	padY := max(0.1*(ymax-ymin), 1)
	// Three pads on the right: the names of the rightmost points.
	p.X.Min, p.X.Max = max(0, xmin-padX), xmax+3*padX
	p.Y.Min, p.Y.Max = ymin-padY, ymax+padY
	p.Legend.Left = false
	p.Legend.Top = false
	b, err := renderPlot(p, 8*vg.Inch, 4.5*vg.Inch)
	return b, len(pts), err
}

// layerLatencyPlot is each kernel's measured time against the profile's
// prediction, with the y = x diagonal.
func (in *inputs) layerLatencyPlot() ([]byte, int, error) {
	ls := in.latency.Layers
	xys := make(plotter.XYs, len(ls))
	hi := 0.0
	for i, l := range ls {
		xys[i] = plotter.XY{X: l.PredictedMs, Y: l.MeasuredMs}
		hi = max(hi, l.PredictedMs, l.MeasuredMs)
	}
	p := newPlot("Per-layer latency: measured against predicted", "predicted (ms)", "measured (ms)")
	diag, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1.05 * hi, Y: 1.05 * hi}})
	if err != nil {
		return nil, 0, fmt.Errorf("plotting per-layer latency: %w", err)
	}
	diag.Color = refGray
	diag.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(diag)
	p.Legend.Add("measured = predicted", diag)
	s, err := plotter.NewScatter(xys)
	if err != nil {
		return nil, 0, fmt.Errorf("plotting per-layer latency: %w", err)
	}
	s.Color = colorOf(0)
	s.Shape = draw.CircleGlyph{}
	s.Radius = vg.Points(3.5)
	p.Add(s)
	p.Legend.Add("layer", s)
	// Name the layers the prediction misses most: the ones to look at.
	order := make([]int, len(ls))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ea := math.Abs(ls[a].MeasuredMs - ls[a].PredictedMs)
		eb := math.Abs(ls[b].MeasuredMs - ls[b].PredictedMs)
		return -cmpFloat(ea, eb)
	})
	var named plotter.XYLabels
	for _, i := range order[:min(5, len(order))] {
		// Layers at the same spot share one label rather than print
		// over each other.
		at := slices.IndexFunc(named.XYs, func(xy plotter.XY) bool {
			return math.Abs(xy.X-xys[i].X) < 0.01*hi && math.Abs(xy.Y-xys[i].Y) < 0.01*hi
		})
		if at >= 0 {
			named.Labels[at] += ", " + ls[i].Name
			continue
		}
		named.XYs = append(named.XYs, xys[i])
		named.Labels = append(named.Labels, "  "+ls[i].Name)
	}
	lb, err := plotter.NewLabels(named)
	if err != nil {
		return nil, 0, fmt.Errorf("plotting per-layer latency: %w", err)
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].Font.Size = vg.Points(8)
	}
	p.Add(lb)
	// Extra room on the right for the names of the slowest layers.
	p.X.Min, p.Y.Min = 0, 0
	p.X.Max, p.Y.Max = 1.3*hi, 1.05*hi
	p.Legend.Top = true
	p.Legend.Left = true
	b, err := renderPlot(p, 6*vg.Inch, 5*vg.Inch)
	return b, len(ls), err
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
