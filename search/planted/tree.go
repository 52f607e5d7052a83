package planted

import (
	"math/rand/v2"
	"slices"

	"bayesnas/models"
	"bayesnas/search"
)

// Planted architectures on the tree space (issue 5): a teacher PyramidNet
// whose every block has a sparse random tree cell labels random images, and
// a pyramid-tree search on those labels is compared with the teacher's
// cells.

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

// TreeOutcome is a planted tree search and how it compares with its
// teacher.
type TreeOutcome struct {
	Result *search.Result
	// LabelCounts is the number of labels of each class (uncentred with
	// oracle: unbalanced).
	LabelCounts []int
	// AUC is the AUC of the teacher's (cell, edge, op) groups among all op
	// groups by gamma_eff; AUCSignificance the same by significance
	// |a|/sqrt(C).
	AUC, AUCSignificance float64
	// Teacher and Other count the teacher's op groups and the others.
	Teacher, Other int
	// Kept is the number of ops the derived network keeps, Hit how many of
	// them are the teacher's.
	Kept, Hit int
}

// Tree searches a planted tree teacher (seed): a PyramidNet of 1 block per
// stage (alpha 6, groups 2, 4 stem channels, 8x8 inputs, 4 classes) with a
// random sparse tree cell per block labels 2048 images, and a pyramid-tree
// search (Config's schedule; tune, when not nil, changes it last) runs on
// them. With oracle set the teacher is the supernet itself with its
// variables at the teacher cells' indicator (BN recalibrated on the images,
// logits not centred), so a search with the same seed starts from the
// teacher's weights, as Set's oracle.
func Tree(seed uint64, oracle bool, tune func(*search.Config)) (*TreeOutcome, error) {
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
		return nil, err
	}
	net, err := compiledInit(g, 64, seed)
	if err != nil {
		return nil, err
	}
	if oracle {
		for i, c := range ts.Cells {
			for _, e := range c.Edges {
				on := teacher.Cells[i].Edges[e.Index]
				net.Param(e.Switch).Set(0, 0)
				if len(on) > 0 {
					net.Param(e.Switch).Set(0, 1)
				}
				for j, op := range ts.Ops {
					net.Param(e.OpWeights[j]).Set(0, 0)
					if slices.Contains(on, op) {
						net.Param(e.OpWeights[j]).Set(0, 1)
					}
				}
			}
		}
	}
	set, err := labelledSet(net, teacher.Input, teacher.Classes, 2048, seed, oracle, !oracle)
	if err != nil {
		return nil, err
	}
	out := &TreeOutcome{LabelCounts: make([]int, teacher.Classes)}
	for _, l := range set.Labels {
		out.LabelCounts[l]++
	}
	cfg := Config(seed, nil)
	cfg.Kind = search.KindTree
	cfg.Tree = teacher
	cfg.Tree.Cells, cfg.Tree.Search = nil, true
	if tune != nil {
		tune(&cfg)
	}
	r, err := Run(cfg, set, 1536)
	if err != nil {
		return nil, err
	}
	out.Result = r
	var pos, neg, posZ, negZ []float64
	for _, gr := range r.Space.Groups {
		if gr.Kind != search.Op {
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
	wins, pairs := PairWins(pos, neg)
	winsZ, _ := PairWins(posZ, negZ)
	out.AUC, out.AUCSignificance = wins/pairs, winsZ/pairs
	out.Teacher, out.Other = len(pos), len(neg)
	for i, c := range r.TreeDerivation.Cells {
		for e, eops := range c.Edges {
			for _, op := range eops {
				out.Kept++
				if slices.Contains(teacher.Cells[i].Edges[e], op) {
					out.Hit++
				}
			}
		}
	}
	return out, nil
}
