// Package report turns a pipeline run directory into report.html (one
// self-contained file: the plots are embedded as data URIs, so it can be
// mailed or uploaded as a CI artifact and still open) and report.md (the
// same text, with the plots beside it in report/*.png).
//
// A run directory holds one directory per stage (search, train, compress,
// export) and optionally compare.json. Every stage may be absent: a
// pipeline can stop early or skip stages, and the report then says which
// sections it left out and why. A file that is there but cannot be read is
// an error naming it, since a report that silently drops a corrupt input
// would look like a skipped stage.
package report

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"bayesnas/internal/atomicfile"
	"bayesnas/onnxrt"
	"bayesnas/search"
)

// Output names inside the run directory.
const (
	HTMLFile     = "report.html"
	MarkdownFile = "report.md"
	PlotDir      = "report"
)

// maxCells caps the derived cells drawn: a tree search with a cell per
// block has dozens; the decision table lists them all.
const maxCells = 6

type section struct {
	ID, Title string
	Notes     []string // paragraphs, plain text
	Table     *table
	Figures   []figure
}

type table struct {
	Head []string
	Rows [][]string
}

// HasHead says whether the table has column headings (a key-value table
// has none).
func (t *table) HasHead() bool {
	for _, h := range t.Head {
		if h != "" {
			return true
		}
	}
	return false
}

type figure struct {
	File    string // name in PlotDir
	Caption string
	PNG     []byte
	Points  int // data points or edges drawn, so tests can tell a plot has data
}

// Write reads the run directory, renders the plots, and writes
// runDir/report.html, runDir/report.md and runDir/report/*.png, each
// atomically. The HTML is written last: its presence means the report is
// complete. It returns the HTML's path.
func Write(runDir string) (htmlPath string, err error) {
	in, err := load(runDir)
	if err != nil {
		return "", err
	}
	secs, err := in.sections()
	if err != nil {
		return "", err
	}
	plotDir := filepath.Join(runDir, PlotDir)
	if err := os.MkdirAll(plotDir, 0o755); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	keep := map[string]bool{}
	for _, s := range secs {
		for _, f := range s.Figures {
			if err := atomicfile.Write(filepath.Join(plotDir, f.File), f.PNG); err != nil {
				return "", fmt.Errorf("report: %w", err)
			}
			keep[f.File] = true
		}
	}
	// Plots of an earlier report whose inputs are gone would otherwise sit
	// beside the new report as if they belonged to it.
	old, err := filepath.Glob(filepath.Join(plotDir, "*.png"))
	if err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	for _, p := range old {
		if !keep[filepath.Base(p)] {
			if err := os.Remove(p); err != nil {
				return "", fmt.Errorf("report: removing a stale plot: %w", err)
			}
		}
	}
	title := "bayesnas report: " + filepath.Base(filepath.Clean(runDir))
	if err := atomicfile.Write(filepath.Join(runDir, MarkdownFile), markdown(title, secs)); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	h, err := renderHTML(title, secs)
	if err != nil {
		return "", err
	}
	htmlPath = filepath.Join(runDir, HTMLFile)
	if err := atomicfile.Write(htmlPath, h); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	return htmlPath, nil
}

// plotFn renders one plot: PNG bytes (nil: nothing to plot) and the number
// of points drawn.
type plotFn func() ([]byte, int, error)

func (s *section) add(file, caption string, fn plotFn) error {
	b, n, err := fn()
	if err != nil {
		return fmt.Errorf("report: %s: %w", file, err)
	}
	if b != nil {
		s.Figures = append(s.Figures, figure{File: file, Caption: caption, PNG: b, Points: n})
	}
	return nil
}

