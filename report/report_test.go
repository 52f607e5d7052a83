package report_test

import (
	"bayesnas/hwprofile"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"bayesnas/compress"
	"bayesnas/models"
	"bayesnas/onnxrt"
	"bayesnas/pipeline"
	"bayesnas/report"
	"bayesnas/search"
)

// keep, when set, writes the runs and their reports there instead of a
// temporary directory, to look at in a browser (the tree search's with
// -tree appended, the real search's with -search):
// go test ./report -run 'FullRun|RealSearch' -args -keep /tmp/fake-run
var keep = flag.String("keep", "", "also write the fake run directory and its report here")

// writeFile writes v as indented JSON, as the pipeline writes its files.
func writeFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeLines writes one JSON line per value, as the search and training logs.
func writeLines[T any](t *testing.T, path string, vs []T) {
	t.Helper()
	var b bytes.Buffer
	for _, v := range vs {
		line, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeSearch writes a proxy search's log and decisions with the search
// package's own types: accuracy rising, ops pruned, gammas of the losing op
// kinds falling by orders of magnitude.
func fakeSearch(t *testing.T, dir string, tree bool) {
	var log []search.IterationLog
	ops := []string{models.ProxySep3, models.ProxySep5, models.ProxyDil3, models.ProxyMax3, models.ProxySkip, "switch"}
	for it := 0; it <= 10; it++ {
		f := float64(it) / 10
		gam := map[string]float64{}
		for i, op := range ops {
			gam[op] = 0.05 * math.Exp(-f*float64(i)*1.2)
		}
		log = append(log, search.IterationLog{Iteration: it, Epochs: 2 + it, TrainLoss: 1.8 - f, TrainAcc: 0.4 + 0.4*f,
			ValAcc: 0.35 + 0.42*f - 0.03*math.Sin(float64(it)), Penalty: 3 - 2*f,
			LiveEdges: map[string]int{"normal": 14 - it, "reduce": 14 - it/2},
			LiveOps:   map[string]int{"normal": 98 - 8*it, "reduce": 98 - 6*it},
			Sparsity:  0.07 * float64(it), MeanGamma: gam, ElapsedSecond: 40 * float64(it+1)})
	}
	writeLines(t, filepath.Join(dir, "search_log.jsonl"), log)
	if tree {
		d := search.TreeDerivation{Names: []string{"stage0", "stage1", "stage2"}}
		for i := range d.Names {
			c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
			c.Edges[0] = []string{models.TreeSep3}
			c.Edges[1] = []string{models.TreeIdentity}
			c.Edges[2] = []string{models.TreeSep5, models.TreeMax3}
			if i > 0 {
				c.Edges[6] = []string{models.TreeDil3}
				c.Edges[8] = []string{models.TreeAvg3}
			}
			d.Cells = append(d.Cells, c)
			d.Table.Cells = append(d.Table.Cells, search.TreeCellDecisions{Cell: d.Names[i], Blocks: []string{fmt.Sprintf("s%d.b0", i), fmt.Sprintf("s%d.b1", i)}})
		}
		writeFile(t, filepath.Join(dir, "decisions.json"), d)
		return
	}
	d := search.Derivation{
		Normal: []models.ProxyEdge{
			{From: 0, To: 2, Ops: []string{models.ProxySep3}}, {From: 1, To: 2, Ops: []string{models.ProxySkip}},
			{From: 1, To: 3, Ops: []string{models.ProxySep5}}, {From: 2, To: 3, Ops: []string{models.ProxyDil3}},
			{From: 0, To: 4, Ops: []string{models.ProxySep3, models.ProxySkip}}, {From: 3, To: 4, Ops: []string{models.ProxyMax3}},
			{From: 2, To: 5, Ops: []string{models.ProxySkip}}, {From: 4, To: 5, Ops: []string{models.ProxySep3}},
		},
		Reduce: []models.ProxyEdge{
			{From: 0, To: 2, Ops: []string{models.ProxyMax3}}, {From: 1, To: 2, Ops: []string{models.ProxyMax3}},
			{From: 1, To: 3, Ops: []string{models.ProxyAvg3}}, {From: 2, To: 3, Ops: []string{models.ProxySkip}},
		},
		Table: search.DecisionTable{Threshold: 0.1, Relative: true,
			Cells: []search.CellDecisions{{Type: "normal", Tau: 0.004, LiveNodes: []int{2, 3, 4, 5}}, {Type: "reduce", Tau: 0.003, LiveNodes: []int{2, 3}}}},
	}
	writeFile(t, filepath.Join(dir, "decisions.json"), d)
}

// fakeRun writes a whole pipeline run with the project's own types.
func fakeRun(t *testing.T, run string, tree bool) {
	fakeSearch(t, filepath.Join(run, report.SearchDir), tree)

	train := filepath.Join(run, report.TrainDir)
	var ms []pipeline.EpochMetrics
	for e := 1; e <= 12; e++ {
		f := float64(e) / 12
		ms = append(ms, pipeline.EpochMetrics{Epoch: e, TrainLoss: 1.2 - f, TrainAcc: 0.55 + 0.35*f, ValAcc: 0.6 + 0.28*f - 0.01*float64(e%3)})
	}
	writeLines(t, filepath.Join(train, pipeline.MetricsFile), ms)
	writeFile(t, filepath.Join(train, pipeline.SummaryFile), pipeline.Summary{TestAcc: 0.884, TestLoss: 0.33, Params: 412_345, MACs: 61_234_567, Epochs: 12, TrainSeconds: 512})

	comp := filepath.Join(run, report.CompressDir)
	var layers []compress.NodeWidth
	in := 3
	for i, w := range []int{16, 32, 32, 48, 48, 64, 64, 80, 80, 96, 96, 112} {
		name := fmt.Sprintf("s%d.b%d.conv", i/4, i%4)
		if i == 0 {
			name = "stem.conv"
		}
		after := w - 8*(i%3)
		if i == 0 {
			after = w
		}
		layers = append(layers, compress.NodeWidth{Node: name, Op: models.OpConv, InBefore: in, InAfter: in, OutBefore: w, OutAfter: after},
			compress.NodeWidth{Node: name + ".bn", Op: models.OpBN, InBefore: w, InAfter: after, OutBefore: w, OutAfter: after})
		in = w
	}
	layers = append(layers, compress.NodeWidth{Node: "classifier", Op: models.OpLinear, InBefore: 112, InAfter: 112, OutBefore: 10, OutAfter: 10})
	fine := pipeline.Summary{TestAcc: 0.871, Params: 241_000, MACs: 35_100_000, Epochs: 3}
	writeFile(t, filepath.Join(comp, pipeline.CompressionFile), pipeline.CompressionReport{
		Method: "bayes", Budget: "0.6x", BudgetMs: 1.8, Profile: "profiles/native-1t.yaml", Device: "test CPU / onnxruntime 1.24.1 (CPU, 1 threads)",
		Selection: &compress.Selection{Method: "bayes", BaseMs: 3, PrunedMs: 1.74, BudgetMs: 1.8, MetBudget: true},
		Before:    pipeline.NetworkCost{Params: 412_345, MACs: 61_234_567, PredictedMs: 3.0},
		After:     pipeline.NetworkCost{Params: 241_000, MACs: 35_100_000, PredictedMs: 1.74},
		Layers:    layers, FineTune: &fine,
		Verification: &pipeline.Verification{BaseMeasuredMs: 3.2, BasePredictedMs: 3, GoalMs: 1.71, Margin: 0.05, Chosen: 1,
			Tries: []pipeline.VerifyTry{{PredictedMs: 1.74, MeasuredMs: 1.95}, {PredictedMs: 1.52, MeasuredMs: 1.69, MetGoal: true}}}})
	writeFile(t, filepath.Join(comp, pipeline.SummaryFile), fine)

	exp := filepath.Join(run, report.ExportDir)
	if err := os.MkdirAll(exp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(exp, pipeline.ModelFile), []byte("not a real model: the report only sizes it"), 0o644); err != nil {
		t.Fatal(err)
	}
	accOurs, accORT := 0.871, 0.871
	v := onnxrt.Report{Model: "model.onnx", Runtime: onnxrt.RuntimeInfo{Name: "onnxruntime", Version: "1.24.1"},
		Tolerance: onnxrt.Tolerance{RTol: 1e-3, ATol: 1e-5}, Passed: true,
		Real:   &onnxrt.Comparison{Inputs: 1000, MaxAbsErr: 2e-6, Top1Agreement: 1, AccuracyOurs: &accOurs, AccuracyORT: &accORT},
		Random: &onnxrt.Comparison{Inputs: 64, MaxAbsErr: 4e-6, Top1Agreement: 1}}
	if err := v.WriteJSON(filepath.Join(exp, onnxrt.ReportFile)); err != nil {
		t.Fatal(err)
	}
	lat := hwprofile.LatencyReport{Device: "native-1t", Profile: "profiles/native-1t.yaml", Budget: "0.6x", UnprunedMs: 3.1, BudgetMs: 1.86, PredictedMs: 1.74,
		MeasuredMs: 1.69, P90Ms: 1.81, Repeats: 50, Verdict: "within budget"}
	for _, l := range layers {
		if l.Op == models.OpConv {
			p := 0.02 + 0.0012*float64(l.OutAfter)
			lat.Layers = append(lat.Layers, hwprofile.LayerLatency{Name: l.Node, PredictedMs: p, MeasuredMs: p * (0.85 + 0.3*float64(len(l.Node)%5)/4)})
		}
	}
	writeFile(t, filepath.Join(exp, hwprofile.LatencyFile), lat)
	writeFile(t, filepath.Join(run, report.CompareFile), []report.Baseline{
		{Name: "uniform 0.6x", Accuracy: 0.852, LatencyMs: 1.77}, {Name: "l1 0.6x", Accuracy: 0.861, LatencyMs: 1.72},
		{Name: "random cell", Accuracy: 0.843, LatencyMs: 2.1},
	})
}

// colouredPixels counts the pixels of a PNG that are neither white nor
// gray: the plots draw axes, text and reference lines in grays and every
// data series in colour, so an empty canvas has none.
func colouredPixels(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			hi, lo := max(r, g, bl)>>8, min(r, g, bl)>>8
			if hi-lo > 40 {
				n++
			}
		}
	}
	return n
}

