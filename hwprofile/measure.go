package hwprofile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"bayesnas/export"
	"bayesnas/models"
	"bayesnas/nn"
)

// Job is one kernel configuration to time, with the model that runs it alone.
type Job struct {
	Key   Key
	Model *export.Model
}

// GridOptions say which channel grids a plan adds around the kernels it
// found: for every family of a gridded kind, every multiple of Step from
// Step up to the largest channel count the family has (rounded up to Step),
// in input and, where the kernel chooses them, output channels.
type GridOptions struct {
	Step int // 0: no grids
}

// gridded reports whether a kernel kind gets a channel grid: the kinds whose
// widths compression changes and that MicroFor can resize.
func gridded(kind string) bool {
	op := strings.Fields(kind)[0]
	switch op {
	case "Conv", "Conv+Relu", "BatchNormalization", "Relu", "Add", "MaxPool", "AveragePool",
		"GlobalAveragePool", "Pad", "Flatten+Gemm", "Gemm", "Mul",
		// The pruned widths of cells and ProxylessNAS blocks flow into
		// their splits, concats and channel shuffles too.
		"Split", "Concat", "Shuffle":
		return true
	}
	return false
}

// Network exports g for pricing and measurement: with params when given
// (the trained weights, which decide a few of the exporter's folds), or with
// deterministic stand-in values otherwise.
func Network(g *models.Graph, params []*nn.Param) (*export.Model, error) {
	if params == nil {
		// Random parameters are allocated: a network too large for this
		// machine is refused first, as every compile does (issue 17).
		if err := models.CheckMemory(g, 1); err != nil {
			return nil, err
		}
		var err error
		if params, err = export.RandomParams(g, 1); err != nil {
			return nil, err
		}
	}
	return export.Build(g, params, export.Options{})
}

// Plan lists the kernel configurations that pricing the given networks
// needs, each once, with channel grids around them when grid.Step > 0.
func Plan(nets []*export.Model, grid GridOptions) ([]Job, error) {
	jobs := map[Key]Job{}
	type fam struct {
		tmpl       Kernel
		m          *export.Model
		shapes     map[string][]int
		maxC, maxO int
	}
	fams := map[string]*fam{}
	var order []string
	for _, m := range nets {
		shapes, err := Shapes(m)
		if err != nil {
			return nil, err
		}
		ks, err := Kernels(m)
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if _, ok := jobs[k.Key]; !ok {
				jobs[k.Key] = Job{Key: k.Key, Model: MicroModel(m, k, shapes)}
			}
			if grid.Step <= 0 || !gridded(k.Key.Kind) {
				continue
			}
			f := fams[k.Key.family()]
			if f == nil {
				f = &fam{tmpl: k, m: m, shapes: shapes}
				fams[k.Key.family()] = f
				order = append(order, k.Key.family())
			}
			f.maxC, f.maxO = max(f.maxC, k.Key.C), max(f.maxO, k.Key.Out)
		}
	}
	// A conv runs fused with its ReLU or not depending on who else reads
	// its output, which a derived network decides edge by edge: grid every
	// conv family both ways, over the channels either way has.
	for _, name := range slices.Clone(order) {
		f := fams[name]
		tw, ok := twin(f.tmpl)
		if !ok {
			continue
		}
		g := fams[tw.Key.family()]
		if g == nil {
			shapes := f.shapes
			if _, ok := shapes[tw.output]; !ok { // the ReLU twin's new output
				shapes = maps.Clone(f.shapes)
				shapes[tw.output] = f.shapes[f.tmpl.output]
			}
			g = &fam{tmpl: tw, m: f.m, shapes: shapes}
			fams[tw.Key.family()] = g
			order = append(order, tw.Key.family())
		}
		g.maxC, g.maxO = max(g.maxC, f.maxC), max(g.maxO, f.maxO)
	}
	for _, name := range order {
		f := fams[name]
		// A tree cell with groups splits a pruned width (a multiple of
		// the step) into two branches, so the kernels on a branch see
		// half a step: their grids start there. Splits and concats are
		// keyed by their total width, which stays a multiple.
		op := strings.Fields(f.tmpl.Key.Kind)[0]
		half := op != "Split" && op != "Concat"
		cs := steps(grid.Step, f.maxC, half)
		outs := []int{0}
		if f.maxO > 0 {
			outs = steps(grid.Step, f.maxO, half)
		}
		for _, c := range cs {
			for _, o := range outs {
				key := f.tmpl.Key
				key.C, key.Out = c, o
				if _, ok := jobs[key]; ok {
					continue
				}
				mm, err := MicroFor(f.m, f.tmpl, f.shapes, c, o)
				if err != nil {
					// A width the kernel cannot take (not divisible by its
					// groups, a pad that would shrink): no network has it.
					continue
				}
				jobs[key] = Job{Key: key, Model: mm}
			}
		}
	}
	out := make([]Job, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b Job) int { return a.Key.less(b.Key) })
	return out, nil
}

