package search

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"bayesnas/dataset"
	"bayesnas/models"
	"bayesnas/nn"
)

// Planted architectures: a teacher network built from a known random cell
// labels random inputs, and the search must find the teacher's edges and
// ops from those labels alone.

// plantedSpace is the small space the planted tests search: 2 intermediate
// nodes (5 edges per cell), 1 normal + 2 reduction cells, 8x8 inputs, 4
// classes, the given candidate ops.
func plantedSpace(ops []string) models.ProxyConfig {
	return models.ProxyConfig{Input: [3]int{1, 8, 8}, Classes: 4, Channels: 4, Cells: 3, Nodes: 2,
		StemMultiplier: 1, StemStride: 1, Ops: ops}
}

// Candidate ops of the planted spaces: parameter-free ops only (the
// teacher's choice is then a different function, not different weights),
// and the same with a separable conv.
var (
	plantedPoolOps = []string{models.ProxyMax3, models.ProxyAvg3, models.ProxySkip}
	plantedSepOps  = []string{models.ProxySep3, models.ProxyMax3, models.ProxyAvg3, models.ProxySkip}
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

// plantedTeacher builds the teacher's derived network.
func plantedTeacher(seed uint64, ops []string) models.ProxyConfig {
	cfg := plantedSpace(ops)
	rng := rand.New(rand.NewPCG(seed, 0x7ea))
	cfg.Normal = randomCell(rng, cfg.Nodes, cfg.Ops)
	cfg.Reduce = randomCell(rng, cfg.Nodes, cfg.Ops)
	return cfg
}

// plantedSet labels n random images with the teacher (random
// weights from seed, BN in eval mode). The logits are centred per class
// over the set before the argmax, so the classes are balanced.
//
// With oracle set the teacher is the supernet itself with its
// architecture variables at the teacher cell's indicator (1 on the
// teacher's switches and ops, 0 elsewhere) and its BN statistics
// recalibrated on the images: a search with the same seed starts from the
// teacher's exact weights and only has to find the variables.
func plantedSet(t testing.TB, teacher models.ProxyConfig, want int, seed, inputSeed uint64, oracle bool) *dataset.Set {
	t.Helper()
	arch := teacher
	if oracle {
		arch.Search, arch.Normal, arch.Reduce = true, nil, nil
	}
	g, ps, err := models.ProxyNetwork(arch)
	if err != nil {
		t.Fatal(err)
	}
	net := compiledInit(t, g, 64, seed)
	if oracle {
		setIndicator(t, net, ps, teacher)
	}
	return labelledSet(t, net, teacher.Input, teacher.Classes, want, inputSeed, oracle, true)
}

// labelledSet draws 2*want smooth random images of shape in, labels them
// with the teacher network net (compiled for batches of 64; recalibrated on
// the images first when recal is set) and keeps the want clearest ones.
// With center set the logits are centred per class over the images before
// the argmax (balanced classes, but labels that a student holding the
// teacher's weights cannot reproduce without moving its head's bias).
func labelledSet(t testing.TB, net *nn.Network, in [3]int, classes, want int, inputSeed uint64, recal, center bool) *dataset.Set {
	t.Helper()
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
				in[i] = plantedPixel(set.Images[b*per+i])
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
			net.Input.Data[i] = plantedPixel(set.Images[s*per+i])
		}
		net.Forward(false)
		for i := range m * k {
			logits[s*k+i] = float64(net.Output.Data[i])
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
	sub, err := set.Subset("planted", keep)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// The inputs are normalised as the batcher does it (v/255 - mean) / std.
const plantedMean, plantedStd = 0.5, 0.29

func plantedPixel(v uint8) float32 { return (float32(v)/255 - plantedMean) / plantedStd }

// setIndicator sets the supernet's architecture variables to the
// teacher's cells: 1 on its edges' switches and ops, 0 elsewhere.
func setIndicator(t testing.TB, net *nn.Network, ps *models.ProxySpace, teacher models.ProxyConfig) {
	t.Helper()
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
			set := func(name string, on bool) {
				p := net.Param(name)
				if p == nil {
					t.Fatalf("no parameter %s", name)
				}
				p.Data[0] = 0
				if on {
					p.Data[0] = 1
				}
			}
			set(e.Switch, len(ops) > 0)
			for i, op := range ps.Ops {
				set(e.OpWeights[i], slices.Contains(ops, op))
			}
		}
	}
}

