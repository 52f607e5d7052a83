package pipeline

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
)

// testLogits runs the trained network of run dir over the test images of
// cfg's data and returns its logits, one row per image.
func testLogits(t *testing.T, dir string, cfg Config) [][]float32 {
	t.Helper()
	d, err := prepareData(dir, cfg.Data, cfg.Seed, cfg.Seed, cfg.Train.Batch, cfg.Train.EvalBatch)
	if err != nil {
		t.Fatal(err)
	}
	g, err := models.ReadGraph(filepath.Join(dir, ArchFile))
	if err != nil {
		t.Fatal(err)
	}
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), cfg.Train.EvalBatch)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.LoadWeights(filepath.Join(dir, WeightsFile), net.Params); err != nil {
		t.Fatal(err)
	}
	x := make([]float32, len(net.Input.Data))
	labels := make([]int32, cfg.Train.EvalBatch)
	var out [][]float32
	d.testB.StartEpoch(0)
	for {
		n, ok := d.testB.Next(x, labels)
		if !ok {
			return out
		}
		net.SetBatch(n)
		copy(net.Input.Data, x)
		net.Forward(false)
		k := net.Output.PerSample()
		for i := range n {
			out = append(out, append([]float32(nil), net.Output.Data[i*k:(i+1)*k]...))
		}
	}
}

// meanKL is the mean over rows of KL(softmax(t) || softmax(s)).
func meanKL(t, s [][]float32) float64 {
	var sum float64
	for i := range t {
		lt, ls := logSumExpT(t[i]), logSumExpT(s[i])
		for j := range t[i] {
			pt := float64(t[i][j]) - lt
			sum += math.Exp(pt) * (pt - (float64(s[i][j]) - ls))
		}
	}
	return sum / float64(len(t))
}

func logSumExpT(z []float32) float64 {
	var s float64
	for _, v := range z {
		s += math.Exp(float64(v))
	}
	return math.Log(s)
}

// A network trained mostly against a teacher's outputs ends closer to the
// teacher's output distribution on the test images (KL divergence) than
// the same network trained on the labels; a teacher that reads other inputs, or is no run, is refused
// before training, naming the key.
func TestDistillFromTeacher(t *testing.T) {
	dir := t.TempDir()
	tcfg := tinyConfig(filepath.Join(dir, "teacher"))
	tcfg.Data.Limit, tcfg.Train.Epochs = 1024, 4
	tsum, err := Train(context.Background(), tcfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	student := func(name string, d Distill) Config {
		c := tinyConfig(filepath.Join(dir, name))
		c.Data.Limit, c.Train.Epochs = 1024, 3
		c.Model.Params = map[string]any{"blocks_per_stage": 1, "alpha": 4, "groups": 2, "stem_channels": 4}
		c.Train.Distill = d
		return c
	}
	kl := map[string]float64{}
	teacherOut := testLogits(t, tcfg.RunDir, tcfg)
	for _, tc := range []struct {
		name string
		d    Distill
	}{{"labels", Distill{}}, {"distilled", Distill{Teacher: tcfg.RunDir, Alpha: 0.9, Temperature: 4}}} {
		c := student(tc.name, tc.d)
		sum, err := Train(context.Background(), c, Options{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		t.Logf("%s: test accuracy %.3f (teacher %.3f)", tc.name, sum.TestAcc, tsum.TestAcc)
		kl[tc.name] = meanKL(teacherOut, testLogits(t, c.RunDir, c))
	}
	t.Logf("KL(teacher || student) on %d test images: %v", len(teacherOut), kl)
	if !(kl["distilled"] < 0.8*kl["labels"]) {
		t.Fatalf("the distilled student's KL divergence from its teacher is %.4f, the label-trained one's %.4f: want it at least 20 %% lower", kl["distilled"], kl["labels"])
	}

	// Bad teachers: nothing trained, the key named, no run directory left.
	// A teacher of another data set: the teacher's run with other input
	// statistics in its summary.
	other := filepath.Join(dir, "other-data")
	if err := os.CopyFS(other, os.DirFS(tcfg.RunDir)); err != nil {
		t.Fatal(err)
	}
	osum := *tsum
	osum.InputMean = []float32{osum.InputMean[0] + 0.1}
	if err := writeJSON(filepath.Join(other, SummaryFile), osum); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d    Distill
		want string
	}{
		{Distill{Teacher: filepath.Join(dir, "nothing"), Alpha: 0.5, Temperature: 4}, "train.distill.teacher"},
		{Distill{Teacher: other, Alpha: 0.5, Temperature: 4}, "normalises inputs"},
		{Distill{Teacher: tcfg.RunDir, Alpha: 0, Temperature: 4}, "train.distill.alpha = 0"},
		{Distill{Teacher: tcfg.RunDir, Alpha: 0.5, Temperature: -1}, "train.distill.temperature"},
		{Distill{Alpha: 0.5, Temperature: 4}, "train.distill.teacher is empty"},
	} {
		c := student("bad", tc.d)
		if _, err := Train(context.Background(), c, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("teacher %+v: error %v, want one saying %q", tc.d, err, tc.want)
		}
		if _, err := os.Stat(c.RunDir); !os.IsNotExist(err) {
			t.Errorf("teacher %+v: a refused run left %s behind", tc.d, c.RunDir)
		}
	}
}
