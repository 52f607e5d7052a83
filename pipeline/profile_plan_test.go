package pipeline

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"bayesnas/compress"
	"bayesnas/export"
	"bayesnas/hwprofile"
	"bayesnas/models"
	"bayesnas/nn"
)

// defaultPlan is the plan of `bayesnas profile measure --space pyramidnet
// --space proxy --space tree --arch profiles/networks/...` with the default
// flags, the one the committed profiles were measured with (bench/profiles.sh).
// Nothing is timed.
var defaultPlan = sync.OnceValues(func() ([]hwprofile.Job, error) {
	sp, err := NamedSpaces(hwprofile.Spaces)
	if err != nil {
		return nil, err
	}
	archs, err := filepath.Glob("../profiles/networks/*.json")
	if err != nil || len(archs) == 0 {
		return nil, fmt.Errorf("profiles/networks: no architecture (%v)", err)
	}
	return PlanProfile(ProfileMeasureOptions{
		Networks: ProfileNetworks{Spaces: sp, Samples: DefaultProfileSamples, SampleSeed: DefaultProfileSampleSeed, Archs: archs},
		GridStep: DefaultProfileGridStep, Calibrate: DefaultProfileCalibrate})
})

func planned(t *testing.T) []hwprofile.Job {
	t.Helper()
	jobs, err := defaultPlan()
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

func isPieces(kind string) bool {
	op := strings.Fields(kind)[0]
	return op == "Split" || op == "Concat" || op == "Shuffle"
}

// The default plan holds every committed profile's entries (under their
// upgraded keys) and adds only the channel grids of Split, Concat and
// Shuffle: what `profile measure --missing-only` times to extend them.
func TestDefaultPlanAddsPieceGrids(t *testing.T) {
	jobs := planned(t)
	inPlan := map[hwprofile.Key]bool{}
	for _, j := range jobs {
		inPlan[j.Key] = true
	}
	paths, err := filepath.Glob("../profiles/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no profiles (%v)", err)
	}
	var first []hwprofile.Key
	for _, path := range paths {
		p, err := hwprofile.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		have := map[hwprofile.Key]bool{}
		for _, e := range p.Entries {
			have[e.Key] = true
			if !inPlan[e.Key] {
				t.Errorf("%s: %s is not planned", path, e.Key)
			}
		}
		var missing []hwprofile.Key
		for _, j := range jobs {
			if have[j.Key] {
				continue
			}
			missing = append(missing, j.Key)
			if !isPieces(j.Key.Kind) || j.Key.C%DefaultProfileGridStep != 0 {
				t.Errorf("%s: %s missing, want only Split, Concat and Shuffle grid points", path, j.Key)
			}
		}
		t.Logf("%s: %d entries, %d planned, %d missing", path, len(p.Entries), len(jobs), len(missing))
		if first == nil {
			first = missing
		} else if !slices.Equal(first, missing) {
			t.Errorf("%s misses %d kernels, %s %d", path, len(missing), paths[0], len(first))
		}
	}
	// Every family of the three kinds is on a full grid: each multiple of
	// the step up to its widest (from the piece count up).
	fams := map[string][]int{}
	for _, j := range jobs {
		if isPieces(j.Key.Kind) {
			f := fmt.Sprintf("%s@%dx%d", j.Key.Kind, j.Key.H, j.Key.W)
			fams[f] = append(fams[f], j.Key.C)
		}
	}
	kinds := map[string]bool{}
	for f, cs := range fams {
		kinds[strings.Fields(f)[0]] = true
		for c := DefaultProfileGridStep; c <= slices.Max(cs); c += DefaultProfileGridStep {
			if !slices.Contains(cs, c) {
				t.Errorf("%s: no grid point at %d (planned %v)", f, c, cs)
			}
		}
	}
	if len(kinds) != 3 {
		t.Fatalf("grids for %v, want Split, Concat and Shuffle", kinds)
	}
}

// layer is a set of prunable groups produced by the same weights, as
// compress's selections see them: its width is rounded as one.
type layer struct {
	groups     []int
	per, width int
}

func prunableLayers(t *testing.T, g *models.Graph) []*layer {
	t.Helper()
	groups, err := compress.ChannelGroups(g, compress.DefaultGroupOptions())
	if err != nil {
		t.Fatal(err)
	}
	shapes, err := g.InferShapes()
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]*layer{}
	var out []*layer
	for _, gr := range groups {
		if !gr.Prunable {
			continue
		}
		count := map[string]int{}
		var nodes []string
		for _, m := range gr.Members {
			if m.Role == compress.RoleProduce {
				if count[m.Node] == 0 {
					nodes = append(nodes, m.Node)
				}
				count[m.Node]++
			}
		}
		if len(nodes) == 0 {
			continue
		}
		slices.Sort(nodes)
		key := strings.Join(nodes, "+")
		l := byKey[key]
		if l == nil {
			l = &layer{per: count[nodes[0]], width: shapes[nodes[0]][0]}
			byKey[key] = l
			out = append(out, l)
		}
		l.groups = append(l.groups, gr.Index)
	}
	return out
}