// compiledInit compiles g for batches of batch on 2 workers and initialises
// its parameters from seed.
func compiledInit(t testing.TB, g *models.Graph, batch int, seed uint64) *nn.Network {
	t.Helper()
	net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 2), batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.InitParams(net, g, seed); err != nil {
		t.Fatal(err)
	}
	return net
}

// exploreOps skips a measurement test unless BAYESNAS_EXPLORE is set and
// returns the planted candidate ops it asks for (SEP: with sep_conv_3x3;
// OPS: a comma-separated list).
func exploreOps(t testing.TB) []string {
	t.Helper()
	if os.Getenv("BAYESNAS_EXPLORE") == "" {
		t.Skip("measurement: set BAYESNAS_EXPLORE=1")
	}
	if v := os.Getenv("OPS"); v != "" {
		return strings.Split(v, ",")
	}
	if os.Getenv("SEP") != "" {
		return plantedSepOps
	}
	return plantedPoolOps
}

// envInt and envFloat set *dst from the measurement knob name when it is
// set (the BAYESNAS_EXPLORE tests).
func envInt(t testing.TB, name string, dst *int) {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		*dst = n
	}
}

func envFloat(t testing.TB, name string, dst *float64) {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		*dst = x
	}
}

// plantedRun searches on set with cfg (its Space is the planted space).
func plantedRun(t testing.TB, cfg Config, set *dataset.Set, nTrain int) *Result {
	t.Helper()
	idx := set.Indices()
	norm := dataset.Normalize{Mean: []float32{plantedMean}, Std: []float32{plantedStd}}
	train, err := dataset.NewBatcher(set, idx[:nTrain], cfg.Batch, dataset.Augment{}, norm, cfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	val, err := dataset.NewEvalBatcher(set, idx[nTrain:], cfg.Batch, norm)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), cfg, train, val, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func plantedConfig(seed uint64, ops []string) Config {
	cfg := DefaultConfig()
	cfg.Space = plantedSpace(ops)
	cfg.Seed = seed
	cfg.Batch = 32
	cfg.Workers = 2
	cfg.CurvatureBatches = 8
	return cfg
}

// recovery compares the derived cells with the teacher's (edge, op) pairs.
func recovery(teacher models.ProxyConfig, d *Derivation) (precision, recall float64, kept int) {
	type key struct {
		cell     string
		from, to int
		op       string
	}
	want := map[key]bool{}
	for _, c := range []struct {
		name  string
		edges []models.ProxyEdge
	}{{Normal, teacher.Normal}, {Reduce, teacher.Reduce}} {
		for _, e := range c.edges {
			for _, op := range e.Ops {
				want[key{c.name, e.From, e.To, op}] = true
			}
		}
	}
	hit := 0
	for _, c := range []struct {
		name  string
		edges []models.ProxyEdge
	}{{Normal, d.Normal}, {Reduce, d.Reduce}} {
		for _, e := range c.edges {
			for _, op := range e.Ops {
				kept++
				if want[key{c.name, e.From, e.To, op}] {
					hit++
				}
			}
		}
	}
	if kept > 0 {
		precision = float64(hit) / float64(kept)
	}
	return precision, float64(hit) / float64(len(want)), kept
}

// teacherAUC is the probability that an op of the teacher has a larger
// gamma_eff than an op the teacher does not use, over pairs in the same
// cell type (0.5: no better than chance; ties count half).
func teacherAUC(teacher models.ProxyConfig, s *Space) float64 {
	return teacherAUCKind(teacher, s, Op, func(g *Group) float64 { return g.GammaEff })
}

// teacherAUCKind is teacherAUC over the groups of one kind and a score: for
// switches, "the teacher's" means an edge the teacher has.
func teacherAUCKind(teacher models.ProxyConfig, s *Space, kind Kind, score func(*Group) float64) float64 {
	in := func(edges []models.ProxyEdge, g *Group) bool {
		for _, e := range edges {
			if e.From == g.From && e.To == g.To && (g.Kind == Switch || slices.Contains(e.Ops, g.Op)) {
				return true
			}
		}
		return false
	}
	var wins, pairs float64
	for _, ct := range []struct {
		name  string
		edges []models.ProxyEdge
	}{{Normal, teacher.Normal}, {Reduce, teacher.Reduce}} {
		var pos, neg []float64
		for _, g := range s.Groups {
			if g.Kind != kind || g.CellType != ct.name {
				continue
			}
			if in(ct.edges, g) {
				pos = append(pos, score(g))
			} else {
				neg = append(neg, score(g))
			}
		}
		w, n := pairWins(pos, neg)
		wins += w
		pairs += n
	}
	return wins / pairs
}

// pairWins counts the (pos, neg) pairs and those where pos scores higher
// (ties count half): the numerator and denominator of an AUC.
func pairWins(pos, neg []float64) (wins, pairs float64) {
	for _, p := range pos {
		for _, n := range neg {
			pairs++
			switch {
			case p > n:
				wins++
			case p == n:
				wins += 0.5
			}
		}
	}
	return wins, pairs
}

// opFirstOnEdge counts the teacher's edges on which the teacher's op has
// the largest gamma among the edge's ops (chance: 1 in len(ops)).
func opFirstOnEdge(teacher models.ProxyConfig, s *Space) int {
	n := 0
	for _, c := range []struct {
		name  string
		edges []models.ProxyEdge
	}{{Normal, teacher.Normal}, {Reduce, teacher.Reduce}} {
		for _, e := range c.edges {
			best, bestG := "", -1.0
			for _, op := range s.Ops {
				if g := s.OpGroup(c.name, e.From, e.To, op); g != nil && g.Gamma > bestG {
					best, bestG = op, g.Gamma
				}
			}
			if slices.Contains(e.Ops, best) {
				n++
			}
		}
	}
	return n
}

// opRanking is the gamma_eff of every op group, in Groups order.
func opRanking(s *Space) []float64 {
	var v []float64
	for _, g := range s.Groups {
		if g.Kind == Op {
			v = append(v, g.GammaEff)
		}
	}
	return v
}

// spearman is the rank correlation of two equally long samples (average
// ranks for ties).
func spearman(a, b []float64) float64 {
	ra, rb := ranks(a), ranks(b)
	var ma, mb float64
	for i := range ra {
		ma += ra[i]
		mb += rb[i]
	}
	ma /= float64(len(ra))
	mb /= float64(len(rb))
	var sab, saa, sbb float64
	for i := range ra {
		sab += (ra[i] - ma) * (rb[i] - mb)
		saa += (ra[i] - ma) * (ra[i] - ma)
		sbb += (rb[i] - mb) * (rb[i] - mb)
	}
	return sab / math.Sqrt(saa*sbb)
}

func ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return v[idx[i]] < v[idx[j]] })
	r := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && v[idx[j+1]] == v[idx[i]] {
			j++
		}
		for k := i; k <= j; k++ {
			r[idx[k]] = float64(i+j) / 2
		}
		i = j + 1
	}
	return r
}

