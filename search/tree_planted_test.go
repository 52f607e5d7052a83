package search

import (
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"bayesnas/models"
)

// Planted architectures on the tree space (issue 5): a teacher PyramidNet
// whose every block has a sparse random tree cell labels random images, and
// a pyramid-tree search on those labels is compared with the teacher's
// cells. A measurement, like TestPlantedMeasure:
//
//	BAYESNAS_EXPLORE=1 [ORACLE=1 LR=1e-9 ARCHLR=0.05] [LAMBDA=0.0001] [ITERS=8] go test ./search -run TreePlanted -v

// treeTeacherCell keeps, in each half of the tree, one top edge and one
// leaf below it, each with one random op: 4 of the 12 edges.
func treeTeacherCell(rng *rand.Rand, ops []string) models.TreeCell {
	c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
	tops := map[int][]int{} // half -> its top edges
	for e := 0; e < models.TreeEdges; e++ {
		if models.TreeEdgeParent(e) == -1 {
			h := e * 2 / models.TreeEdges
			tops[h] = append(tops[h], e)
		}
	}
	for h := 0; h < 2; h++ {
		top := tops[h][rng.IntN(len(tops[h]))]
		var leaves []int
		for e := 0; e < models.TreeEdges; e++ {
			if models.TreeEdgeParent(e) == top {
				leaves = append(leaves, e)
			}
		}
		leaf := leaves[rng.IntN(len(leaves))]
		c.Edges[top] = []string{ops[rng.IntN(len(ops))]}
		c.Edges[leaf] = []string{ops[rng.IntN(len(ops))]}
	}
	return c.Pruned()
}

// treePlanted searches a planted tree teacher (seed) and returns the AUC of
// the teacher's (cell, edge, op) groups among all op groups by gamma_eff,
// the ops the derived network keeps and how many of them are the
// teacher's. With oracle set the teacher is the supernet itself with its
// variables at the teacher cells' indicator (BN recalibrated on the
// images), so a search with the same seed starts from the teacher's
// weights, as plantedSet's oracle.
func treePlanted(t *testing.T, seed uint64, oracle bool, tune func(*Config)) (r *Result, auc float64, nTeacher, nOther, kept, hit int) {
	ops := []string{models.TreeIdentity, models.TreeSep3, models.TreeMax3, models.TreeAvg3}
	rng := rand.New(rand.NewPCG(seed, 0x73ee))
	teacher := models.PyramidTreeConfig{PyramidNetConfig: models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
		StemChannels: 4, Input: [3]int{1, 8, 8}, Classes: 4}, Ops: ops}
	for b := 0; b < 3; b++ {
		teacher.Cells = append(teacher.Cells, treeTeacherCell(rng, ops))
	}
	arch := teacher
	if oracle {
		arch.Cells, arch.Search = nil, true
	}
	g, ts, err := models.PyramidTreeNetwork(arch)
	if err != nil {
		t.Fatal(err)
	}
	net := compiledInit(t, g, 64, seed)
	if oracle {
		for i, c := range ts.Cells {
			for _, e := range c.Edges {
				on := teacher.Cells[i].Edges[e.Index]
				net.Param(e.Switch).Data[0] = 0
				if len(on) > 0 {
					net.Param(e.Switch).Data[0] = 1
				}
				for j, op := range ts.Ops {
					net.Param(e.OpWeights[j]).Data[0] = 0
					if slices.Contains(on, op) {
						net.Param(e.OpWeights[j]).Data[0] = 1
					}
				}
			}
		}
	}
	set := labelledSet(t, net, teacher.Input, teacher.Classes, 2048, seed, oracle, !oracle)
	counts := make([]int, teacher.Classes)
	for _, l := range set.Labels {
		counts[l]++
	}
	t.Logf("teacher %d: labels per class %v", seed, counts) // uncentred (oracle): unbalanced
	cfg := plantedConfig(seed, nil)
	cfg.Kind = KindTree
	cfg.Tree = teacher
	cfg.Tree.Cells, cfg.Tree.Search = nil, true
	if tune != nil {
		tune(&cfg)
	}
	r = plantedRun(t, cfg, set, 1536)
	var pos, neg, posZ, negZ []float64
	for _, gr := range r.Space.Groups {
		if gr.Kind != Op {
			continue
		}
		cell := slices.Index(r.TreeDerivation.Names, gr.CellType)
		z, _ := gr.Significance()
		if slices.Contains(teacher.Cells[cell].Edges[gr.From], gr.Op) {
			pos, posZ = append(pos, gr.GammaEff), append(posZ, z)
		} else {
			neg, negZ = append(neg, gr.GammaEff), append(negZ, z)
		}
	}
	wins, pairs := pairWins(pos, neg)
	winsZ, _ := pairWins(posZ, negZ)
	t.Logf("teacher %d: AUC by gamma_eff %.3f, by significance |a|/sqrt(C) %.3f", seed, wins/pairs, winsZ/pairs)
	for i, c := range r.TreeDerivation.Cells {
		for e, eops := range c.Edges {
			for _, op := range eops {
				kept++
				if slices.Contains(teacher.Cells[i].Edges[e], op) {
					hit++
				}
			}
		}
	}
	return r, wins / pairs, len(pos), len(neg), kept, hit
}

