// Package planted builds planted-architecture problems for the search: a
// teacher network built from a known random cell labels random inputs, and
// a search on those labels is compared with the teacher's edges and ops.
//
// The asserting tests (search: TestPlantedSweep, TestPlantedWeightsHeld,
// TestDecisionsFollowData, TestTreePlantedWeightsHeld) and the measurements
// (bench/planted) share it. Every function is deterministic in its seeds.
package planted

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"bayesnas/dataset"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/search"
)

// Space is the small proxy space the planted problems search: 2
// intermediate nodes (5 edges per cell), 1 normal + 2 reduction cells, 8x8
// inputs, 4 classes, the given candidate ops.
func Space(ops []string) models.ProxyConfig {
	return models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 4, Channels: 4, Cells: 3, Nodes: 2,
		StemMultiplier: 1, StemStride: 1, Ops: ops}
}

// Candidate ops of the planted spaces: parameter-free ops only (the
// teacher's choice is then a different function, not different weights),
// and the same with a separable conv.
var (
	PoolOps = []string{models.ProxyMax3, models.ProxyAvg3, models.ProxySkip}
	SepOps  = []string{models.ProxySep3, models.ProxyMax3, models.ProxyAvg3, models.ProxySkip}
)

// randomCell gives every intermediate node one in-edge with one op, chosen
// at random: a sparse cell whose every node is used.
func randomCell(rng *rand.Rand, nodes int, ops []string) []models.ProxyEdge {
	var edges []models.ProxyEdge
	for k := 2; k < nodes+2; k++ {
		edges = append(edges, models.ProxyEdge{From: rng.IntN(k), To: k, Ops: []string{ops[rng.IntN(len(ops))]}})
	}
	return edges
}

// Teacher builds the teacher's derived network: Space(ops) with a random
// sparse normal and reduction cell drawn from seed.
func Teacher(seed uint64, ops []string) models.ProxyConfig {
	cfg := Space(ops)
	rng := rand.New(rand.NewPCG(seed, 0x7ea))
	cfg.Normal = randomCell(rng, cfg.Nodes, cfg.Ops)
	cfg.Reduce = randomCell(rng, cfg.Nodes, cfg.Ops)
	return cfg
}

// Set labels want random images with the teacher (random weights from
// seed, BN in eval mode; inputs from inputSeed). The logits are centred per
// class over the set before the argmax, so the classes are balanced.
//
// With oracle set the teacher is the supernet itself with its architecture
// variables at the teacher cell's indicator (1 on the teacher's switches
// and ops, 0 elsewhere) and its BN statistics recalibrated on the images: a
// search with the same seed starts from the teacher's exact weights and
// only has to find the variables.
func Set(teacher models.ProxyConfig, want int, seed, inputSeed uint64, oracle bool) (*dataset.Set, error) {
	arch := teacher
	if oracle {
		arch.Search, arch.Normal, arch.Reduce = true, nil, nil
	}
	g, ps, err := models.ProxyNetwork(arch)
	if err != nil {
		return nil, err
	}
	net, err := compiledInit(g, 64, seed)
	if err != nil {
		return nil, err
	}
	if oracle {
		if err := setIndicator(net, ps, teacher); err != nil {
			return nil, err
		}
	}
	return labelledSet(net, teacher.Input, teacher.Classes, want, inputSeed, oracle, true)
}