func TestSpearman(t *testing.T) {
	if r := spearman([]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}); math.Abs(r-1) > 1e-12 {
		t.Errorf("identical order: %g", r)
	}
	if r := spearman([]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}); math.Abs(r+1) > 1e-12 {
		t.Errorf("reversed order: %g", r)
	}
	if r := spearman([]float64{1, 1, 2}, []float64{5, 5, 7}); math.Abs(r-1) > 1e-12 {
		t.Errorf("ties: %g", r)
	}
}

// plantedCase is one search on planted data: the teacher's seed, the
// search's seed and lambda (switches and ops alike).
type plantedCase struct {
	teacher, seed uint64
	lambda        float64
}

// plantedOutcome runs a planted case: n images (3/4 of them to search on;
// the sweep uses 2048), warm-up + 3 iterations, and returns the result with
// the teacher.
func plantedOutcome(t *testing.T, c plantedCase, ops []string, n int, oracle bool, tune func(*Config)) (*Result, models.ProxyConfig) {
	teacher := plantedTeacher(c.teacher, ops)
	set := plantedSet(t, teacher, n, c.teacher, c.teacher, oracle)
	cfg := plantedConfig(c.seed, ops)
	cfg.LambdaOp, cfg.LambdaSwitch = c.lambda, c.lambda
	if tune != nil {
		tune(&cfg)
	}
	return plantedRun(t, cfg, set, n*3/4), teacher
}