// twin returns a Conv kernel with its ReLU fused in, or a Conv+Relu kernel
// without it.
func twin(k Kernel) (Kernel, bool) {
	t := k
	switch {
	case strings.HasPrefix(k.Key.Kind, "Conv+Relu "):
		t.Nodes = k.Nodes[:1]
		t.output = k.Nodes[0].Outputs[0]
		t.Key.Kind = "Conv " + strings.TrimPrefix(k.Key.Kind, "Conv+Relu ")
	case strings.HasPrefix(k.Key.Kind, "Conv "):
		relu := &export.Node{Name: k.Name + "/relu", OpType: "Relu", Inputs: []string{k.output}, Outputs: []string{k.output + "/relu"}}
		t.Nodes = append(slices.Clone(k.Nodes), relu)
		t.output = relu.Outputs[0]
		t.Key.Kind = "Conv+Relu " + strings.TrimPrefix(k.Key.Kind, "Conv ")
	default:
		return k, false
	}
	return t, true
}

// steps returns step, 2*step, ... up to hi rounded up to a multiple of step.
func steps(step, hi int, half bool) []int {
	var s []int
	if half && step%2 == 0 {
		s = append(s, step/2)
	}
	for v := step; v < hi+step; v += step {
		s = append(s, v)
	}
	return s
}

