package planted

import (
	"slices"

	"bayesnas/models"
	"bayesnas/search"
)

// Recovery compares the derived cells with the teacher's (edge, op) pairs:
// the share of the kept ops that are the teacher's, the share of the
// teacher's ops kept, and how many ops were kept.
func Recovery(teacher models.ProxyConfig, d *search.Derivation) (precision, recall float64, kept int) {
	type key struct {
		cell     string
		from, to int
		op       string
	}
	want := map[key]bool{}
	for _, c := range []struct {
		name  string
		edges []models.ProxyEdge
	}{{search.Normal, teacher.Normal}, {search.Reduce, teacher.Reduce}} {
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
	}{{search.Normal, d.Normal}, {search.Reduce, d.Reduce}} {
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

// TeacherAUC is the probability that an op of the teacher has a larger
// gamma_eff than an op the teacher does not use, over pairs in the same
// cell type (0.5: no better than chance; ties count half).
func TeacherAUC(teacher models.ProxyConfig, s *search.Space) float64 {
	return TeacherAUCKind(teacher, s, search.Op, func(g *search.Group) float64 { return g.GammaEff })
}

// TeacherAUCKind is TeacherAUC over the groups of one kind and a score: for
// switches, "the teacher's" means an edge the teacher has.
func TeacherAUCKind(teacher models.ProxyConfig, s *search.Space, kind search.Kind, score func(*search.Group) float64) float64 {
	in := func(edges []models.ProxyEdge, g *search.Group) bool {
		for _, e := range edges {
			if e.From == g.From && e.To == g.To && (g.Kind == search.Switch || slices.Contains(e.Ops, g.Op)) {
				return true
			}
		}
		return false
	}
	var wins, pairs float64
	for _, ct := range []struct {
		name  string
		edges []models.ProxyEdge
	}{{search.Normal, teacher.Normal}, {search.Reduce, teacher.Reduce}} {
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
		w, n := PairWins(pos, neg)
		wins += w
		pairs += n
	}
	return wins / pairs
}

// PairWins counts the (pos, neg) pairs and those where pos scores higher
// (ties count half): the numerator and denominator of an AUC.
func PairWins(pos, neg []float64) (wins, pairs float64) {
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

// OpFirstOnEdge counts the teacher's edges on which the teacher's op has
// the largest gamma among the edge's ops (chance: 1 in len(ops)).
func OpFirstOnEdge(teacher models.ProxyConfig, s *search.Space) int {
	n := 0
	for _, c := range []struct {
		name  string
		edges []models.ProxyEdge
	}{{search.Normal, teacher.Normal}, {search.Reduce, teacher.Reduce}} {
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

// OpRanking is the gamma_eff of every op group, in Groups order.
func OpRanking(s *search.Space) []float64 {
	var v []float64
	for _, g := range s.Groups {
		if g.Kind == search.Op {
			v = append(v, g.GammaEff)
		}
	}
	return v
}