// TestPlantedSweep searches three planted teachers (parameter-free ops)
// at four lambdas and checks what was measured to hold on this machine:
//   - the teacher's ops rank above the others by gamma_eff more often than
//     not: mean AUC over the teachers at lambda 0.01 >= 0.55 (measured
//     with the proximal penalty step, the default since 2026-11-29:
//     0.77, 0.58, 0.71, mean 0.69; with the subgradient step 0.65, 0.52,
//     0.77: mean 0.65, 0.70 with the pure-Go GEMM and 0.67 with OpenBLAS's
//     SkylakeX kernels, whose rounding changes the trajectories; chance
//     is 0.5). A weak signal;
//   - sparsity follows lambda at a fixed absolute threshold (0.1): for
//     every teacher the largest lambda keeps fewer ops than the smallest,
//     and the rank correlation of lambda and kept ops is <= -0.6 (measured
//     kept 29/18/6/2, 30/29/16/2, 30/20/9/2 of 30 (proximal; subgradient
//     30/20/16/2, 30/30/24/3, 30/22/16/2): monotone).
func TestPlantedSweep(t *testing.T) {
	if testing.Short() {
		t.Skip("searches 12 times (about a minute on 2 cores)")
	}
	lambdas := []float64{0.003, 0.01, 0.03, 0.1}
	var aucSum float64
	for teacher := uint64(1); teacher <= 3; teacher++ {
		var kept []float64
		for _, lam := range lambdas {
			r, tc := plantedOutcome(t, plantedCase{teacher: teacher, seed: teacher, lambda: lam}, plantedPoolOps, 2048, false, nil)
			d, err := r.Space.Derive(DeriveConfig{Threshold: 0.1})
			if err != nil {
				t.Fatal(err)
			}
			p, rc, k := recovery(tc, d)
			auc := teacherAUC(tc, r.Space)
			if lam == 0.01 {
				aucSum += auc
			}
			kept = append(kept, float64(k))
			t.Logf("teacher %d lambda %g: val acc %.3f, AUC %.3f, kept %d ops (precision %.2f, recall %.2f)",
				teacher, lam, r.Log[len(r.Log)-1].ValAcc, auc, k, p, rc)
		}
		if kept[len(kept)-1] >= kept[0] {
			t.Errorf("teacher %d: lambda %g kept %g ops, lambda %g kept %g", teacher, lambdas[len(lambdas)-1], kept[len(kept)-1], lambdas[0], kept[0])
		}
		if rho := spearman(lambdas, kept); rho > -0.6 {
			t.Errorf("teacher %d: rank correlation of lambda and kept ops %.2f, want <= -0.6 (kept %v)", teacher, rho, kept)
		}
	}
	if mean := aucSum / 3; mean < 0.55 {
		t.Errorf("mean AUC of the teachers' ops at lambda 0.01: %.3f, want >= 0.55", mean)
	}
}