// MicroFor returns the micro model of template kernel k of m resized to c
// input channels and out output channels (out is ignored for kernels whose
// output follows the input; a Concat's c is its output's, cut evenly over
// its inputs, and a Split cuts its c evenly): its weights are replaced by
// values of the new shape, and the attributes and shape tensors that depend
// on channels follow.
func MicroFor(m *export.Model, k Kernel, shapes map[string][]int, c, out int) (*export.Model, error) {
	if c == k.Key.C && out == k.Key.Out {
		return MicroModel(m, k, shapes), nil
	}
	first := k.Nodes[0]
	newOut := out
	if k.Key.Out == 0 {
		newOut = c
	}
	// New shapes for every tensor of the kernel.
	sh := map[string][]int{}
	for name, s := range shapes {
		sh[name] = s
	}
	resize := func(name string, ch int) {
		s := slices.Clone(sh[name])
		if len(s) > 0 {
			s[0] = ch
		}
		sh[name] = s
	}
	// A Split or Concat of c channels cut evenly into its pieces: the
	// grid's cut (the key does not say how a network cuts them).
	var cut []int
	if first.OpType == "Split" || first.OpType == "Concat" {
		var err error
		if cut, err = splitEven(c, pieces(first)); err != nil {
			return nil, err
		}
	}
	shuffle := strings.HasPrefix(k.Key.Kind, "Shuffle ")
	groups := 0
	if shuffle {
		groups = shapes[first.Outputs[0]][0]
		if c%groups != 0 {
			return nil, fmt.Errorf("%d channels do not shuffle in %d groups", c, groups)
		}
	}
	switch first.OpType {
	case "Concat":
		// The first piece is the model's input, the others its extras,
		// in the order of the Concat's inputs.
		size := map[string]int{}
		for i, in := range first.Inputs {
			if s, ok := size[in]; ok && s != cut[i] {
				return nil, fmt.Errorf("%s reads %s twice: cannot cut %d channels evenly", k.Key.Kind, in, c)
			}
			size[in] = cut[i]
			resize(in, cut[i])
		}
	default:
		resize(k.input, c)
		for _, e := range k.extra {
			resize(e, c)
		}
	}
	for _, n := range k.Nodes {
		for i, o := range n.Outputs {
			switch {
			case len(sh[o]) == 1 && first.OpType == "Flatten" && o == first.Outputs[0]:
				sh[o] = []int{c * prod(shapes[k.input][1:])}
			case n.OpType == "Split":
				resize(o, cut[i])
			case shuffle && n != k.Nodes[len(k.Nodes)-1]:
				// (g, c/g, H, W) grouped, then transposed.
				s := slices.Clone(sh[o])
				if n.OpType == "Reshape" {
					s[0], s[1] = groups, c/groups
				} else {
					s[0], s[1] = c/groups, groups
				}
				sh[o] = s
			default:
				resize(o, newOut)
			}
		}
	}
	var nodes []*export.Node
	var inits []*export.Tensor
	for _, n := range k.Nodes {
		nn := *n
		nn.Inputs = slices.Clone(n.Inputs)
		nn.Attrs = slices.Clone(n.Attrs)
		switch n.OpType {
		case "Conv":
			g := attrInt(n, "group", 1)
			ks := attrInts(n, "kernel_shape")
			if k.Key.Out == 0 { // depthwise: the groups follow the channels
				g = int64(c)
				for i, a := range nn.Attrs {
					if a.Name == "group" {
						b := *a
						b.I = g
						nn.Attrs[i] = &b
					}
				}
			}
			if int64(c)%g != 0 || int64(newOut)%g != 0 {
				return nil, fmt.Errorf("%d -> %d channels do not divide into %d groups", c, newOut, g)
			}
			inits = append(inits, filled(n.Inputs[1], []int64{int64(newOut), int64(c) / g, ks[0], ks[1]}))
			if len(n.Inputs) > 2 {
				inits = append(inits, filled(n.Inputs[2], []int64{int64(newOut)}))
			}
		case "BatchNormalization":
			for _, in := range n.Inputs[1:] {
				inits = append(inits, filled(in, []int64{int64(c)}))
			}
		case "Gemm":
			inits = append(inits, filled(n.Inputs[1], []int64{int64(newOut), int64(sh[n.Inputs[0]][0])}))
			if len(n.Inputs) > 2 {
				inits = append(inits, filled(n.Inputs[2], []int64{int64(newOut)}))
			}
		case "Pad":
			if newOut < c {
				return nil, fmt.Errorf("pad from %d to %d channels", c, newOut)
			}
			inits = append(inits, export.Int64Tensor(n.Inputs[1], []int64{8}, []int64{0, 0, 0, 0, 0, int64(newOut - c), 0, 0}))
		case "Split":
			sizes := make([]int64, len(cut))
			for i, v := range cut {
				sizes[i] = int64(v)
			}
			inits = append(inits, export.Int64Tensor(n.Inputs[1], []int64{int64(len(sizes))}, sizes))
		case "Reshape":
			if !shuffle {
				return nil, fmt.Errorf("%s cannot be resized", k.Key.Kind)
			}
			// The shuffle's reshapes: to (g, c/g, H, W) and back to C.
			hw := shapes[k.input][1:]
			dims := []int64{0, int64(c), int64(hw[0]), int64(hw[1])}
			if n == k.Nodes[0] {
				dims = []int64{0, int64(groups), int64(c / groups), int64(hw[0]), int64(hw[1])}
			}
			inits = append(inits, export.Int64Tensor(n.Inputs[1], []int64{int64(len(dims))}, dims))
		case "Mul":
			if !slices.ContainsFunc(m.Graph.Initializers, func(t *export.Tensor) bool { return t.Name == n.Inputs[1] }) {
				return nil, fmt.Errorf("Mul of two maps cannot be resized")
			}
		}
		nodes = append(nodes, &nn)
	}
	// Initializers not replaced above keep their values (scalars).
	replaced := map[string]bool{}
	for _, t := range inits {
		replaced[t.Name] = true
	}
	for _, t := range m.Graph.Initializers {
		if replaced[t.Name] {
			continue
		}
		for _, n := range nodes {
			if slices.Contains(n.Inputs, t.Name) {
				inits = append(inits, t)
				replaced[t.Name] = true
				break
			}
		}
	}
	tmp := &export.Model{IRVersion: m.IRVersion, OpsetImports: m.OpsetImports, Graph: &export.Graph{Nodes: nodes, Initializers: inits}}
	kk := k
	kk.Nodes = nodes
	return MicroModel(tmp, kk, sh), nil
}

// splitEven cuts c channels into n pieces whose sizes differ by at most
// one, the larger first.
func splitEven(c, n int) ([]int, error) {
	if n < 1 || c < n {
		return nil, fmt.Errorf("%d channels do not make %d pieces", c, n)
	}
	cut := make([]int, n)
	for i := range cut {
		cut[i] = c / n
		if i < c%n {
			cut[i]++
		}
	}
	return cut, nil
}

// filled is a float tensor of the given shape with small fixed values;
// positive where a BN variance might read it.
func filled(name string, dims []int64) *export.Tensor {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = 0.5 + float32(i%17)/34
	}
	return export.FloatTensor(name, dims, data)
}

