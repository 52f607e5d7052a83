package hwprofile

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// How a kernel was priced.
const (
	PricedExact        = "exact"
	PricedInterpolated = "interpolated"
)

// index groups a profile's entries by family (kind and map size) for
// lookups and interpolation over channels.
type index struct {
	exact    map[Key]Entry
	families map[string][]Entry
}

func (p *Profile) index() *index {
	if p.idx != nil {
		return p.idx
	}
	ix := &index{exact: map[Key]Entry{}, families: map[string][]Entry{}}
	for _, e := range p.Entries {
		ix.exact[e.Key] = e
		ix.families[e.Key.family()] = append(ix.families[e.Key.family()], e)
	}
	p.idx = ix
	return ix
}

// Price returns the latency of a kernel with key k: the entry itself, or
// an interpolation over channels between entries of its family (linear in
// the channels for kernels whose output follows the input, bilinear in input
// and output channels otherwise). It never extrapolates and never defaults:
// a key outside the measured grid is an error naming the nearest keys.
func (p *Profile) Price(k Key) (float64, string, error) {
	ix := p.index()
	if e, ok := ix.exact[k]; ok {
		return e.MedianMs, PricedExact, nil
	}
	fam := ix.families[k.family()]
	if ms, ok := interpolate(fam, k); ok {
		return ms, PricedInterpolated, nil
	}
	return 0, "", fmt.Errorf("the profile cannot price %s (nearest keys: %s)", k, strings.Join(p.nearest(k, 3), "; "))
}

// interpolate prices k from the grid of its family: the tightest bracket
// of measured channel values around k's whose four corners were all
// measured (a family holds grid points and the odd widths of the networks
// it was measured for: the bracket must not mix them).
func interpolate(fam []Entry, k Key) (float64, bool) {
	if len(fam) == 0 {
		return 0, false
	}
	at := map[[2]int]float64{}
	var cs, outs []int
	for _, e := range fam {
		at[[2]int{e.C, e.Out}] = e.MedianMs
		cs = append(cs, e.C)
		outs = append(outs, e.Out)
	}
	cLo, cHi := sides(cs, k.C)
	oLo, oHi := sides(outs, k.Out)
	best, found := math.Inf(1), false
	var v float64
	for _, c0 := range cLo {
		for _, c1 := range cHi {
			for _, o0 := range oLo {
				for _, o1 := range oHi {
					v00, ok00 := at[[2]int{c0, o0}]
					v01, ok01 := at[[2]int{c0, o1}]
					v10, ok10 := at[[2]int{c1, o0}]
					v11, ok11 := at[[2]int{c1, o1}]
					span := float64(c1-c0) + float64(o1-o0)
					if !ok00 || !ok01 || !ok10 || !ok11 || span >= best {
						continue
					}
					tc, to := frac(c0, c1, k.C), frac(o0, o1, k.Out)
					best, found = span, true
					v = (1-tc)*((1-to)*v00+to*v01) + tc*((1-to)*v10+to*v11)
				}
			}
		}
	}
	return v, found
}

// sides returns the distinct values <= x (nearest first) and >= x (nearest
// first).
func sides(vals []int, x int) (lo, hi []int) {
	u := slices.Clone(vals)
	slices.Sort(u)
	u = slices.Compact(u)
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] <= x {
			lo = append(lo, u[i])
		}
	}
	for _, v := range u {
		if v >= x {
			hi = append(hi, v)
		}
	}
	return lo, hi
}

func frac(a, b, x int) float64 {
	if a == b {
		return 0
	}
	return float64(x-a) / float64(b-a)
}

// nearest lists up to n keys of the profile closest to k: the same kind
// first, then by how far map size and channels are.
func (p *Profile) nearest(k Key, n int) []string {
	type cand struct {
		key  Key
		dist float64
	}
	var cs []cand
	op := strings.Fields(k.Kind)[0]
	for _, e := range p.Entries {
		d := math.Abs(float64(e.C-k.C)) + math.Abs(float64(e.Out-k.Out)) + 4*math.Abs(float64(e.H-k.H)+float64(e.W-k.W))
		switch {
		case e.Kind == k.Kind:
		case strings.Fields(e.Kind)[0] == op:
			d += 1e6
		default:
			d += 1e9
		}
		cs = append(cs, cand{e.Key, d})
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].dist < cs[j].dist })
	var out []string
	for _, c := range cs[:min(n, len(cs))] {
		out = append(out, c.key.String())
	}
	if len(out) == 0 {
		out = []string{"none: the profile is empty"}
	}
	return out
}

// NodePrice is one kernel's share of a prediction.
type NodePrice struct {
	Node string  `json:"node"`
	Key  Key     `json:"key"`
	Ms   float64 `json:"ms"`
	How  string  `json:"how"`
	MACs int64   `json:"macs"`
}

// Prediction is a network's predicted latency per inference.
type Prediction struct {
	TotalMs    float64 `json:"total_ms"`
	OverheadMs float64 `json:"overhead_ms"`
	// KernelsMs is the plain sum of the kernels' latencies; TotalMs applies
	// the profile's calibration to it.
	KernelsMs float64 `json:"kernels_ms"`
	// Calibration names the calibration applied: a space, "all", or ""
	// for none.
	Calibration string      `json:"calibration"`
	MACs        int64       `json:"macs"`
	Nodes       []NodePrice `json:"nodes"`
}