// TestPlantedWeightsHeld separates the Bayesian machinery from weight
// sharing: the supernet starts from the teacher's own weights and holds
// them (weight learning rate 1e-9), so only the architecture variables
// learn (Adam 0.05, all starting at 1). The labels then identify the
// teacher, and the HARD prior, curvature and reweighted updates must find
// it. Measured on teachers 1-4: mean op AUC 0.966, precision 0.62 and
// recall 0.69 at the relative threshold 0.3 with the proximal penalty step
// (subgradient: 0.68 and 0.75, pure-Go GEMM 0.70 and 0.75; over teachers
// 1-8: 0.966, 0.72, 0.78). The same search with the
// weights trained from scratch, as a real search does: AUC 0.62, precision
// 0.15 at recall 0.97 over teachers 1-8 (see TestPlantedSweep), although a
// retrained teacher cell beats random cells on 3 of 4 teachers
// (TestPlantedIdentifiable): weight sharing, not the prior, loses the
// teacher.
func TestPlantedWeightsHeld(t *testing.T) {
	if testing.Short() {
		t.Skip("searches 4 times (about 10 s on 2 cores)")
	}
	var auc, prec, rec float64
	const teachers = 4
	for teacher := uint64(1); teacher <= teachers; teacher++ {
		r, tc := plantedOutcome(t, plantedCase{teacher: teacher, seed: teacher, lambda: 0.01}, plantedPoolOps, 2048, true, func(c *Config) {
			c.LR, c.ArchLR = 1e-9, 0.05
		})
		d, err := r.Space.Derive(DeriveConfig{Threshold: 0.3, Relative: true})
		if err != nil {
			t.Fatal(err)
		}
		p, rc, k := recovery(tc, d)
		a := teacherAUC(tc, r.Space)
		t.Logf("teacher %d: AUC %.3f, kept %d ops, precision %.2f, recall %.2f, teacher's op first on its edge %d of %d",
			teacher, a, k, p, rc, opFirstOnEdge(tc, r.Space), len(tc.Normal)+len(tc.Reduce))
		auc += a / teachers
		prec += p / teachers
		rec += rc / teachers
	}
	t.Logf("mean AUC %.3f, precision %.2f, recall %.2f", auc, prec, rec)
	if auc < 0.9 || prec < 0.5 || rec < 0.6 {
		t.Errorf("teacher's weights held: mean AUC %.3f (want >= 0.9), precision %.2f (>= 0.5), recall %.2f (>= 0.6)", auc, prec, rec)
	}
}

