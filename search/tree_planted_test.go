package search

import (
	"math/rand/v2"
	"os"
	"testing"

	"bayesnas/models"
	"bayesnas/nn"
)

// Planted architectures on the tree space (issue 5): a teacher PyramidNet
// whose every block has a sparse random tree cell labels random images, and
// a pyramid-tree search on those labels is compared with the teacher's
// cells. A measurement, like TestPlantedMeasure:
//
//	BAYESNAS_EXPLORE=1 go test ./search -run TreePlanted -v

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

func TestTreePlanted(t *testing.T) {
	if os.Getenv("BAYESNAS_EXPLORE") == "" {
		t.Skip("measurement: set BAYESNAS_EXPLORE=1")
	}
	ops := []string{models.TreeIdentity, models.TreeSep3, models.TreeMax3, models.TreeAvg3}
	for seed := uint64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0x73ee))
		teacher := models.PyramidTreeConfig{PyramidNetConfig: models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
			StemChannels: 4, Input: [3]int{1, 8, 8}, Classes: 4}, Ops: ops}
		for b := 0; b < 3; b++ {
			teacher.Cells = append(teacher.Cells, treeTeacherCell(rng, ops))
		}
		g, _, err := models.PyramidTreeNetwork(teacher)
		if err != nil {
			t.Fatal(err)
		}
		net, err := models.Compile(g, nn.NewCPU(nn.DefaultGemm(), 2), 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := models.InitParams(net, g, seed); err != nil {
			t.Fatal(err)
		}
		set := labelledSet(t, net, teacher.Input, teacher.Classes, 2048, seed, false)
		cfg := plantedConfig(seed, nil)
		cfg.Kind = KindTree
		cfg.Tree = teacher
		cfg.Tree.Cells, cfg.Tree.Search = nil, true
		r := plantedRun(t, cfg, set, 1536)
		// AUC of the teacher's (cell, edge, op) among every op group.
		var pos, neg []float64
		for _, gr := range r.Space.Groups {
			if gr.Kind != Op {
				continue
			}
			cell := -1
			for i, name := range r.TreeDerivation.Names {
				if name == gr.CellType {
					cell = i
				}
			}
			in := false
			for _, op := range teacher.Cells[cell].Edges[gr.From] {
				in = in || op == gr.Op
			}
			if in {
				pos = append(pos, gr.GammaEff)
			} else {
				neg = append(neg, gr.GammaEff)
			}
		}
		wins, pairs := pairWins(pos, neg)
		kept := 0
		hit := 0
		for i, c := range r.TreeDerivation.Cells {
			for e, eops := range c.Edges {
				for _, op := range eops {
					kept++
					for _, top := range teacher.Cells[i].Edges[e] {
						if top == op {
							hit++
						}
					}
				}
			}
		}
		t.Logf("teacher %d: val acc %.3f, AUC of the teacher's ops %.3f (%d teacher ops of %d), derived keeps %d ops, %d of them the teacher's",
			seed, r.Log[len(r.Log)-1].ValAcc, wins/pairs, len(pos), len(pos)+len(neg), kept, hit)
	}
}