// labelledSet draws 2*want smooth random images of shape in, labels them
// with the teacher network net (compiled for batches of 64; recalibrated on
// the images first when recal is set) and keeps the want clearest ones.
// With center set the logits are centred per class over the images before
// the argmax (balanced classes, but labels that a student holding the
// teacher's weights cannot reproduce without moving its head's bias).
func labelledSet(net *nn.Network, in [3]int, classes, want int, inputSeed uint64, recal, center bool) (*dataset.Set, error) {
	const batch = 64
	n := 2 * want
	c, h, w := in[0], in[1], in[2]
	per := c * h * w
	set := &dataset.Set{Name: "planted", Images: make([]uint8, n*per), Labels: make([]uint8, n),
		N: n, C: c, H: h, W: w, Classes: classes}
	for i := range classes {
		set.ClassNames = append(set.ClassNames, fmt.Sprint(i))
	}
	// Smooth random images (a random 3x3 grid of levels, bilinearly
	// upsampled, plus a little noise): a random teacher's labels of white
	// noise are too hard to learn for a small student (60 % at best).
	rng := rand.New(rand.NewPCG(inputSeed, 0x1ab))
	{
		for i := 0; i < n*c; i++ {
			var grid [9]float64
			for j := range grid {
				grid[j] = 255 * rng.Float64()
			}
			for y := 0; y < h; y++ {
				fy := float64(y) * 2 / float64(h-1)
				gy := min(int(fy), 1)
				ty := fy - float64(gy)
				for x := 0; x < w; x++ {
					fx := float64(x) * 2 / float64(w-1)
					gx := min(int(fx), 1)
					tx := fx - float64(gx)
					v := grid[gy*3+gx]*(1-tx)*(1-ty) + grid[gy*3+gx+1]*tx*(1-ty) + grid[(gy+1)*3+gx]*(1-tx)*ty + grid[(gy+1)*3+gx+1]*tx*ty
					v += 20 * rng.NormFloat64()
					set.Images[i*h*w+y*w+x] = uint8(math.Max(0, math.Min(255, v)))
				}
			}
		}
	}
	if recal {
		b := 0
		nn.RecalibrateBN(net, func(in []float32) (int, bool) {
			if b >= n {
				return 0, false
			}
			m := min(batch, n-b)
			for i := range m * per {
				in[i] = pixel(set.Images[b*per+i])
			}
			b += m
			return m, true
		})
	}
	k := classes
	logits := make([]float64, n*k)
	for s := 0; s < n; s += batch {
		m := min(batch, n-s)
		net.SetBatch(m)
		for i := range m * per {
			net.Input.Data[i] = pixel(set.Images[s*per+i])
		}
		net.Input.Commit()
		net.Forward(false)
		out := net.Output.Host()
		for i := range m * k {
			logits[s*k+i] = float64(out[i])
		}
	}
	mean := make([]float64, k)
	margin := make([]float64, n)
	if center {
		for i, v := range logits {
			mean[i%k] += v / float64(n)
		}
	}
	for i := range n {
		best := 0
		for j := range k {
			if logits[i*k+j]-mean[j] > logits[i*k+best]-mean[best] {
				best = j
			}
		}
		set.Labels[i] = uint8(best)
		second := math.Inf(-1)
		for j := range k {
			if j != best {
				second = math.Max(second, logits[i*k+j]-mean[j])
			}
		}
		margin[i] = logits[i*k+best] - mean[best] - second
	}
	// Keep the half with the clearest teacher decision: labels on the
	// boundary are noise for any student.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return margin[order[a]] > margin[order[b]] })
	keep := order[:want]
	slices.Sort(keep)
	return set.Subset("planted", keep)
}

// The inputs are normalised as the batcher does it (v/255 - mean) / std.
const (
	Mean = 0.5
	Std  = 0.29
)

// Normalize is the batchers' normalisation of planted images (Mean, Std).
func Normalize() dataset.Normalize {
	return dataset.Normalize{Mean: []float32{Mean}, Std: []float32{Std}}
}

func pixel(v uint8) float32 { return (float32(v)/255 - Mean) / Std }

