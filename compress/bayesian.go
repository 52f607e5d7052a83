package compress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"bayesnas/bayes"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/nn/backends"
)

// BayesOptions configure Bayesian structured sparsity (METHOD.md section 6):
// one group of channel gates per coupled channel group, the HARD prior's
// C / omega / gamma updates with curvature from per-sample gradients of the
// gates, the reweighted group l1 applied by a proximal step after every
// SGD step, and lambda_g scaled by the group's marginal latency on the
// device, paced so that the channels it switches off meet the budget
// part-way through the sparsity training.
type BayesOptions struct {
	Budget BudgetOptions
	// Lambda is the penalty weight of a group of average latency cost in
	// the reweighted group l1 that the proximal step applies after every
	// SGD step (the HARD prior's omega_g reweights it, the group's
	// marginal latency scales it). It is kept small: it expresses the
	// prior's pull, it does not do the selection. The selection follows
	// a pace: at every update the groups the quadratic model of the loss
	// ranks least worth their milliseconds are switched off until the
	// predicted latency without them meets a straight line from the
	// unpruned latency to the budget, reached after Reach of the sparsity
	// training's batches, the rest left for the network to adapt without
	// them. A pace rather than one large penalty because a penalty large
	// enough to select shrinks every gate, the kept ones too (measured on
	// the default PyramidNet: train accuracy from 0.90 to 0.55 within
	// four updates), and costs accuracy the fine-tuning must win back.
	Lambda float64
	Reach  float64
	// Epochs of sparsity training over train (its last update ends it),
	// of BatchesPerEpoch batches each (0: unknown; the pace is then the
	// budget from the start).
	Epochs, BatchesPerEpoch int
	// UpdateEvery training batches, the curvature is estimated on
	// CurvatureBatches batches and the variances updated.
	UpdateEvery, CurvatureBatches int
	Estimator                     bayes.Estimator
	OmegaEps                      float64
	// SGD on the weights (the gates included) during sparsity training.
	LR, Momentum, WeightDecay float64
	Batch, Workers            int
	Backend                   string // nn/backends; "" is auto
	Seed                      uint64
	// Log, when set, receives every update.
	Log func(BayesUpdate)
}

// DefaultBayesOptions are the settings of `bayesnas compress --method bayes`.
func DefaultBayesOptions() BayesOptions {
	return BayesOptions{Lambda: 1e-4, Reach: 0.6, Epochs: 1, UpdateEvery: 25, CurvatureBatches: 4,
		Estimator: bayes.MonteCarloFisher, OmegaEps: 1e-8, LR: 0.01, Momentum: 0.9, WeightDecay: 5e-4, Batch: 64, Seed: 1}
}

func (o BayesOptions) validate() error {
	switch {
	case !(o.Lambda > 0):
		return fmt.Errorf("bayes: lambda %g must be > 0", o.Lambda)
	case !(o.Reach > 0 && o.Reach <= 1) || o.BatchesPerEpoch < 0:
		return fmt.Errorf("bayes: reach %g must be in (0, 1] and batches per epoch %d >= 0", o.Reach, o.BatchesPerEpoch)
	case o.Epochs < 1 || o.UpdateEvery < 1 || o.CurvatureBatches < 1:
		return fmt.Errorf("bayes: epochs %d, update_every %d and curvature_batches %d must be >= 1", o.Epochs, o.UpdateEvery, o.CurvatureBatches)
	case !(o.Momentum >= 0 && o.Momentum < 1):
		return fmt.Errorf("bayes: momentum %g must be in [0, 1)", o.Momentum)
	case !(o.LR > 0) || o.Batch < 1:
		return fmt.Errorf("bayes: lr %g must be > 0 and batch %d >= 1", o.LR, o.Batch)
	}
	_, err := bayes.ParseEstimator(string(o.Estimator))
	return err
}