func (in *inputs) sections() ([]section, error) {
	var secs []section
	secs = append(secs, in.summarySection())

	s := section{ID: "search", Title: "Search", Notes: in.missing["search"]}
	if len(in.searchLog) > 0 {
		last := in.searchLog[len(in.searchLog)-1]
		s.Notes = append(s.Notes, fmt.Sprintf("%d iterations logged; at the last, validation accuracy %s, sparsity %s, %d frozen groups, %.0f s elapsed.",
			len(in.searchLog), pct(last.ValAcc), pct(last.Sparsity), last.Frozen, last.ElapsedSecond))
		if err := s.add("search_curves.png", "Search progress per iteration: validation accuracy, sparsity (the share of candidate ops the derivation drops) and the ops still live in each cell type.", in.searchCurves); err != nil {
			return nil, err
		}
		if err := s.add("arch_vars.png", "Architecture variables: the mean prior variance gamma of each op kind (switch: the edge switches). An op kind the search prunes falls towards zero.", in.archVarCurves); err != nil {
			return nil, err
		}
	}
	if l := in.searchLat; l != nil {
		s.Notes = append(s.Notes, searchLatencyLine(l))
	}
	gs, left := in.cellGraphs(maxCells)
	for i, g := range gs {
		caption := g.title + ": nodes in columns by depth, each arrow labelled with the ops kept on that edge (summed). Gray arrows are fixed structure, not search decisions. " + opLegend
		if err := s.add(fmt.Sprintf("cell_%d.png", i), caption, g.plot); err != nil {
			return nil, err
		}
	}
	if left > 0 {
		s.Notes = append(s.Notes, fmt.Sprintf("%d more derived cells are not drawn; decisions.json lists every one.", left))
	}
	secs = append(secs, s)

	s = section{ID: "train", Title: "Retraining", Notes: in.missing["train"]}
	if t := in.train; t != nil {
		s.Notes = append(s.Notes, fmt.Sprintf("The derived network trained from scratch for %d epochs (%.0f s): test accuracy %s, %s parameters, %s multiply-adds.",
			t.Epochs, t.TrainSeconds, pct(t.TestAcc), count(t.Params), count(t.MACs)))
	}
	if len(in.trainCurve) > 0 {
		if err := s.add("train_curve.png", "Accuracy per epoch of the retraining.", in.trainCurvePlot); err != nil {
			return nil, err
		}
	}
	secs = append(secs, s)

	s = section{ID: "compress", Title: "Compression", Notes: in.missing["compress"]}
	if c := in.compression; c != nil {
		s.Notes = append(s.Notes, fmt.Sprintf("Method %s, budget %s (%.4g ms) on %s (%s).", c.Method, c.Budget, c.BudgetMs, c.Profile, c.Device))
		s.Table = &table{Head: []string{"", "before", "after", "ratio"}, Rows: [][]string{
			{"parameters", count(c.Before.Params), count(c.After.Params), ratio(float64(c.After.Params), float64(c.Before.Params))},
			{"multiply-adds", count(c.Before.MACs), count(c.After.MACs), ratio(float64(c.After.MACs), float64(c.Before.MACs))},
			{"predicted latency", ms(c.Before.PredictedMs), ms(c.After.PredictedMs), ratio(c.After.PredictedMs, c.Before.PredictedMs)},
		}}
		if v := c.Verify; v != nil && v.Chosen < len(v.Tries) {
			after := v.Tries[v.Chosen].MeasuredMs
			s.Table.Rows = append(s.Table.Rows, []string{"measured while compressing", ms(v.BaseMeasuredMs), ms(after), ratio(after, v.BaseMeasuredMs)})
			s.Notes = append(s.Notes, fmt.Sprintf("Verified on the device: %d selection(s) timed, re-selected until one measured under %s (the budget less a margin for noise); the chosen one, try %d, measured %s.",
				len(v.Tries), ms(v.GoalMs), v.Chosen+1, ms(after)))
		}
		if err := s.add("widths.png", "Output channels of every conv and linear before (light) and after (dark) compression.", in.widthsPlot); err != nil {
			return nil, err
		}
	}
	secs = append(secs, s)

	s = section{ID: "deploy", Title: "Deployment", Notes: in.missing["export"]}
	if v := in.validation; v != nil {
		s.Notes = append(s.Notes, validationLine(v))
	}
	if l := in.latency; l != nil {
		budget := ms(l.BudgetMs)
		if l.UnprunedMs > 0 {
			budget = fmt.Sprintf("%s (%s of the unpruned network, %s timed in the same rounds)", budget, l.Budget, ms(l.UnprunedMs))
		}
		s.Notes = append(s.Notes, fmt.Sprintf("Measured on %s (profile %s), %d repeats: median %s, p90 %s; predicted %s; budget %s: %s.",
			l.Device, l.Profile, l.Repeats, ms(l.MeasuredMs), ms(l.P90Ms), ms(l.PredictedMs), budget, l.Verdict))
	}
	if len(in.baselines) == 0 {
		s.Notes = append(s.Notes, "No baselines (compare.json is absent): the accuracy-latency plot shows this run's networks only.")
	}
	if pts := in.accLatencyPoints(); len(pts) > 0 {
		s.Table = &table{Head: []string{"network", "test accuracy", "latency", "latency is"}}
		for _, p := range pts {
			how := "predicted"
			if p.measured {
				how = "measured"
			}
			s.Table.Rows = append(s.Table.Rows, []string{p.name, pct(p.acc), ms(p.ms), how})
		}
	}
	if err := s.add("accuracy_latency.png", "Test accuracy against latency. Filled: measured on the device; hollow: predicted by the profile. The dashed line is the budget.", in.accLatencyPlot); err != nil {
		return nil, err
	}
	if in.latency != nil && len(in.latency.Layers) > 0 {
		if err := s.add("layer_latency.png", "Each layer's measured time against the profile's prediction; points above the diagonal are slower than predicted. The layers the prediction misses most are named.", in.layerLatencyPlot); err != nil {
			return nil, err
		}
	} else if in.latency != nil {
		s.Notes = append(s.Notes, "The device reported no per-layer times: the per-layer latency plot is omitted.")
	}
	secs = append(secs, s)
	return secs, nil
}