// TestPlantedMeasure prints recovery numbers for other settings; it is a
// measurement, not a check:
//
//	BAYESNAS_EXPLORE=1 [SEP=1] [ORACLE=1] [N=8192] [LAMBDAS=0.01,0.1] [WARMUP=2] [ITERS=6] [PRUNE=0.05] [ARCHLR=0.03] [LR=1e-9] [TEACHERS=8] [CURV=ggn] \
//	  go test ./search -run PlantedMeasure -v
//
// SEP adds sep_conv_3x3 to the candidates; ORACLE starts the search from
// the teacher's own weights (see plantedSet).
func TestPlantedMeasure(t *testing.T) {
	ops := exploreOps(t)
	lambdas := []float64{0.01}
	if v := os.Getenv("LAMBDAS"); v != "" {
		lambdas = nil
		for _, f := range strings.Split(v, ",") {
			x, err := strconv.ParseFloat(f, 64)
			if err != nil {
				t.Fatal(err)
			}
			lambdas = append(lambdas, x)
		}
	}
	// N sets the number of labelled images (3/4 searched on).
	n := 2048
	envInt(t, "N", &n)
	// WARMUP, ITERS, CURV, PRUNE, ARCHLR and LR override the warm-up epochs,
	// iterations, curvature estimator, dynamic-pruning threshold,
	// architecture and weight learning rates (LR=1e-9 with ORACLE=1: the
	// teacher's weights held); AUX=1 adds the decaying auxiliary skips; PENALTY=proximal
	// applies the penalty by its proximal step.
	tune := func(c *Config) {
		envInt(t, "WARMUP", &c.WarmupEpochs)
		envInt(t, "ITERS", &c.Iterations)
		if v := os.Getenv("CURV"); v != "" {
			e, err := ParseEstimator(v)
			if err != nil {
				t.Fatal(err)
			}
			c.Curvature = e
		}
		envFloat(t, "PRUNE", &c.PruneThreshold)
		envFloat(t, "ARCHLR", &c.ArchLR)
		envFloat(t, "LR", &c.LR)
		c.Space.AuxSkip = c.Space.AuxSkip || os.Getenv("AUX") != ""
		if v := os.Getenv("PENALTY"); v != "" {
			c.PenaltyStep = v
		}
	}
	// TEACHERS sets how many teachers (seeds 1..TEACHERS) are searched.
	teachers := 3
	envInt(t, "TEACHERS", &teachers)
	for _, lam := range lambdas {
		var aucSum, precSum, recSum, precZ, recZ float64
		for teacher := uint64(1); teacher <= uint64(teachers); teacher++ {
			r, tc := plantedOutcome(t, plantedCase{teacher: teacher, seed: teacher, lambda: lam}, ops, n, os.Getenv("ORACLE") != "", tune)
			t.Logf("lambda %g teacher %d: normal %v reduce %v", lam, teacher, tc.Normal, tc.Reduce)
			t.Logf("  derived normal %v reduce %v", r.Derivation.Normal, r.Derivation.Reduce)
			norm2 := func(g *Group) float64 {
				var v float64
				for _, p := range g.Params {
					v += float64(p.Data[0]) * float64(p.Data[0])
				}
				return math.Sqrt(v)
			}
			sal := func(g *Group) float64 {
				var v float64
				for i, p := range g.Params {
					v += float64(p.Data[0]) * float64(p.Data[0]) * g.H[i]
				}
				return v
			}
			hsum := func(g *Group) float64 {
				var v float64
				for i := range g.Params {
					v += g.H[i]
				}
				return v
			}
			var ratios []float64
			for _, g := range r.Space.Groups {
				if g.Kind == Op && !g.Frozen {
					for i := range g.Params {
						ratios = append(ratios, g.Gamma*g.H[i]/g.Lambda)
					}
				}
			}
			sort.Float64s(ratios)
			if len(ratios) > 0 {
				t.Logf("  gamma*H/lambda over live op members: 10th %.3g, median %.3g, 90th %.3g", ratios[len(ratios)/10], ratios[len(ratios)/2], ratios[len(ratios)*9/10])
			}
			zscore := func(g *Group) float64 {
				var v float64
				for i, p := range g.Params {
					v += math.Abs(float64(p.Data[0])) / math.Sqrt(g.C[i])
				}
				return v
			}
			t.Logf("  AUC by gamma %.3f, |a| %.3f, a^2 H %.3f, H %.3f, |a|/sqrt(C) %.3f", teacherAUCKind(tc, r.Space, Op, func(g *Group) float64 { return g.Gamma }),
				teacherAUCKind(tc, r.Space, Op, norm2), teacherAUCKind(tc, r.Space, Op, sal), teacherAUCKind(tc, r.Space, Op, hsum),
				teacherAUCKind(tc, r.Space, Op, zscore))
			t.Logf("  val acc %.3f, AUC ops %.3f, AUC edges %.3f, teacher's op first on its edge %d of %d", r.Log[len(r.Log)-1].ValAcc, teacherAUC(tc, r.Space),
				teacherAUCKind(tc, r.Space, Switch, func(g *Group) float64 { return g.GammaEff }), opFirstOnEdge(tc, r.Space), len(tc.Normal)+len(tc.Reduce))
			for _, dc := range []DeriveConfig{{Threshold: 0.1, Relative: true}, {Threshold: 0.3, Relative: true}, {Threshold: 0.05}, {Threshold: 0.1}, {Threshold: 0.2},
				{Threshold: 0.1, Relative: true, MinSignificance: 2}, {Threshold: 0.3, Relative: true, MinSignificance: 2}} {
				d, err := r.Space.Derive(dc)
				if err != nil {
					t.Fatal(err)
				}
				p, rc, k := recovery(tc, d)
				t.Logf("  threshold %g relative %v min significance %g: kept %d, precision %.2f, recall %.2f", dc.Threshold, dc.Relative, dc.MinSignificance, k, p, rc)
				switch dc {
				case DeriveConfig{Threshold: 0.3, Relative: true}:
					precSum += p
					recSum += rc
				case DeriveConfig{Threshold: 0.3, Relative: true, MinSignificance: 2}:
					precZ += p
					recZ += rc
				}
			}
			aucSum += teacherAUC(tc, r.Space)
		}
		n := float64(teachers)
		t.Logf("lambda %g over %d teachers: mean AUC ops %.3f; relative 0.3: mean precision %.2f, recall %.2f; with significance >= 2: %.2f, %.2f",
			lam, teachers, aucSum/n, precSum/n, recSum/n, precZ/n, recZ/n)
	}
}