// TestTreePlanted measures recovery on the tree space with the weights
// trained (the real search), or, with ORACLE=1 LR=1e-9 ARCHLR=0.05, from
// the teacher's weights held. Measured 2026-11-29: trained, mean AUC 0.552
// (0.524, 0.455, 0.627, 0.602; students 92-96 % val acc); weights held,
// 0.495 (0.343-0.627). That oracle is weak here, unlike the proxy space's
// (TestPlantedWeightsHeld): the random tree teacher's logits are nearly
// flat (its own cross-entropy on its labels is 1.0-1.1 for 4 classes at
// 100 % accuracy, labels uncentred so the held head can reproduce them,
// and 2 classes take 85-95 % of them), so the labels pull the variables
// only weakly and at lambda 0.01 the penalty wins (students at train loss
// 1.1-1.26). A smaller lambda lets the data win: LAMBDA=0.001 0.595,
// LAMBDA=0.0001 0.735 (0.583, 0.891, 0.639, 0.829), with ITERS=8 0.736;
// held-weight students then reach 66-93 % val acc, short of the teacher's
// 100 %: from every variable at 1, the products of variables along tree
// paths make the fit harder than on the proxy space. Ranked by significance
// |a|/sqrt(C) instead (the derivation's floor), 2026-11-29: trained 0.593
// (0.547, 0.472, 0.676, 0.675), held at lambda 1e-4 0.727; with
// PENALTY=proximal trained 0.550 by gamma_eff, 0.538 by significance.
func TestTreePlanted(t *testing.T) {
	if os.Getenv("BAYESNAS_EXPLORE") == "" {
		t.Skip("measurement: set BAYESNAS_EXPLORE=1")
	}
	tune := func(c *Config) {
		envInt(t, "ITERS", &c.Iterations)
		envFloat(t, "ARCHLR", &c.ArchLR)
		envFloat(t, "LR", &c.LR)
		envFloat(t, "LAMBDA", &c.LambdaOp)
		envFloat(t, "LAMBDA", &c.LambdaSwitch)
		if v := os.Getenv("PENALTY"); v != "" {
			c.PenaltyStep = v
		}
	}
	var mean float64
	for seed := uint64(1); seed <= 4; seed++ {
		r, auc, nt, no, kept, hit := treePlanted(t, seed, os.Getenv("ORACLE") != "", tune)
		t.Logf("teacher %d: val acc %.3f, AUC of the teacher's ops %.3f (%d teacher ops of %d), derived keeps %d ops, %d of them the teacher's",
			seed, r.Log[len(r.Log)-1].ValAcc, auc, nt, nt+no, kept, hit)
		mean += auc / 4
		for _, l := range r.Log {
			t.Logf("  iteration %d: train loss %.3f acc %.3f, val acc %.3f", l.Iteration, l.TrainLoss, l.TrainAcc, l.ValAcc)
		}
	}
	t.Logf("mean AUC %.3f", mean)
}

// TestTreePlantedWeightsHeld is TestPlantedWeightsHeld on the tree space:
// the teacher's weights held, the architecture variables learning from 1,
// lambda 1e-4 (at 0.01 the penalty beats the weak pull of these teachers'
// flat logits, see TestTreePlanted). Measured on teachers 1-4: AUC 0.583,
// 0.891, 0.639, 0.829 (mean 0.735; pure-Go GEMM 0.694; the same teachers
// with the weights trained: 0.552). Asserted: mean AUC >= 0.6 (chance 0.5).
func TestTreePlantedWeightsHeld(t *testing.T) {
	if testing.Short() {
		t.Skip("4 tree searches (about 40 s on 2 cores)")
	}
	var mean float64
	for seed := uint64(1); seed <= 4; seed++ {
		_, auc, _, _, kept, hit := treePlanted(t, seed, true, func(c *Config) {
			c.LR, c.ArchLR, c.LambdaOp, c.LambdaSwitch = 1e-9, 0.05, 1e-4, 1e-4
		})
		t.Logf("teacher %d: AUC %.3f, derived keeps %d ops, %d of them the teacher's", seed, auc, kept, hit)
		mean += auc / 4
	}
	if mean < 0.6 {
		t.Errorf("teacher's weights held: mean AUC of its ops %.3f, want >= 0.6", mean)
	}
}
