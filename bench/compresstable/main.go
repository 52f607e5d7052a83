// Command compresstable gathers the compressed run directories that
// bench/compress.sh wrote (compression.json, the fine-tuning's summary,
// export's validation.json) into the markdown table of BENCHMARKS.md and a
// plot of test accuracy against measured latency per method.
//
//	go run ./bench/compresstable --base runs/c-base --out OUT/accuracy-latency.png OUT
//
// With --profile, every network's model.onnx (export writes it) is timed
// again on that profile's runtime, the networks interleaved round by round
// (--rounds), so that the drift of a shared machine falls on all of them
// alike; the median of the rounds' medians replaces validation.json's
// single session, and the spread of the unpruned network's rounds is the
// noise floor printed beside the table.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"bayesnas/onnxrt"
	"bayesnas/pipeline"
)

var (
	measureWith   string
	measureRounds int
)

type row struct {
	dir, method, budget string
	budgetMs            float64
	params, macs        int64
	predMs, measMs      float64 // measMs 0: not measured
	val, test           float64
	selSeconds          float64
}

func main() {
	base := flag.String("base", "", "the unpruned training run (measured with export --validate)")
	out := flag.String("out", "", "the PNG to write")
	profile := flag.String("profile", "", "re-time every model.onnx on this profile's runtime, interleaved")
	rounds := flag.Int("rounds", 9, "with --profile: rounds over all networks")
	flag.Parse()
	measureWith, measureRounds = *profile, *rounds
	if flag.NArg() != 1 || *base == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: compresstable --base RUN --out PNG DIR")
		os.Exit(2)
	}
	if err := run(*base, *out, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "compresstable:", err)
		os.Exit(1)
	}
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// measured is ONNX Runtime's median batch-1 latency from validation.json.
func measured(dir string) (float64, error) {
	var r onnxrt.Report
	if err := readJSON(filepath.Join(dir, onnxrt.ReportFile), &r); err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	for _, l := range r.Latency {
		if l.Runtime == "onnxruntime" && l.Batch == 1 {
			return l.MedianMs, nil
		}
	}
	return 0, nil
}

func run(base, out, dir string) error {
	var rows []row
	var unpruned row
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		d := filepath.Join(dir, e.Name())
		var c pipeline.CompressionReport
		if err := readJSON(filepath.Join(d, pipeline.CompressionFile), &c); err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return err
		}
		r := row{dir: e.Name(), method: c.Method, budget: c.Budget, budgetMs: c.BudgetMs,
			params: c.After.Params, macs: c.After.MACs, predMs: c.After.PredictedMs}
		if c.FineTune != nil {
			r.val, r.test = c.FineTune.ValAcc, c.FineTune.TestAcc
		}
		r.selSeconds = c.Seconds
		if r.selSeconds == 0 && c.Bayes != nil {
			r.selSeconds = c.Bayes.Seconds // written before compression_seconds was
		}
		if r.measMs, err = measured(d); err != nil {
			return err
		}
		rows = append(rows, r)
		unpruned.predMs = c.Before.PredictedMs
		unpruned.params, unpruned.macs = c.Before.Params, c.Before.MACs
	}
	if len(rows) == 0 {
		return fmt.Errorf("no compressed run under %s", dir)
	}
	var s pipeline.Summary
	if err := readJSON(filepath.Join(base, pipeline.SummaryFile), &s); err != nil {
		return err
	}
	unpruned.val, unpruned.test, unpruned.method, unpruned.dir = s.ValAcc, s.TestAcc, "unpruned", base
	if unpruned.measMs, err = measured(base); err != nil {
		return err
	}
	if measureWith != "" {
		all := append([]*row{&unpruned}, pointers(rows)...)
		if err := remeasure(all, base, dir); err != nil {
			return err
		}
	}
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(-cmp.Compare(a.budgetMs, b.budgetMs), strings.Compare(a.method, b.method), strings.Compare(a.dir, b.dir))
	})
	fmt.Println("| network | budget ms | params | MACs | predicted ms | measured ms | meas/pred | val | test | compression s |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	pr := func(name string, r row, budget string) {
		ratio := "-"
		meas := "not measured"
		if r.measMs > 0 {
			meas = fmt.Sprintf("%.3f", r.measMs)
			ratio = fmt.Sprintf("%+.1f %%", 100*(r.measMs/r.predMs-1))
		}
		secs := "-"
		if r.selSeconds > 0 {
			secs = fmt.Sprintf("%.1f", r.selSeconds)
		}
		fmt.Printf("| %s | %s | %d | %.1f M | %.3f | %s | %s | %.2f %% | %.2f %% | %s |\n",
			name, budget, r.params, float64(r.macs)/1e6, r.predMs, meas, ratio, 100*r.val, 100*r.test, secs)
	}
	pr("unpruned", unpruned, "-")
	for _, r := range rows {
		pr(r.dir, r, fmt.Sprintf("%.3f", r.budgetMs))
	}
	return plotRows(out, unpruned, rows)
}