// BayesUpdate is one variance update of the sparsity training.
type BayesUpdate struct {
	Update    int     `json:"update"`
	Batches   int     `json:"batches"`
	Lambda    float64 `json:"lambda"`
	TrainLoss float64 `json:"train_loss"`
	TrainAcc  float64 `json:"train_acc"`
	Off       int     `json:"groups_off"` // gates at exactly zero
	OffMs     float64 `json:"predicted_ms_off_removed"`
	PaceMs    float64 `json:"pace_ms"` // the latency the pace asks for now
	Cut       float64 `json:"cut"`     // the threshold of the last group switched off
	Clamped   int     `json:"clamped"`
	Seconds   float64 `json:"seconds"`
}

// GateDecision is one group's outcome: its gates, prior and posterior.
type GateDecision struct {
	Group     int     `json:"group"`
	Gates     int     `json:"gates"`
	Norm      float64 `json:"gate_norm"`
	Gamma     float64 `json:"gamma"`
	Omega     float64 `json:"omega"`
	PostVar   float64 `json:"posterior_variance"` // mean C over the gates
	LatencyMs float64 `json:"marginal_ms"`
	Lambda    float64 `json:"lambda"`
	Removed   bool    `json:"removed"`
}

// BayesResult is the outcome of Bayesian sparsity training: the selection
// and the trained parameters (the input's names and shapes; switched-off
// gates at zero) that Prune takes with it.
type BayesResult struct {
	Selection *Selection  `json:"selection"`
	Params    []*nn.Param `json:"-"`
	// Scores rank the groups as the final selection did (lowest first;
	// +Inf: ungated, kept): Greedy with them re-selects to another budget
	// from the same trained gates.
	Scores  []float64      `json:"-"`
	Updates []BayesUpdate  `json:"updates"`
	Groups  []GateDecision `json:"groups"`
	Ungated int            `json:"ungated_groups"` // prunable groups without a gate: kept
	// Gated is how many convs trained with a channel scale as their gate
	// (no batch norm alone reads them; see withGates).
	Gated   int     `json:"gated_convs"`
	Seconds float64 `json:"seconds"`
}

// gateSet is compression's family of groups: independent, no hierarchy.
type gateSet struct{ groups []*bayes.Group }

func (s *gateSet) Priors() []*bayes.Group { return s.groups }
func (s *gateSet) ApplyDependency()       { bayes.Independent(s.groups) }

// Gates lists, for every group of groups, its gates: the scale of the
// batch norm (or the channel scale withGates adds) that alone reads a conv
// or linear producing one of the group's channels (that channel's entry).
// Zeroing a group's gates leaves
// its channels constant (their BN shift), which Prune folds forward, so the
// network with zero gates is the pruned one. A group with no such batch
// norm has no gates.
func Gates(g *models.Graph, groups []Group, params []*nn.Param) [][]bayes.Var {
	byName := paramsByName(params)
	consumers := readersOf(g)
	out := make([][]bayes.Var, len(groups))
	for i, gr := range groups {
		for _, m := range gr.Members {
			if m.Role != RoleProduce {
				continue
			}
			cs := consumers[m.Node]
			if len(cs) != 1 || (cs[0].Op != models.OpBN && !isGate(cs[0])) || m.Node == g.Output {
				continue
			}
			if p := byName[cs[0].Name+".weight"]; p != nil && m.Index < len(p.Data) {
				out[i] = append(out[i], bayes.Var{P: p, I: m.Index})
			}
		}
	}
	return out
}

// marginalMs prices, per prunable layer, removing its next multiple of
// channels (the lowest L1 first) from the unpruned network: the latency a
// channel of the layer costs on the device. A removal the graph cannot take
// or that saves nothing (latency is not monotone in width) gives 0.
func marginalMs(g *models.Graph, params []*nn.Param, ls []*layer, opt *BudgetOptions, base float64) (map[int]float64, error) {
	perGroup := map[int]float64{}
	for _, l := range ls {
		target := max((l.width-1)/opt.Multiple*opt.Multiple, floor(l, opt.Multiple))
		n := min(max(1, (l.width-target)/l.perGroup), len(l.groups))
		if l.width-n*l.perGroup < l.perGroup {
			continue
		}
		rm := slices.Clone(l.groups[:n])
		slices.Sort(rm)
		ms, err := opt.predict(g, params, rm)
		if err != nil {
			var structural errStructure
			if errors.As(err, &structural) {
				continue
			}
			return nil, err
		}
		for _, gi := range l.groups {
			perGroup[gi] = max(base-ms, 0) / float64(n)
		}
	}
	return perGroup, nil
}

