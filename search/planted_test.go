package search_test

import (
	"testing"

	"bayesnas/internal/stats"
	"bayesnas/models"
	"bayesnas/search"
	"bayesnas/search/planted"
)

// Planted architectures: a teacher network built from a known random cell
// labels random inputs, and the search must find the teacher's edges and
// ops from those labels alone. Package search/planted builds the problems;
// bench/planted measures other settings (go run ./bench/planted -h).

// outcome is planted.Outcome for a test: it fails t on an error.
func outcome(t *testing.T, c planted.Case, ops []string, n int, oracle bool, tune func(*search.Config)) (*search.Result, models.ProxyConfig) {
	t.Helper()
	r, tc, err := planted.Outcome(c, ops, n, oracle, tune)
	if err != nil {
		t.Fatal(err)
	}
	return r, tc
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
			r, tc := outcome(t, planted.Case{Teacher: teacher, Seed: teacher, Lambda: lam}, planted.PoolOps, 2048, false, nil)
			d, err := r.Space.Derive(search.DeriveConfig{Threshold: 0.1})
			if err != nil {
				t.Fatal(err)
			}
			p, rc, k := planted.Recovery(tc, d)
			auc := planted.TeacherAUC(tc, r.Space)
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
		if rho := stats.Spearman(lambdas, kept); rho > -0.6 {
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
// (go run ./bench/planted identifiable): weight sharing, not the prior,
// loses the teacher.
func TestPlantedWeightsHeld(t *testing.T) {
	if testing.Short() {
		t.Skip("searches 4 times (about 10 s on 2 cores)")
	}
	var auc, prec, rec float64
	const teachers = 4
	for teacher := uint64(1); teacher <= teachers; teacher++ {
		r, tc := outcome(t, planted.Case{Teacher: teacher, Seed: teacher, Lambda: 0.01}, planted.PoolOps, 2048, true, func(c *search.Config) {
			c.LR, c.ArchLR = 1e-9, 0.05
		})
		d, err := r.Space.Derive(search.DeriveConfig{Threshold: 0.3, Relative: true})
		if err != nil {
			t.Fatal(err)
		}
		p, rc, k := planted.Recovery(tc, d)
		a := planted.TeacherAUC(tc, r.Space)
		t.Logf("teacher %d: AUC %.3f, kept %d ops, precision %.2f, recall %.2f, teacher's op first on its edge %d of %d",
			teacher, a, k, p, rc, planted.OpFirstOnEdge(tc, r.Space), len(tc.Normal)+len(tc.Reduce))
		auc += a / teachers
		prec += p / teachers
		rec += rc / teachers
	}
	t.Logf("mean AUC %.3f, precision %.2f, recall %.2f", auc, prec, rec)
	if auc < 0.9 || prec < 0.5 || rec < 0.6 {
		t.Errorf("teacher's weights held: mean AUC %.3f (want >= 0.9), precision %.2f (>= 0.5), recall %.2f (>= 0.6)", auc, prec, rec)
	}
}

// TestDecisionsFollowData checks that the gamma ranking depends on the
// labels more than on the search's seed: the same inputs labelled by other
// teachers, and the same labels searched with other seeds (6 of each),
// each ranking compared with teacher 1 / seed 1's by rank correlation. The released code gave 0.98 across labellings (FIELD.md).
// Measured here with the proximal penalty step: other seeds mean 0.79,
// other labels mean 0.55 (subgradient: seeds 0.75-0.95, mean 0.86, labels
// 0.16-0.83, mean 0.53; pure-Go GEMM 0.86 and 0.60). Asserted: the seeds'
// mean >= 0.7 and the labels' mean at least 0.15 below it.
// More seeds and teachers: go run ./bench/planted decisions -k 12.
func TestDecisionsFollowData(t *testing.T) {
	if testing.Short() {
		t.Skip("searches 13 times (about 25 s on 2 cores)")
	}
	const k = 6
	run := func(teacherSeed, searchSeed uint64) []float64 {
		v, err := planted.Rankings(teacherSeed, searchSeed)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	base := run(1, 1)
	var seeds, labels float64
	for i := uint64(2); i < uint64(k)+2; i++ {
		rs := stats.Spearman(base, run(1, i))
		rl := stats.Spearman(base, run(i, 1))
		t.Logf("seed %d on teacher 1's labels: %.3f; teacher %d's labels with seed 1: %.3f", i, rs, i, rl)
		seeds += rs / float64(k)
		labels += rl / float64(k)
	}
	t.Logf("mean rank correlation of op gamma_eff with teacher 1 / seed 1: other seeds %.3f, other labels %.3f", seeds, labels)
	if seeds < 0.7 || labels > seeds-0.15 {
		t.Errorf("mean rank correlation: other seeds %.3f (want >= 0.7), other labels %.3f (want <= %.3f)", seeds, labels, seeds-0.15)
	}
}