var attrRE = regexp.MustCompile(`(?i)\b(src|href|srcset|action|poster|data)\s*=\s*"([^"]*)"`)

// checkSelfContained fails unless every reference of the page is a data
// URI or an anchor within it.
func checkSelfContained(t *testing.T, html string) {
	t.Helper()
	for _, m := range attrRE.FindAllStringSubmatch(html, -1) {
		v := m[2]
		if strings.HasPrefix(v, "data:image/png;base64,") || (m[1] == "href" && strings.HasPrefix(v, "#")) {
			continue
		}
		t.Errorf("report.html references %s=%q: want data URIs and anchors only", m[1], v[:min(len(v), 80)])
	}
	for _, bad := range []string{"url(", "@import", "<link", "<script"} {
		if strings.Contains(strings.ToLower(html), bad) {
			t.Errorf("report.html contains %q: it must not load anything", bad)
		}
	}
}

func TestWriteFullRun(t *testing.T) {
	for _, tree := range []bool{false, true} {
		t.Run(map[bool]string{false: "proxy", true: "tree"}[tree], func(t *testing.T) {
			run := filepath.Join(t.TempDir(), "run")
			if *keep != "" {
				run = *keep
				if tree {
					run += "-tree"
				}
				if err := os.RemoveAll(run); err != nil {
					t.Fatal(err)
				}
			}
			fakeRun(t, run, tree)
			htmlPath, err := report.Write(run)
			if err != nil {
				t.Fatal(err)
			}
			if htmlPath != filepath.Join(run, report.HTMLFile) {
				t.Fatalf("Write returned %s", htmlPath)
			}
			want := []string{"search_curves.png", "arch_vars.png", "cell_0.png", "cell_1.png", "train_curve.png",
				"widths.png", "accuracy_latency.png", "layer_latency.png"}
			if tree {
				want = append(want, "cell_2.png")
			}
			slices.Sort(want)
			got, err := filepath.Glob(filepath.Join(run, report.PlotDir, "*"))
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				got[i] = filepath.Base(got[i])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("plots %v, want %v (and nothing else: no temporary files left)", got, want)
			}
			html, err := os.ReadFile(htmlPath)
			if err != nil {
				t.Fatal(err)
			}
			md, err := os.ReadFile(filepath.Join(run, report.MarkdownFile))
			if err != nil {
				t.Fatal(err)
			}
			checkSelfContained(t, string(html))
			if n := strings.Count(string(html), `src="data:image/png;base64,`); n != len(want) {
				t.Errorf("report.html embeds %d images, want %d", n, len(want))
			}
			for _, f := range want {
				if !strings.Contains(string(md), "]("+report.PlotDir+"/"+f+")") {
					t.Errorf("report.md does not link %s", f)
				}
				// A plot with data has at least a line or a few markers
				// in colour: several hundred pixels at 144 dpi.
				if n := colouredPixels(t, filepath.Join(run, report.PlotDir, f)); n < 300 {
					t.Errorf("%s: %d coloured pixels: an empty plot?", f, n)
				}
			}
			for _, s := range []string{"87.10 %", "241 000", "1.690 ms", "within budget", "passed", "uniform 0.6x", "measured while compressing", "3.200 ms", "2 selection(s) timed", "0.6x of the unpruned network, 3.100 ms"} {
				if !strings.Contains(string(md), s) {
					t.Errorf("report.md lacks %q", s)
				}
			}
			if strings.Contains(string(md), "is missing") {
				t.Errorf("report.md says an input is missing in a complete run:\n%s", md)
			}
		})
	}
}