// Bayesian trains the network of g (weights params, left unchanged) on
// train with channel gates under the HARD prior, switching groups off on a
// pace to the budget (see BayesOptions.Lambda), then selects groups to the
// budget exactly (rounded to the multiple), the switched-off groups first
// and then the smallest gates per millisecond they cost.
//
// curvData gives the batches of the curvature estimates: the training
// images in orders of their own (a second batcher, so that an update in the
// middle of an epoch leaves the training order where it was).
func Bayesian(ctx context.Context, g *models.Graph, params []*nn.Param, train, curvData nn.Batches, opt BayesOptions) (*BayesResult, error) {
	t0 := time.Now()
	if err := opt.validate(); err != nil {
		return nil, err
	}
	bo := &opt.Budget
	ls, groups, base, err := bo.prepare(g, params, nil)
	if err != nil {
		return nil, err
	}
	// The network trains with a gate on every prunable conv (withGates);
	// orig are its parameters that g has, which pricing reads.
	gg, gated := withGates(g, groups, ls)
	be, err := backends.New(opt.Backend, opt.Workers)
	if err != nil {
		return nil, fmt.Errorf("bayes: %w", err)
	}
	net, err := models.Compile(gg, be, opt.Batch)
	if err != nil {
		return nil, fmt.Errorf("bayes: %w", err)
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Name
	}
	byName := paramsByName(net.Params)
	orig := make([]*nn.Param, 0, len(params))
	for _, name := range names {
		if p := byName[name]; p != nil {
			orig = append(orig, p)
		}
	}
	if len(orig)+len(gated) != len(net.Params) {
		return nil, fmt.Errorf("bayes: the gated network has %d parameters, want %d and %d gates", len(net.Params), len(params), len(gated))
	}
	if err := copyParams(orig, params); err != nil {
		return nil, err
	}
	if err := initGates(net.Params, gated); err != nil {
		return nil, err
	}
	marg, err := marginalMs(g, orig, ls, bo, base)
	if err != nil {
		return nil, err
	}
	var meanMs float64
	for _, v := range marg {
		meanMs += v
	}
	if len(marg) > 0 {
		meanMs /= float64(len(marg))
	}
	if !(meanMs > 0) {
		return nil, fmt.Errorf("bayes: no prunable layer of %s saves latency on the device when narrowed", g.Name)
	}
	gates := Gates(gg, groups, net.Params)
	res := &BayesResult{}
	set := &gateSet{}
	weight := map[*bayes.Group]float64{} // lambda_g / lambda
	byGroup := map[int]*bayes.Group{}
	for _, l := range ls {
		for _, gi := range l.groups {
			if len(gates[gi]) == 0 {
				res.Ungated++
				continue
			}
			// A channel that costs nothing measurable is still penalised a
			// little: latency is noisy and not monotone in width.
			w := max(marg[gi], 0.05*meanMs) / meanMs
			bg := &bayes.Group{Name: fmt.Sprintf("group%d", gi), Vars: gates[gi], Gamma: 1, Omega: 1, Lambda: opt.Lambda * w}
			weight[bg] = w
			byGroup[gi] = bg
			set.groups = append(set.groups, bg)
		}
	}
	if len(set.groups) == 0 {
		return nil, fmt.Errorf("bayes: no prunable group of %s has a batch norm gate", g.Name)
	}
	curv, err := bayes.NewCurvature(net, opt.Estimator, opt.Seed, bayes.BatchNormScales)
	if err != nil {
		return nil, fmt.Errorf("bayes: %w", err)
	}
	sgd, err := nn.NewSGDOn(net.Backend, net.Params, nn.SGDConfig{Momentum: float32(opt.Momentum), WeightDecay: float32(opt.WeightDecay)})
	if err != nil {
		return nil, fmt.Errorf("bayes: %w", err)
	}
	per := net.Input.PerSample()
	x := make([]float32, opt.Batch*per)
	labels := make([]int32, opt.Batch)
	var lossFn nn.SoftmaxCrossEntropy
	// SGD with momentum m moves a weight by lr/(1-m) per step on a steady
	// gradient: the proximal step gets the same gain, so the penalty and
	// the data pull against each other at the penalised loss's optimum.
	momentumGain := 1 / (1 - opt.Momentum)
	// off lists, per layer, the groups whose gates are all zero, rounded
	// as the final selection rounds (a layer keeps a multiple, never less
	// than its floor; the smallest gates go first), so that the device
	// profile can price the network without them.
	off := func() []int {
		var rm []int
		for _, l := range ls {
			byNorm := slices.Clone(l.groups)
			zero := 0
			norm := func(gi int) float64 {
				if bg := byGroup[gi]; bg != nil {
					return bg.Norm()
				}
				return math.Inf(1)
			}
			slices.SortStableFunc(byNorm, func(a, b int) int { return cmp.Compare(norm(a), norm(b)) })
			for _, gi := range byNorm {
				if norm(gi) == 0 {
					zero++
				}
			}
			if zero == 0 {
				continue
			}
			keep := max(l.width-zero*l.perGroup, floor(l, bo.Multiple))
			keep = min((keep+bo.Multiple-1)/bo.Multiple*bo.Multiple, l.width)
			rm = append(rm, byNorm[:(l.width-keep)/l.perGroup]...)
		}
		slices.Sort(rm)
		return rm
	}
	var lossSum float64
	var correct, seen, batches int
	pace := func() float64 {
		total := opt.Reach * float64(opt.Epochs*opt.BatchesPerEpoch)
		if total == 0 {
			return bo.BudgetMs
		}
		f := min(1, float64(batches)/total)
		return base - f*(base-bo.BudgetMs)
	}
	// switchedOff groups stay at zero for the rest of the training: the
	// network adapts without them.
	switchedOff := map[*bayes.Group]bool{}
	switchOff := func() {
		for bg := range switchedOff {
			for _, v := range bg.Vars {
				v.Set(0)
			}
		}
	}
	cut := 0.0 // the threshold of the last group switched off
	// switchToPace switches groups off until the pace's target is met, in
	// order of lambda*_g = ||H*a|| / (omega_g * weight_g): the penalty
	// weight at which the group lasso's optimality condition at zero
	// holds (the data gradient there, about H*a by the quadratic model,
	// below lambda_g*omega_g), that is the group's curvature-weighted
	// size against its prior precision and its latency. An off group has
	// threshold 0 and stays first. Setting the gates to zero at once
	// rather than waiting for the proximal step: on the flat directions
	// of small gates SGD would take longer than one epoch.
	switchToPace := func() error {
		thr := make([]float64, len(groups))
		for i := range thr {
			thr[i] = math.Inf(1)
		}
		for gi, bg := range byGroup {
			var s2 float64
			for i, v := range bg.Vars {
				s2 += (bg.H[i] * v.Value()) * (bg.H[i] * v.Value())
			}
			thr[gi] = math.Sqrt(s2) / (math.Max(bg.Omega, opt.OmegaEps) * weight[bg])
		}
		to := *bo
		to.BudgetMs = pace()
		sel, err := Greedy(g, orig, thr, "pace", to)
		if err != nil {
			return err
		}
		cut = 0
		for _, gi := range sel.Removed {
			if bg := byGroup[gi]; bg != nil && !math.IsInf(thr[gi], 1) {
				cut = math.Max(cut, thr[gi])
				switchedOff[bg] = true
			}
		}
		switchOff()
		return nil
	}
	tu := time.Now()
	update := func() error {
		curv.Reset()
		curvData.StartEpoch(len(res.Updates))
		for range opt.CurvatureBatches {
			n, ok := curvData.Next(x, labels)
			if !ok {
				break
			}
			if err := curv.AddBatch(x[:n*per], labels[:n]); err != nil {
				return fmt.Errorf("bayes: %w", err)
			}
		}
		clamped, err := bayes.Update(set, curv.Diagonal(), opt.OmegaEps)
		if err != nil {
			return err
		}
		if err := switchToPace(); err != nil {
			return err
		}
		u := BayesUpdate{Update: len(res.Updates) + 1, Batches: batches, Lambda: opt.Lambda, Cut: cut, Clamped: clamped, PaceMs: pace()}
		if seen > 0 {
			u.TrainLoss, u.TrainAcc = lossSum/float64(seen), float64(correct)/float64(seen)
		}
		rm := off()
		u.Off, u.OffMs = len(rm), base
		if len(rm) > 0 {
			// A set the graph cannot lose at once (it would empty a value)
			// is priced as not meeting the budget.
			ms, err := bo.predict(g, orig, rm)
			var structural errStructure
			switch {
			case err == nil:
				u.OffMs = ms
			case !errors.As(err, &structural):
				return err
			}
		}
		u.Seconds = time.Since(tu).Seconds()
		res.Updates = append(res.Updates, u)
		if opt.Log != nil {
			opt.Log(u)
		}
		lossSum, correct, seen = 0, 0, 0
		return nil
	}
	for epoch := range opt.Epochs {
		train.StartEpoch(epoch)
		for {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("bayes: sparsity training interrupted at epoch %d batch %d: %w", epoch+1, batches, err)
			}
			n, ok := train.Next(x, labels)
			if !ok {
				break
			}
			net.SetBatch(n)
			net.Input.SetHost(x[:n*per])
			net.ZeroGrad()
			net.Forward(true)
			l, c, err := net.Loss(lossFn, labels[:n])
			if err != nil {
				return nil, fmt.Errorf("bayes: %w", err)
			}
			if math.IsNaN(l) || math.IsInf(l, 0) {
				return nil, fmt.Errorf("bayes: loss is %g at batch %d (lower the learning rate)", l, batches)
			}
			net.Backward()
			sgd.Step(float32(opt.LR))
			bayes.ProxPenalty(set, opt.LR, func(bayes.Var) float64 { return momentumGain })
			switchOff()
			lossSum += l * float64(n)
			correct += c
			seen += n
			batches++
			if batches%opt.UpdateEvery == 0 {
				if err := update(); err != nil {
					return nil, err
				}
			}
		}
	}
	if batches == 0 {
		return nil, fmt.Errorf("bayes: the training data gave no batch")
	}
	if batches%opt.UpdateEvery != 0 {
		if err := update(); err != nil {
			return nil, err
		}
	}
	// Rank: zero gates first, then the smallest RMS gate per unit of
	// latency weight; ungated groups last (kept).
	scores := make([]float64, len(groups))
	for i := range scores {
		scores[i] = math.Inf(1)
	}
	for gi, bg := range byGroup {
		scores[gi] = bg.Norm() / math.Sqrt(float64(len(bg.Vars))) / weight[bg]
	}
	sel, err := Greedy(g, orig, scores, "bayes", *bo)
	if err != nil {
		return nil, err
	}
	removed := map[int]bool{}
	for _, gi := range sel.Removed {
		removed[gi] = true
	}
	for _, l := range ls {
		for _, gi := range l.groups {
			bg := byGroup[gi]
			if bg == nil {
				continue
			}
			d := GateDecision{Group: gi, Gates: len(bg.Vars), Norm: bg.Norm(), Gamma: bg.Gamma, Omega: bg.Omega,
				LatencyMs: marg[gi], Lambda: bg.Lambda, Removed: removed[gi]}
			for _, c := range bg.C {
				d.PostVar += c / float64(len(bg.C))
			}
			res.Groups = append(res.Groups, d)
		}
	}
	slices.SortFunc(res.Groups, func(a, b GateDecision) int { return a.Group - b.Group })
	folded, err := foldGates(net.Params, names, gated)
	if err != nil {
		return nil, err
	}
	res.Gated = len(gated)
	res.Selection, res.Params, res.Scores, res.Seconds = sel, folded, scores, time.Since(t0).Seconds()
	return res, nil
}

// copyParams copies src into dst by name; every dst param must be there
// with its size.
func copyParams(dst, src []*nn.Param) error {
	byName := paramsByName(src)
	for _, p := range dst {
		s := byName[p.Name]
		if s == nil || len(s.Data) != len(p.Data) {
			return fmt.Errorf("bayes: parameter %s missing or of another size in the weights", p.Name)
		}
		p.SetHost(s.Host())
	}
	return nil
}