// PredictKernels prices kernels (from Kernels) of a network of space ("" if
// none is known) and adds them up, with the space's calibration (or the
// profile-wide one). An unpriceable kernel is an error naming its node.
func (p *Profile) PredictKernels(ks []Kernel, space string) (*Prediction, error) {
	pr := &Prediction{OverheadMs: p.OverheadMs}
	for _, k := range ks {
		ms, how, err := p.Price(k.Key)
		if err != nil {
			return nil, fmt.Errorf("node %q: %w", k.Name, err)
		}
		pr.Nodes = append(pr.Nodes, NodePrice{Node: k.Name, Key: k.Key, Ms: ms, How: how, MACs: k.MACs})
		pr.KernelsMs += ms
		pr.MACs += k.MACs
	}
	pr.TotalMs = p.OverheadMs + pr.KernelsMs
	if c := p.calibration(space); c != nil {
		pr.Calibration = c.Space
		if pr.Calibration == "" {
			pr.Calibration = "all"
		}
		pr.TotalMs = p.OverheadMs + c.Scale*pr.KernelsMs + c.PerKernelMs*float64(len(ks))
	}
	return pr, nil
}

// calibration returns the calibration for a space: its own, else the
// profile-wide one, else nil.
func (p *Profile) calibration(space string) *Calibration {
	var all *Calibration
	for i := range p.Calibration {
		c := &p.Calibration[i]
		if c.Space == space && space != "" {
			return c
		}
		if c.Space == "" {
			all = c
		}
	}
	return all
}

// Calibrate fits the profile's calibration for a space ("" for the
// profile-wide one) to networks whose predictions (their uncalibrated kernel
// sums and kernel counts) and measured latencies are given: least squares on
// the relative error (a 10 % miss on a pruned network counts as much as on
// the unpruned one) for Scale and PerKernelMs. PerKernelMs is fitted only
// where the kernel counts differ by at least 10 % between networks: where
// they barely do (every PyramidNet has the same kernels at any width), it
// is an intercept in disguise, fitted on mid-sized networks, and it priced
// the smallest pruned PyramidNet at twice its measured latency. When the
// fit makes either negative (too few or too alike networks), Scale alone.
// It replaces the space's calibration.
func (p *Profile) Calibrate(space string, preds []*Prediction, measuredMs []float64) error {
	if len(preds) != len(measuredMs) || len(preds) < 3 {
		return fmt.Errorf("calibration: %d networks, want at least 3", len(preds))
	}
	y := make([]float64, len(preds))
	both := make([][]float64, len(preds))
	sumOnly := make([][]float64, len(preds))
	lo, hi := math.Inf(1), 0.0
	for i, pr := range preds {
		if measuredMs[i] <= p.OverheadMs || math.IsNaN(measuredMs[i]) {
			return fmt.Errorf("calibration: network %d measured %v ms, at most the overhead %v ms", i, measuredMs[i], p.OverheadMs)
		}
		// Each row divided by the measurement: least squares on the
		// relative error.
		w := 1 / measuredMs[i]
		y[i] = (measuredMs[i] - p.OverheadMs) * w
		n := float64(len(pr.Nodes))
		both[i] = []float64{pr.KernelsMs * w, n * w}
		sumOnly[i] = []float64{pr.KernelsMs * w}
		lo, hi = min(lo, n), max(hi, n)
	}
	var b []float64
	var err error
	if hi >= 1.1*lo {
		b, err = leastSquares(both, y)
	}
	if b == nil || err != nil || b[0] <= 0 || b[1] < 0 {
		if b, err = leastSquares(sumOnly, y); err != nil || b[0] <= 0 {
			return fmt.Errorf("calibration: no positive scale fits these %d networks", len(preds))
		}
		b = append(b, 0)
	}
	c := Calibration{Space: space, Scale: math.Round(b[0]*1e6) / 1e6, PerKernelMs: roundNs(b[1]), Networks: len(preds)}
	p.Calibration = slices.DeleteFunc(p.Calibration, func(o Calibration) bool { return o.Space == space })
	p.Calibration = append(p.Calibration, c)
	return nil
}

// leastSquares solves min |X b - y| through the normal equations (a handful
// of columns) with Gaussian elimination and partial pivoting.
func leastSquares(x [][]float64, y []float64) ([]float64, error) {
	k := len(x[0])
	a := make([][]float64, k)
	for i := range a {
		a[i] = make([]float64, k+1)
	}
	for r, row := range x {
		for i := range k {
			for j := range k {
				a[i][j] += row[i] * row[j]
			}
			a[i][k] += row[i] * y[r]
		}
	}
	for col := range k {
		piv := col
		for r := col + 1; r < k; r++ {
			if math.Abs(a[r][col]) > math.Abs(a[piv][col]) {
				piv = r
			}
		}
		if math.Abs(a[piv][col]) < 1e-300 {
			return make([]float64, k), fmt.Errorf("singular system")
		}
		a[col], a[piv] = a[piv], a[col]
		for r := range k {
			if r == col {
				continue
			}
			f := a[r][col] / a[col][col]
			for c := col; c <= k; c++ {
				a[r][c] -= f * a[col][c]
			}
		}
	}
	b := make([]float64, k)
	for i := range k {
		b[i] = a[i][k] / a[i][i]
	}
	return b, nil
}