// plotRows draws test accuracy against measured latency (predicted where
// a network was not measured), one series per method, the budgets as
// vertical lines.
func plotRows(out string, unpruned row, rows []row) error {
	p := plot.New()
	p.Title.Text = "Test accuracy against latency (ONNX Runtime, batch 1)"
	p.X.Label.Text = "measured latency (ms)"
	p.Y.Label.Text = "test accuracy (%)"
	p.Add(plotter.NewGrid())
	lat := func(r row) float64 { return cmp.Or(r.measMs, r.predMs) }
	colors := map[string]color.Color{
		"bayes":   color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255},
		"l1":      color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255},
		"uniform": color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 255},
	}
	byMethod := map[string]plotter.XYs{}
	budgets := map[float64]bool{}
	for _, r := range rows {
		byMethod[r.method] = append(byMethod[r.method], plotter.XY{X: lat(r), Y: 100 * r.test})
		budgets[r.budgetMs] = true
	}
	for b := range budgets {
		l, err := plotter.NewLine(plotter.XYs{{X: b, Y: 100 * unpruned.test}, {X: b, Y: 100 * minTest(rows)}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 0xa0}
		l.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(l)
	}
	methods := make([]string, 0, len(byMethod))
	for m := range byMethod {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	for i, m := range methods {
		pts := byMethod[m]
		slices.SortFunc(pts, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		c := cmp.Or(colors[m], color.Color(color.Black))
		l.Color, s.Color = c, c
		s.Shape = draw.GlyphDrawer([]draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}}[i%3])
		p.Add(l, s)
		p.Legend.Add(m, l, s)
	}
	u, err := plotter.NewScatter(plotter.XYs{{X: lat(unpruned), Y: 100 * unpruned.test}})
	if err != nil {
		return err
	}
	u.Shape, u.Color = draw.CrossGlyph{}, color.Black
	p.Add(u)
	p.Legend.Add("unpruned", u)
	p.Legend.Top, p.Legend.Left = false, false
	tmp := out + ".tmp.png"
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, tmp); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return os.Rename(tmp, out)
}

func pointers(rows []row) []*row {
	ps := make([]*row, len(rows))
	for i := range rows {
		ps[i] = &rows[i]
	}
	return ps
}

// remeasure times each row's model.onnx on measureWith's device, all of
// them once per round, and sets measMs to the median of the rounds.
func remeasure(rows []*row, base, dir string) error {
	paths := make([]string, len(rows))
	for i, r := range rows {
		paths[i] = filepath.Join(dir, r.dir, "model.onnx")
		if r.method == "unpruned" {
			paths[i] = filepath.Join(base, "model.onnx")
		}
	}
	const repeats = 200
	tms, err := pipeline.TimeModels(context.Background(), measureWith,
		pipeline.DeviceOptions{Rounds: measureRounds, Warmup: 10, Repeats: repeats}, paths)
	if err != nil {
		return err
	}
	for i, r := range rows {
		r.measMs = tms[i].MedianMs
	}
	u := tms[0].RoundMs
	fmt.Printf("measured on %s: %d rounds of %d timed runs per network, interleaved; unpruned network's round medians %.3f-%.3f ms (median %.3f)\n\n",
		measureWith, measureRounds, repeats, slices.Min(u), slices.Max(u), rows[0].measMs)
	return nil
}

func minTest(rows []row) float64 {
	m := rows[0].test
	for _, r := range rows {
		m = min(m, r.test)
	}
	return m
}