// TestDecisionsFollowData checks that the gamma ranking depends on the
// labels more than on the search's seed: the same inputs labelled by other
// teachers, and the same labels searched with other seeds (K of each,
// default 6), each ranking compared with teacher 1 / seed 1's by rank
// correlation. The released code gave 0.98 across labellings (FIELD.md).
// Measured here with the proximal penalty step: other seeds mean 0.79,
// other labels mean 0.55 (subgradient: seeds 0.75-0.95, mean 0.86, labels
// 0.16-0.83, mean 0.53; pure-Go GEMM 0.86 and 0.60). Asserted: the seeds'
// mean >= 0.7 and the labels' mean at least 0.15 below it.
//
//	[K=6] go test ./search -run DecisionsFollowData -v
func TestDecisionsFollowData(t *testing.T) {
	if testing.Short() {
		t.Skip("searches 13 times (about 25 s on 2 cores)")
	}
	k := 6
	envInt(t, "K", &k)
	run := func(teacherSeed, searchSeed uint64) []float64 {
		teacher := plantedTeacher(teacherSeed, plantedPoolOps)
		set := plantedSet(t, teacher, 2048, teacherSeed, 99, false)
		r := plantedRun(t, plantedConfig(searchSeed, plantedPoolOps), set, 1536)
		return opRanking(r.Space)
	}
	base := run(1, 1)
	var seeds, labels float64
	for i := uint64(2); i < uint64(k)+2; i++ {
		rs := spearman(base, run(1, i))
		rl := spearman(base, run(i, 1))
		t.Logf("seed %d on teacher 1's labels: %.3f; teacher %d's labels with seed 1: %.3f", i, rs, i, rl)
		seeds += rs / float64(k)
		labels += rl / float64(k)
	}
	t.Logf("mean rank correlation of op gamma_eff with teacher 1 / seed 1: other seeds %.3f, other labels %.3f", seeds, labels)
	if seeds < 0.7 || labels > seeds-0.15 {
		t.Errorf("mean rank correlation: other seeds %.3f (want >= 0.7), other labels %.3f (want <= %.3f)", seeds, labels, seeds-0.15)
	}
}

// TestPlantedIdentifiable measures whether the planted data tells the
// teacher's cell from others at all: the teacher's cell and random cells of
// the same space, each trained from scratch on the teacher's labels with the
// same budget and seed, and their validation accuracies. If the teacher's
// cell does not win here, no search can recover it from these labels.
//
//	BAYESNAS_EXPLORE=1 [SEP=1] [TEACHERS=4] [EPOCHS=4] go test ./search -run PlantedIdentifiable -v
func TestPlantedIdentifiable(t *testing.T) {
	ops := exploreOps(t)
	teachers, epochs := 4, 4
	envInt(t, "TEACHERS", &teachers)
	envInt(t, "EPOCHS", &epochs)
	wins := 0
	for teacher := uint64(1); teacher <= uint64(teachers); teacher++ {
		tc := plantedTeacher(teacher, ops)
		set := plantedSet(t, tc, 2048, teacher, teacher, false)
		cells := []models.ProxyConfig{tc}
		for j := uint64(0); j < 5; j++ {
			cells = append(cells, plantedTeacher(100+10*teacher+j, ops))
		}
		var accs []float64
		for _, c := range cells {
			accs = append(accs, plantedTrain(t, c, set, 1536, epochs))
		}
		rank := 1
		for _, a := range accs[1:] {
			if a > accs[0] {
				rank++
			}
		}
		if rank == 1 {
			wins++
		}
		t.Logf("teacher %d: own cell %.3f, random cells %.3f: rank %d of %d", teacher, accs[0], accs[1:], rank, len(accs))
	}
	t.Logf("the teacher's own cell ranked first for %d of %d teachers", wins, teachers)
}