// An empty plot area has no coloured pixels: the check above can fail.
func TestColouredPixelsOfEmptyPlot(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 50, 50))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	p := filepath.Join(t.TempDir(), "empty.png")
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := colouredPixels(t, p); n != 0 {
		t.Fatalf("%d coloured pixels in a white image", n)
	}
}

// Stages a pipeline skipped are sections that say so, never an error; the
// plots of an earlier, fuller report are removed.
func TestWriteMissingStages(t *testing.T) {
	run := t.TempDir()
	fakeRun(t, run, false)
	if _, err := report.Write(run); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{report.CompressDir, report.ExportDir, report.CompareFile} {
		if err := os.RemoveAll(filepath.Join(run, d)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := report.Write(run); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(run, report.MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"No compression stage", "No export stage", "search_curves.png", "88.40 %"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("report.md lacks %q:\n%s", s, md)
		}
	}
	for _, f := range []string{"widths.png", "layer_latency.png", "accuracy_latency.png"} {
		if _, err := os.Stat(filepath.Join(run, report.PlotDir, f)); err == nil {
			t.Errorf("%s of the earlier report is still there", f)
		}
	}

	empty := t.TempDir()
	htmlPath, err := report.Write(empty)
	if err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"No search stage", "No training stage", "No compression stage", "No export stage", "no finished stage"} {
		if !strings.Contains(string(html), s) {
			t.Errorf("the empty run's report lacks %q", s)
		}
	}
	checkSelfContained(t, string(html))
}