// randomPrune removes groups so that every prunable layer keeps a random
// multiple of 8 channels (its whole width, or one group's worth, where it
// has no smaller multiple), as compression leaves them.
func randomPrune(t *testing.T, g *models.Graph, r *rand.Rand) (*models.Graph, []*nn.Param) {
	t.Helper()
	params, err := export.RandomParams(g, r.Uint64())
	if err != nil {
		t.Fatal(err)
	}
	var remove []int
	for _, l := range prunableLayers(t, g) {
		keeps := []int{l.width}
		for k := 8; k < l.width; k += 8 {
			if k%l.per == 0 {
				keeps = append(keeps, k)
			}
		}
		keep := keeps[r.IntN(len(keeps))]
		perm := r.Perm(len(l.groups))
		// Some of the width can be in protected groups (as compress's
		// removeFor, drop what the layer has).
		for _, i := range perm[:min((l.width-keep)/l.per, len(l.groups))] {
			remove = append(remove, l.groups[i])
		}
	}
	slices.Sort(remove)
	pg, pp, _, err := compress.Prune(g, params, remove)
	if err != nil {
		t.Fatalf("%s: %v", g.Name, err)
	}
	return pg, pp
}

// Networks of every space pruned to random widths (multiples of 8) by
// compress's group machinery have every kernel priced from the default
// plan's keys: exactly, or interpolated between its grid points. Every
// planned key stands in for a measured entry; nothing is timed.
func TestPlanPricesPrunedNetworks(t *testing.T) {
	p := &hwprofile.Profile{OverheadMs: 0}
	for _, j := range planned(t) {
		p.Entries = append(p.Entries, hwprofile.Entry{Key: j.Key, MedianMs: 1, P90Ms: 1, Repeats: 1})
	}
	r := rand.New(rand.NewPCG(12, 1))
	for _, name := range hwprofile.Spaces {
		sp, err := hwprofile.NamedSpace(name)
		if err != nil {
			t.Fatal(err)
		}
		var nets []*models.Graph
		if name == "pyramidnet" {
			g, err := models.PyramidNet(models.PyramidNetDefault())
			if err != nil {
				t.Fatal(err)
			}
			nets = append(nets, g)
		} else {
			// Random cells (models.RandomDARTSCell for proxy), seeds apart
			// from the plan's.
			if nets, err = sp.Sample(3, 1); err != nil {
				t.Fatal(err)
			}
		}
		resized := map[string]int{}
		kernels, interpolated := 0, 0
		for _, g := range nets {
			m, err := hwprofile.Network(g, nil)
			if err != nil {
				t.Fatal(err)
			}
			before, err := hwprofile.Kernels(m)
			if err != nil {
				t.Fatal(err)
			}
			was := map[string]hwprofile.Key{}
			for _, k := range before {
				was[k.Name] = k.Key
			}
			for range 3 {
				pg, pp := randomPrune(t, g, r)
				pm, err := hwprofile.Network(pg, pp)
				if err != nil {
					t.Fatalf("%s pruned: %v", g.Name, err)
				}
				ks, err := hwprofile.Kernels(pm)
				if err != nil {
					t.Fatalf("%s pruned: %v", g.Name, err)
				}
				for _, k := range ks {
					_, how, err := p.Price(k.Key)
					if err != nil {
						t.Fatalf("%s pruned: node %q: %v", g.Name, k.Name, err)
					}
					kernels++
					if how == hwprofile.PricedInterpolated {
						interpolated++
					}
					if w, ok := was[k.Name]; ok && w != k.Key && isPieces(k.Key.Kind) {
						resized[strings.Fields(k.Key.Kind)[0]]++
					}
				}
			}
		}
		t.Logf("%s: %d kernels priced, %d of them interpolated; resized %v", name, kernels, interpolated, resized)
		// The cells' splits, concats and shuffles did change width.
		switch name {
		case "proxy":
			if resized["Concat"] == 0 {
				t.Errorf("proxy: no concat resized")
			}
		case "tree":
			if resized["Split"] == 0 || resized["Shuffle"] == 0 {
				t.Errorf("tree: splits or shuffles not resized: %v", resized)
			}
		}
	}
}