// searchLatencyLine describes a latency-aware search's outcome.
func searchLatencyLine(l *search.LatencyReport) string {
	line := fmt.Sprintf("Latency-aware on %s: each op's penalty scaled by its latency there (the network with every op: %s).", l.Profile, ms(l.AllOpsMs))
	if l.TargetMs > 0 {
		verdict := "met"
		if !l.Met {
			verdict = "not met: only ops that cost nothing were left to drop"
		}
		line += fmt.Sprintf(" Target %s: the derived network is predicted at %s (%s; the thresholds alone derived %s, %d ops dropped for the target).",
			ms(l.TargetMs), ms(l.PredictedMs), verdict, ms(l.ThresholdMs), len(l.Dropped))
	} else {
		line += fmt.Sprintf(" The derived network is predicted at %s.", ms(l.PredictedMs))
	}
	if l.MeasuredMs > 0 {
		line += fmt.Sprintf(" Retrained, it measured %s (p90 %s) on %s", ms(l.MeasuredMs), ms(l.MeasuredP90Ms), l.Device)
		switch {
		case l.MeasuredMet == nil:
			line += "."
		case *l.MeasuredMet:
			line += ": within the target."
		default:
			line += fmt.Sprintf(": %.1f %% over the target (the profile's error on this network; the compress stage holds the budget on the device).", 100*(l.MeasuredMs/l.TargetMs-1))
		}
	}
	return line
}

// finalAccuracy is the deployed network's test accuracy: the fine-tuned
// compressed network's, else ONNX Runtime's on the test images, else the
// retrained network's.
func (in *inputs) finalAccuracy() (float64, bool) {
	switch {
	case in.compressed != nil:
		return in.compressed.TestAcc, true
	case in.validation != nil && in.validation.Real != nil && in.validation.Real.AccuracyORT != nil:
		return *in.validation.Real.AccuracyORT, true
	case in.compression == nil && in.train != nil:
		return in.train.TestAcc, true
	}
	return 0, false
}

func (in *inputs) budgetMs() float64 {
	if in.latency != nil && in.latency.BudgetMs > 0 {
		return in.latency.BudgetMs
	}
	if in.compression != nil {
		return in.compression.BudgetMs
	}
	return 0
}

func (in *inputs) summarySection() section {
	s := section{ID: "summary", Title: "Summary"}
	rows := [][]string{}
	if acc, ok := in.finalAccuracy(); ok {
		rows = append(rows, []string{"final test accuracy", pct(acc)})
	}
	switch {
	case in.compressed != nil:
		rows = append(rows, []string{"parameters", count(in.compressed.Params)}, []string{"multiply-adds", count(in.compressed.MACs)})
	case in.compression != nil:
		rows = append(rows, []string{"parameters", count(in.compression.After.Params)}, []string{"multiply-adds", count(in.compression.After.MACs)})
	case in.train != nil:
		rows = append(rows, []string{"parameters", count(in.train.Params)}, []string{"multiply-adds", count(in.train.MACs)})
	}
	budget := in.budgetMs()
	vs := func(v float64) string {
		if budget <= 0 {
			return ms(v)
		}
		return fmt.Sprintf("%s (%s of the %s budget)", ms(v), pct(v/budget), ms(budget))
	}
	switch {
	case in.latency != nil:
		rows = append(rows, []string{"predicted latency", vs(in.latency.PredictedMs)},
			[]string{"measured latency", fmt.Sprintf("%s, p90 %s", vs(in.latency.MeasuredMs), ms(in.latency.P90Ms))},
			[]string{"device", in.latency.Device})
	case in.compression != nil:
		rows = append(rows, []string{"predicted latency", vs(in.compression.After.PredictedMs)}, []string{"device", in.compression.Device})
	}
	if in.validation != nil {
		v := "passed"
		if !in.validation.Passed {
			v = "FAILED"
		}
		rows = append(rows, []string{"validation in ONNX Runtime", v})
	}
	if in.modelBytes >= 0 {
		rows = append(rows, []string{"model.onnx", fmt.Sprintf("%s bytes", count(in.modelBytes))})
	}
	if in.latency != nil {
		rows = append(rows, []string{"verdict", in.latency.Verdict})
	}
	if len(rows) > 0 {
		s.Table = &table{Head: []string{"", ""}, Rows: rows}
	} else {
		s.Notes = append(s.Notes, "This run directory holds no finished stage yet.")
	}
	var skipped []string
	for _, st := range []struct{ sec, name string }{{"search", "search"}, {"train", "retraining"}, {"compress", "compression"}, {"export", "export"}} {
		if len(in.missing[st.sec]) > 0 {
			skipped = append(skipped, st.name)
		}
	}
	if len(skipped) > 0 {
		s.Notes = append(s.Notes, "Incomplete or skipped: "+strings.Join(skipped, ", ")+"; their sections say what is missing.")
	}
	return s
}