// roundNs rounds milliseconds to whole nanoseconds, the clock's resolution,
// so that differences print without float noise.
func roundNs(ms float64) float64 { return math.Round(ms*1e6) / 1e6 }

// overheadModel is a model whose one kernel does nothing worth timing: a
// Relu over one value. Its latency is what the runtime spends per inference
// around the kernels.
func overheadModel() *export.Model {
	vi := func(name string) *export.ValueInfo {
		return &export.ValueInfo{Name: name, ElemType: export.TypeFloat,
			Shape: []export.Dim{{Param: "batch"}, {Value: 1}, {Value: 1}, {Value: 1}}}
	}
	return &export.Model{IRVersion: 8, OpsetImports: []export.OpsetID{{Version: export.DefaultOpset}},
		ProducerName: "bayesnas hwprofile", Graph: &export.Graph{Name: "overhead",
			Nodes:  []*export.Node{{Name: "relu", OpType: "Relu", Inputs: []string{"x"}, Outputs: []string{"y"}}},
			Inputs: []*export.ValueInfo{vi("x")}, Outputs: []*export.ValueInfo{vi("y")}}}
}

// ReferenceNetwork is a fixed small network for an input shape (C,H,W):
// three 3x3 convs with ReLU, a max pool, global pooling and a classifier,
// about 0.3 ms on one core for 1x28x28 (the size of the networks it
// stands beside: much smaller and its own noise would dominate). Measurements time it beside their
// models to tell how fast the machine ran at the time: the entries of a
// profile are expressed at the speed of its ReferenceMs.
func ReferenceNetwork(input []int) (*export.Model, error) {
	if len(input) != 3 {
		return nil, fmt.Errorf("reference network: input %v, want C,H,W", input)
	}
	b := models.NewGraphBuilder("reference", "input", [3]int{input[0], input[1], input[2]})
	x := b.ReLU("r1", b.Conv("c1", "input", 32, 3, 1, 1))
	x = b.ReLU("r2", b.Conv("c2", x, 32, 3, 1, 1))
	x = b.Node("pool", models.OpMaxPool, models.Attrs{Kernel: 2, Stride: 2}, x)
	x = b.ReLU("r3", b.Conv("c3", x, 64, 3, 1, 1))
	x = b.Node("gap", models.OpGAP, models.Attrs{}, x)
	x = b.Node("fc", models.OpLinear, models.Attrs{OutChannels: 10, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		return nil, fmt.Errorf("reference network: %w", err)
	}
	return Network(g, nil)
}

// MeasureOptions configure Measure.
type MeasureOptions struct {
	Protocol Protocol
	// Dir holds the micro models while they are timed (a temporary
	// directory when empty).
	Dir string
	// Progress is told after every timed kernel.
	Progress func(done, total int, k Key)
	// Save is called with the profile every SaveEvery kernels (all their
	// rounds timed) and at the end (also when ctx is cancelled), so that an
	// interrupted measurement resumes where it stopped.
	Save      func(*Profile) error
	SaveEvery int
	// Rounds times every kernel this many times, in turn with the others of
	// its SaveEvery chunk, keeping the quietest round (1 when 0).
	Rounds int
	Tool   string
	Input  []int
	// Plugin is the plug-in command dev runs, recorded in a new profile.
	Plugin []string
}

// minKernelMs is the floor of an entry: a kernel whose micro model is no
// slower than the overhead model still costs something, and a profile holds
// positive latencies only.
const minKernelMs = 1e-4

// Measure times every job whose key p does not hold yet on dev and adds it
// to p (a new profile when p is nil): each micro model's median minus the
// per-inference overhead, measured first. Jobs already in p are skipped,
// which is how an interrupted measurement resumes and how --missing-only
// extends a profile.
func Measure(ctx context.Context, dev Device, jobs []Job, p *Profile, opts MeasureOptions) (*Profile, error) {
	if opts.Protocol.Batch < 1 || opts.Protocol.Repeats < 1 {
		return p, fmt.Errorf("measure: protocol %+v: want batch and repeats >= 1", opts.Protocol)
	}
	di, ri, err := dev.Describe(ctx)
	if err != nil {
		return p, fmt.Errorf("describing the device: %w", err)
	}
	if p == nil {
		p = &Profile{Schema: Schema, Device: di, Runtime: ri, Plugin: opts.Plugin, Fusions: slices.Clone(FusionRules),
			Protocol: MeasureProtocol{Protocol: opts.Protocol, Statistic: StatisticQuietest, Input: opts.Input,
				Date: time.Now().UTC().Format("2006-01-02"), Tool: opts.Tool}}
	} else {
		if p.Runtime != ri {
			return p, fmt.Errorf("the profile was measured with %+v, this device runs %+v: measure a new profile", p.Runtime, ri)
		}
		if p.Protocol.Protocol != opts.Protocol {
			return p, fmt.Errorf("the profile was measured with protocol %+v, not %+v", p.Protocol.Protocol, opts.Protocol)
		}
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "bayesnas-profile-"); err != nil {
			return p, err
		}
		defer os.RemoveAll(dir)
	}
	files := 0
	time1 := func(m *export.Model, name string, proto Protocol) (Timing, error) {
		// A file name of its own for every model: a device must never be
		// able to mistake one kernel's model for another's.
		files++
		path := filepath.Join(dir, fmt.Sprintf("%s-%d.onnx", name, files))
		if err := os.WriteFile(path, m.Marshal(), 0o644); err != nil {
			return Timing{}, err
		}
		defer os.Remove(path)
		abs, err := filepath.Abs(path)
		if err != nil {
			return Timing{}, err
		}
		return dev.Time(ctx, abs, proto)
	}
	if p.OverheadMs == 0 {
		// The overhead is the floor every entry is measured against: time
		// it with more repeats than the kernels.
		op := opts.Protocol
		op.Repeats *= 4
		t, err := time1(overheadModel(), "overhead", op)
		if err != nil {
			return p, fmt.Errorf("timing the overhead model: %w", err)
		}
		p.OverheadMs = roundNs(t.MedianMs)
	}
	have := map[Key]bool{}
	for _, e := range p.Entries {
		have[e.Key] = true
	}
	var todo []Job
	for _, j := range jobs {
		if !have[j.Key] {
			todo = append(todo, j)
		}
	}
	save := func() error {
		if opts.Save == nil {
			return nil
		}
		return opts.Save(p)
	}
	var ref *export.Model
	if opts.Input != nil {
		var err error
		if ref, err = ReferenceNetwork(opts.Input); err != nil {
			return p, err
		}
	}
	rounds := max(opts.Rounds, 1)
	chunk := opts.SaveEvery
	if chunk <= 0 {
		chunk = len(todo)
	}
	done := 0
	for lo := 0; lo < len(todo); lo += chunk {
		part := todo[lo:min(lo+chunk, len(todo))]
		meds := make([][]float64, len(part))
		p90s := make([][]float64, len(part))
		reps := make([]int, len(part))
		// Rounds go over the whole chunk in turn, so that a slow spell of
		// the machine (tens of seconds on a shared one) lands in one round
		// of a kernel, not in all of them, and the quietest round drops it. Spells
		// last longer than a chunk too: the reference network, timed in
		// every round, says how fast the machine ran the chunk, and the
		// chunk's entries are scaled to the profile's ReferenceMs.
		var refs []float64
		for range rounds {
			if ref != nil {
				t, err := time1(ref, "reference", opts.Protocol)
				if err != nil {
					return p, errors.Join(fmt.Errorf("timing the reference network: %w", err), save())
				}
				refs = append(refs, t.MedianMs)
			}
			for i, j := range part {
				if err := ctx.Err(); err != nil {
					return p, errors.Join(err, save())
				}
				t, err := time1(j.Model, "kernel", opts.Protocol)
				if err != nil {
					return p, errors.Join(fmt.Errorf("timing %s: %w", j.Key, err), save())
				}
				meds[i] = append(meds[i], t.MedianMs)
				p90s[i] = append(p90s[i], t.P90Ms)
				reps[i] += t.Repeats
				done++
				if opts.Progress != nil {
					opts.Progress(done, len(todo)*rounds, j.Key)
				}
			}
		}
		speed := 1.0
		if ref != nil {
			if p.ReferenceMs == 0 {
				p.ReferenceMs = roundNs(Quietest(refs))
			}
			speed = p.ReferenceMs / Quietest(refs)
		}
		for i, j := range part {
			med := max(roundNs(speed*(Quietest(meds[i])-p.OverheadMs)), minKernelMs)
			p90 := max(roundNs(speed*(Quietest(p90s[i])-p.OverheadMs)), med)
			p.Entries = append(p.Entries, Entry{Key: j.Key, MedianMs: med, P90Ms: p90, Repeats: reps[i]})
		}
		p.idx = nil
		if err := save(); err != nil {
			return p, err
		}
	}
	return p, save()
}