// A file that is there but malformed is an error naming it.
func TestWriteMalformedInput(t *testing.T) {
	for _, f := range []string{
		filepath.Join(report.SearchDir, "search_log.jsonl"),
		filepath.Join(report.SearchDir, "decisions.json"),
		filepath.Join(report.TrainDir, pipeline.SummaryFile),
		filepath.Join(report.CompressDir, pipeline.CompressionFile),
		filepath.Join(report.ExportDir, onnxrt.ReportFile),
		filepath.Join(report.ExportDir, hwprofile.LatencyFile),
		report.CompareFile,
	} {
		run := t.TempDir()
		fakeRun(t, run, false)
		p := filepath.Join(run, f)
		if err := os.WriteFile(p, []byte(`{"truncated": `), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := report.Write(run)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s malformed: error %v, want one naming the file", f, err)
		}
		if _, err := os.Stat(filepath.Join(run, report.HTMLFile)); err == nil {
			t.Errorf("%s malformed: report.html written anyway", f)
		}
	}
}

// A real (tiny) search's run directory, written by pipeline.Search itself:
// the search log and the decisions are read as the search writes them.
func TestWriteRealSearch(t *testing.T) {
	run := t.TempDir()
	if *keep != "" {
		run = *keep + "-search"
		if err := os.RemoveAll(run); err != nil {
			t.Fatal(err)
		}
	}
	s := search.DefaultConfig()
	s.Space = models.ProxyConfig{Input: [3]int{1, 28, 28}, Classes: 10, Channels: 2, Cells: 3, Nodes: 4,
		StemMultiplier: 1, StemStride: 4}
	s.Batch = 32
	s.Iterations = 2
	s.CurvatureBatches = 1
	s.PruneThreshold = 0.5
	cfg := pipeline.SearchConfig{RunDir: filepath.Join(run, report.SearchDir), Seed: 5, Threads: 2,
		Data: pipeline.Data{Name: "synthetic", ValCount: 64, Limit: 96}, Search: s}
	if _, err := pipeline.Search(context.Background(), cfg, pipeline.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := report.Write(run); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(run, report.MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"search_curves.png", "arch_vars.png", "cell_0.png"} {
		if !strings.Contains(string(md), f) {
			t.Fatalf("report.md lacks %s:\n%s", f, md)
		}
		if n := colouredPixels(t, filepath.Join(run, report.PlotDir, f)); n < 300 {
			t.Errorf("%s: %d coloured pixels: an empty plot?", f, n)
		}
	}
	if !strings.Contains(string(md), "3 iterations logged") {
		t.Errorf("report.md does not count the search's 3 log lines (warm-up and 2 iterations):\n%s", md)
	}
}