// validationLine says how ONNX Runtime and the engine agreed.
func validationLine(v *onnxrt.Report) string {
	verdict := "passed"
	if !v.Passed {
		verdict = "FAILED (" + strings.Join(v.Failures, "; ") + ")"
	}
	line := fmt.Sprintf("Validation in %s %s: %s (rtol %g, atol %g).", v.Runtime.Name, v.Runtime.Version, verdict, v.Tolerance.RTol, v.Tolerance.ATol)
	for _, c := range []struct {
		name string
		c    *onnxrt.Comparison
	}{{"test images", v.Real}, {"random inputs", v.Random}} {
		if c.c == nil {
			continue
		}
		line += fmt.Sprintf(" On %d %s: max abs error %.3g, top-1 agreement %s", c.c.Inputs, c.name, c.c.MaxAbsErr, pct(c.c.Top1Agreement))
		if c.c.AccuracyORT != nil {
			line += ", accuracy in ONNX Runtime " + pct(*c.c.AccuracyORT)
		}
		line += "."
	}
	return line
}

func pct(f float64) string { return fmt.Sprintf("%.2f %%", 100*f) }
func ms(f float64) string  { return fmt.Sprintf("%.3f ms", f) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// count writes an integer with thin groups of three digits (1 234 567).
func count(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var parts []string
	for len(s) > 3 {
		parts = append([]string{s[len(s)-3:]}, parts...)
		s = s[:len(s)-3]
	}
	parts = append([]string{s}, parts...)
	out := strings.Join(parts, " ")
	if neg {
		out = "-" + out
	}
	return out
}

// markdown renders the sections; plots are linked from PlotDir.
func markdown(title string, secs []section) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n", title)
	for _, s := range secs {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "%s\n\n", n)
		}
		if t := s.Table; t != nil {
			fmt.Fprintf(&b, "| %s |\n", strings.Join(t.Head, " | "))
			fmt.Fprintf(&b, "|%s\n", strings.Repeat(" --- |", len(t.Head)))
			for _, r := range t.Rows {
				cells := slices.Clone(r)
				for i := range cells {
					cells[i] = strings.ReplaceAll(cells[i], "|", `\|`)
				}
				fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
			}
			b.WriteString("\n")
		}
		for _, f := range s.Figures {
			fmt.Fprintf(&b, "![%s](%s/%s)\n\n*%s*\n\n", f.File, PlotDir, f.File, f.Caption)
		}
	}
	return b.Bytes()
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #1f77b4; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ddd; padding: .3em .8em; text-align: left; }
th { background: #f3f6fa; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; margin-top: .3em; }
p.note { color: #444; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<nav>{{range .Sections}}<a href="#{{.ID}}">{{.Title}}</a>{{end}}</nav>
{{range .Sections}}
<section id="{{.ID}}">
<h2>{{.Title}}</h2>
{{range .Notes}}<p class="note">{{.}}</p>
{{end}}{{with .Table}}<table>
{{if .HasHead}}<tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr>{{end}}
{{range .Rows}}<tr>{{range $i, $c := .}}{{if eq $i 0}}<th>{{$c}}</th>{{else}}<td>{{$c}}</td>{{end}}{{end}}</tr>
{{end}}</table>
{{end}}{{range .Figures}}<figure>
<img src="{{.URI}}" alt="{{.Caption}}">
<figcaption>{{.Caption}}</figcaption>
</figure>
{{end}}</section>
{{end}}
</body>
</html>
`))

func renderHTML(title string, secs []section) ([]byte, error) {
	type fig struct {
		URI     template.URL
		Caption string
	}
	type sec struct {
		ID, Title string
		Notes     []string
		Table     *table
		Figures   []fig
	}
	data := struct {
		Title    string
		Sections []sec
	}{Title: title}
	for _, s := range secs {
		hs := sec{ID: s.ID, Title: s.Title, Notes: s.Notes, Table: s.Table}
		for _, f := range s.Figures {
			// template.URL: the template would otherwise refuse a data URI
			// as unsafe; these are our own PNG bytes.
			hs.Figures = append(hs.Figures, fig{
				URI:     template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(f.PNG)),
				Caption: f.Caption,
			})
		}
		data.Sections = append(data.Sections, hs)
	}
	var b bytes.Buffer
	if err := page.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("report: rendering HTML: %w", err)
	}
	return b.Bytes(), nil
}