// plantedTrain trains the derived network of cfg from scratch on the first
// nTrain images of set (SGD 0.025, momentum 0.9, the search's weight
// decay, seed 1) and returns its accuracy on the rest.
func plantedTrain(t *testing.T, cfg models.ProxyConfig, set *dataset.Set, nTrain, epochs int) float64 {
	t.Helper()
	g, _, err := models.ProxyNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 32
	net := compiledInit(t, g, batch, 1)
	opt, err := nn.NewSGD(net.Params, nn.SGDConfig{Momentum: 0.9, WeightDecay: 3e-4})
	if err != nil {
		t.Fatal(err)
	}
	idx := set.Indices()
	norm := dataset.Normalize{Mean: []float32{plantedMean}, Std: []float32{plantedStd}}
	train, err := dataset.NewBatcher(set, idx[:nTrain], batch, dataset.Augment{}, norm, 1)
	if err != nil {
		t.Fatal(err)
	}
	val, err := dataset.NewEvalBatcher(set, idx[nTrain:], batch, norm)
	if err != nil {
		t.Fatal(err)
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
			copy(net.Input.Data, x[:n*net.Input.PerSample()])
			net.ZeroGrad()
			net.Forward(true)
			if _, _, err := loss.Forward(net.Output, labels[:n]); err != nil {
				t.Fatal(err)
			}
			net.Backward()
			opt.Step(0.025)
		}
	}
	_, acc, err := nn.Evaluate(net, &loss, val)
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

// TestPlantedAblation measures a perturbation-based selection (Wang et al.
// 2021, "Rethinking architecture selection in differentiable NAS") on the
// searched supernet: each op group is zeroed in turn, BN recalibrated on
// the training images, and the rise of the held-out loss is its score.
// Measured on teachers 1-8: mean AUC 0.567 (gamma_eff on the same runs:
// 0.620): the trained supernet does not hold the teacher either way.
//
//	BAYESNAS_EXPLORE=1 [TEACHERS=8] go test ./search -run PlantedAblation -v
func TestPlantedAblation(t *testing.T) {
	ops := exploreOps(t)
	teachers := 8
	envInt(t, "TEACHERS", &teachers)
	var aucGamma, aucAbl float64
	for teacher := uint64(1); teacher <= uint64(teachers); teacher++ {
		tc := plantedTeacher(teacher, ops)
		set := plantedSet(t, tc, 2048, teacher, teacher, false)
		cfg := plantedConfig(teacher, ops)
		r := plantedRun(t, cfg, set, 1536)
		idx := set.Indices()
		norm := dataset.Normalize{Mean: []float32{plantedMean}, Std: []float32{plantedStd}}
		recal, err := dataset.NewEvalBatcher(set, idx[:1536], cfg.Batch, norm)
		if err != nil {
			t.Fatal(err)
		}
		val, err := dataset.NewEvalBatcher(set, idx[1536:], cfg.Batch, norm)
		if err != nil {
			t.Fatal(err)
		}
		labels := make([]int32, cfg.Batch)
		loss := func() float64 {
			recal.StartEpoch(0)
			nn.RecalibrateBN(r.Net, func(x []float32) (int, bool) { return recal.Next(x, labels) })
			var lf nn.SoftmaxCrossEntropy
			l, _, err := nn.Evaluate(r.Net, &lf, val)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		base := loss()
		score := map[*Group]float64{}
		for _, g := range r.Space.Groups {
			if g.Kind != Op || g.Frozen {
				continue
			}
			saved := make([]float32, len(g.Params))
			for i, p := range g.Params {
				saved[i], p.Data[0] = p.Data[0], 0
			}
			score[g] = loss() - base
			for i, p := range g.Params {
				p.Data[0] = saved[i]
			}
		}
		ag := teacherAUC(tc, r.Space)
		aa := teacherAUCKind(tc, r.Space, Op, func(g *Group) float64 { return score[g] })
		t.Logf("teacher %d: AUC by gamma_eff %.3f, by ablation %.3f", teacher, ag, aa)
		aucGamma += ag / float64(teachers)
		aucAbl += aa / float64(teachers)
	}
	t.Logf("mean AUC over %d teachers: gamma_eff %.3f, ablation %.3f", teachers, aucGamma, aucAbl)
}
