package pipeline

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"

	"bayesnas/dataset"
	"bayesnas/models"
	"bayesnas/nn"
)

// teacher is the network a run distils from (train.distill), compiled for
// the run's training batches and run in evaluation mode on each of them.
type teacher struct {
	net  *nn.Network
	loss nn.Distillation
}

// loadTeacher compiles the teacher run d.Teacher on be for batches of up
// to batch images and checks that it reads what the student reads: the
// same input shape, normalised with the same mean and standard deviation
// (the teacher's summary.json against norm), and the same number of
// classes as the student's output. Errors name the key and the file.
func loadTeacher(d Distill, smoothing float64, be nn.Backend, batch int, norm dataset.Normalize, student *nn.Network) (*teacher, error) {
	key := "train.distill.teacher"
	sumPath := filepath.Join(d.Teacher, SummaryFile)
	b, err := os.ReadFile(sumPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (is %s a finished `bayesnas train` run?)", key, err, d.Teacher)
	}
	var sum Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", key, sumPath, err)
	}
	if !sameFloats(sum.InputMean, norm.Mean) || !sameFloats(sum.InputStd, norm.Std) {
		return nil, fmt.Errorf("%s: %s normalises inputs with mean %v, std %v; this run with mean %v, std %v (another data set or training split)",
			key, sumPath, sum.InputMean, sum.InputStd, norm.Mean, norm.Std)
	}
	archPath := filepath.Join(d.Teacher, ArchFile)
	g, err := models.ReadGraph(archPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if in := student.Input.Shape[1:]; !slices.Equal(g.Input.Shape, in) {
		return nil, fmt.Errorf("%s: %s takes inputs %v, this network %v", key, archPath, g.Input.Shape, in)
	}
	if err := models.CheckMemory(g, batch); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", key, archPath, err)
	}
	net, err := models.Compile(g, be, batch)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", key, archPath, err)
	}
	if err := models.LoadWeights(filepath.Join(d.Teacher, WeightsFile), net.Params); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if got, want := net.Output.PerSample(), student.Output.PerSample(); got != want {
		return nil, fmt.Errorf("%s: %s has %d outputs, this network %d", key, archPath, got, want)
	}
	return &teacher{net: net, loss: nn.Distillation{
		Alpha: float32(d.Alpha), Temperature: float32(d.T()), Smoothing: float32(smoothing),
	}}, nil
}

// step runs the teacher on the batch x of n images and the distillation
// loss of the student's output against it, which writes the student's
// output gradient.
func (t *teacher) step(student *nn.Value, x []float32, labels []int32) (float64, int, error) {
	n := len(labels)
	t.net.SetBatch(n)
	t.net.Input.SetHost(x)
	t.net.Forward(false)
	// The distillation loss runs on the host: both outputs copied out, the
	// student's gradient committed back.
	student.Host()
	l, correct, err := t.loss.Forward(student, t.net.Output.Host()[:n*t.net.Output.PerSample()], labels)
	student.CommitGrad()
	return l, correct, err
}

// sameFloats says whether a and b hold the same numbers to float32
// rounding (summary.json stores them in decimal).
func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i])-float64(b[i])) > 1e-6*max(1, math.Abs(float64(b[i]))) {
			return false
		}
	}
	return true
}