// setIndicator sets the supernet's architecture variables to the
// teacher's cells: 1 on its edges' switches and ops, 0 elsewhere.
func setIndicator(net *nn.Network, ps *models.ProxySpace, teacher models.ProxyConfig) error {
	set := func(name string, on bool) error {
		p := net.Param(name)
		if p == nil {
			return fmt.Errorf("no parameter %s", name)
		}
		p.Set(0, 0)
		if on {
			p.Set(0, 1)
		}
		return nil
	}
	for _, c := range ps.Cells {
		edges := teacher.Normal
		if c.Reduction {
			edges = teacher.Reduce
		}
		for _, e := range c.Edges {
			var ops []string
			for _, te := range edges {
				if te.From == e.From && te.To == e.To {
					ops = te.Ops
				}
			}
			if err := set(e.Switch, len(ops) > 0); err != nil {
				return err
			}
			for i, op := range ps.Ops {
				if err := set(e.OpWeights[i], slices.Contains(ops, op)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// compiledInit compiles g for batches of batch on 2 workers and initialises
// its parameters from seed.
func compiledInit(g *models.Graph, batch int, seed uint64) (*nn.Network, error) {
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 2), batch)
	if err != nil {
		return nil, err
	}
	if err := models.InitParams(net, g, seed); err != nil {
		return nil, err
	}
	return net, nil
}

// Run searches on set with cfg (its Space is the planted space): the first
// nTrain images to train on, the rest to validate.
func Run(cfg search.Config, set *dataset.Set, nTrain int) (*search.Result, error) {
	idx := set.Indices()
	norm := Normalize()
	train, err := dataset.NewBatcher(set, idx[:nTrain], cfg.Batch, dataset.Augment{}, norm, cfg.Seed)
	if err != nil {
		return nil, err
	}
	val, err := dataset.NewEvalBatcher(set, idx[nTrain:], cfg.Batch, norm)
	if err != nil {
		return nil, err
	}
	return search.Run(context.Background(), cfg, train, val, nil)
}

// Config is the planted searches' configuration: the defaults on
// Space(ops), the given seed, batches of 32 on 2 workers, 8 curvature
// batches.
func Config(seed uint64, ops []string) search.Config {
	cfg := search.DefaultConfig()
	cfg.Space = Space(ops)
	cfg.Seed = seed
	cfg.Batch = 32
	cfg.Workers = 2
	cfg.CurvatureBatches = 8
	return cfg
}

// Case is one search on planted data: the teacher's seed, the search's seed
// and lambda (switches and ops alike).
type Case struct {
	Teacher, Seed uint64
	Lambda        float64
}

// Outcome runs a planted case: n images (3/4 of them to search on; the
// sweep uses 2048), Config's schedule (tune, when not nil, changes it
// last), and returns the result with the teacher.
func Outcome(c Case, ops []string, n int, oracle bool, tune func(*search.Config)) (*search.Result, models.ProxyConfig, error) {
	teacher := Teacher(c.Teacher, ops)
	set, err := Set(teacher, n, c.Teacher, c.Teacher, oracle)
	if err != nil {
		return nil, teacher, err
	}
	cfg := Config(c.Seed, ops)
	cfg.LambdaOp, cfg.LambdaSwitch = c.Lambda, c.Lambda
	if tune != nil {
		tune(&cfg)
	}
	r, err := Run(cfg, set, n*3/4)
	return r, teacher, err
}

// Rankings searches teacher teacherSeed's labels (PoolOps, 2048 images
// from input seed 99) with search seed searchSeed and returns the op
// groups' gamma_eff (OpRanking).
func Rankings(teacherSeed, searchSeed uint64) ([]float64, error) {
	teacher := Teacher(teacherSeed, PoolOps)
	set, err := Set(teacher, 2048, teacherSeed, 99, false)
	if err != nil {
		return nil, err
	}
	r, err := Run(Config(searchSeed, PoolOps), set, 1536)
	if err != nil {
		return nil, err
	}
	return OpRanking(r.Space), nil
}

// Train trains the derived network of cfg from scratch on the first nTrain
// images of set (SGD 0.025, momentum 0.9, the search's weight decay, seed
// 1) for epochs epochs and returns its accuracy on the rest.
func Train(cfg models.ProxyConfig, set *dataset.Set, nTrain, epochs int) (float64, error) {
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		return 0, err
	}
	const batch = 32
	net, err := compiledInit(g, batch, 1)
	if err != nil {
		return 0, err
	}
	opt, err := nn.NewSGDOn(net.Backend, net.Params, nn.SGDConfig{Momentum: 0.9, WeightDecay: 3e-4})
	if err != nil {
		return 0, err
	}
	idx := set.Indices()
	norm := Normalize()
	train, err := dataset.NewBatcher(set, idx[:nTrain], batch, dataset.Augment{}, norm, 1)
	if err != nil {
		return 0, err
	}
	val, err := dataset.NewEvalBatcher(set, idx[nTrain:], batch, norm)
	if err != nil {
		return 0, err
	}
	var loss nn.SoftmaxCrossEntropy
	x := make([]float32, batch*net.Input.PerSample())
	labels := make([]int32, batch)
	for e := range epochs {
		train.StartEpoch(e)
		for {
			n, ok := train.Next(x, labels)
			if !ok {
				break
			}
			net.SetBatch(n)
			net.Input.SetHost(x[:n*net.Input.PerSample()])
			net.ZeroGrad()
			net.Forward(true)
			if _, _, err := net.Loss(loss, labels[:n]); err != nil {
				return 0, err
			}
			net.Backward()
			opt.Step(0.025)
		}
	}
	_, acc, err := nn.Evaluate(net, &loss, val)
	return acc, err
}
