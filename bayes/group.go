// Package bayes is the Bayesian group sparsity shared by the search and
// compression (METHOD.md sections 2-4 and 6): groups of scalar variables
// under a hierarchical ARD (HARD) prior, the Laplace / reweighted-l1
// updates of their variances from a diagonal curvature, the curvature
// estimators built on per-sample gradients, and the reweighted group l1
// penalty applied as a proximal step.
//
// What a group holds depends on its user, which supplies the groups
// through Set: the search's proxy-cell and tree-cell spaces (architecture
// variables, with their dependency rules) and compression's channel gates
// (batch norm scales, independent groups).
package bayes

import (
	"fmt"
	"math"

	"bayesnas/nn"
)

// Var is one scalar variable: element I of parameter P.
type Var struct {
	P *nn.Param
	I int
}

// Value is the variable's current value (copied out of the backend's
// storage: on a device backend Data is only a copy).
func (v Var) Value() float64 { return float64(v.P.Host()[v.I]) }

// Set sets the variable (committing it to the backend's storage).
func (v Var) Set(x float64) { v.P.Set(v.I, float32(x)) }

// Group is a set of variables sharing one prior variance Gamma, and the
// state of its updates.
type Group struct {
	Name   string
	Vars   []Var
	Lambda float64 // the group's penalty weight (> 0 penalised)

	Gamma    float64   // prior variance of the group (METHOD.md section 3)
	GammaEff float64   // after the dependency rule (section 2)
	Omega    float64   // reweighting coefficient of the l1 penalty
	H        []float64 // curvature per member at the last update
	C        []float64 // Laplace posterior variance per member at the last update
	Clamped  bool      // omega fell below eps at the last update (flat loss)
	Frozen   bool      // pruned: held at exactly zero
}

// Set is a family of groups under one prior: a search space of proxy
// cells or tree cells, or compression's channel gates. ApplyDependency
// computes every GammaEff from the Gammas by the family's rule (Independent
// for groups with no hierarchy).
type Set interface {
	Priors() []*Group
	ApplyDependency()
}

// Independent sets GammaEff = Gamma (0 when frozen): groups with no
// hierarchy above them.
func Independent(groups []*Group) {
	for _, g := range groups {
		g.GammaEff = g.GammaOrZero()
	}
}

// GammaOrZero is Gamma, or 0 for a frozen group.
func (g *Group) GammaOrZero() float64 {
	if g.Frozen {
		return 0
	}
	return g.Gamma
}

// Values returns the current values of a group's variables.
func (g *Group) Values() []float64 {
	a := make([]float64, len(g.Vars))
	for i, v := range g.Vars {
		a[i] = v.Value()
	}
	return a
}

// Norm is ||a_g||_2 over the group's variables.
func (g *Group) Norm() float64 {
	var norm2 float64
	for _, v := range g.Vars {
		norm2 += v.Value() * v.Value()
	}
	return math.Sqrt(norm2)
}

// Zero sets every variable of the group to 0.
func (g *Group) Zero() {
	for _, v := range g.Vars {
		v.Set(0)
	}
}

// Significance is the mean over the group's members of |a|/sqrt(C), the
// posterior mean in posterior standard deviations (C of the last update,
// so ok is false before the first one). A member with C = 0 counts 0 when
// its value is 0 too (frozen) and 1e6 otherwise.
func (g *Group) Significance() (z float64, ok bool) {
	if len(g.C) != len(g.Vars) || len(g.Vars) == 0 {
		return 0, false
	}
	for i, v := range g.Vars {
		a := math.Abs(v.Value())
		switch {
		case g.C[i] > 0:
			z += a / math.Sqrt(g.C[i])
		case a > 0:
			z += 1e6
		}
	}
	return z / float64(len(g.Vars)), true
}

// Combine adds precisions: a child with prior variance gamma under a parent
// of effective variance parent has 1/(1/gamma + 1/parent). IEEE arithmetic
// gives the limits: a zero parent or child gives 0, an infinite parent
// (a cell input) leaves gamma unchanged.
func Combine(gamma, parent float64) float64 {
	if gamma == 0 || parent == 0 {
		return 0
	}
	return 1 / (1/gamma + 1/parent)
}

// UpdateGroup is one Laplace / reweighted-l1 step for a group (METHOD.md
// section 3) from its variables a, their curvature H and its old gamma:
//
//	C_i   = 1 / (1/gamma + H_i/lambda)
//	omega = sqrt( sum_i H_i / (lambda + gamma*H_i) )
//	gamma = ||a||_2 / max(omega, eps)
//
// clamped reports omega < eps (the loss is flat in every member: H = 0).
// With lambda = 0 there is no penalty and no prior: omega is 0 by
// convention and gamma stays where it was.
func UpdateGroup(a, h []float64, gamma, lambda, eps float64) (c []float64, omega, newGamma float64, clamped bool) {
	c = make([]float64, len(a))
	var sum, norm2 float64
	for i := range a {
		norm2 += a[i] * a[i]
		if lambda == 0 {
			c[i] = gamma
			continue
		}
		c[i] = 1 / (1/gamma + h[i]/lambda)
		sum += h[i] / (lambda + gamma*h[i])
	}
	if lambda == 0 {
		return c, 0, gamma, false
	}
	omega = math.Sqrt(sum)
	clamped = omega < eps
	return c, omega, math.Sqrt(norm2) / math.Max(omega, eps), clamped
}

// Update runs UpdateGroup on every live group of s with curvature h
// (indexed by variable) and then the set's dependency rule. It returns the
// number of groups whose omega was clamped.
func Update(s Set, h map[Var]float64, eps float64) (clamped int, err error) {
	for _, g := range s.Priors() {
		if g.Frozen {
			continue
		}
		hs := make([]float64, len(g.Vars))
		for i, v := range g.Vars {
			x, ok := h[v]
			if !ok {
				return 0, fmt.Errorf("bayes update: no curvature for %s[%d] (group %s)", v.P.Name, v.I, g.Name)
			}
			hs[i] = x
		}
		g.H = hs
		g.C, g.Omega, g.Gamma, g.Clamped = UpdateGroup(g.Values(), hs, g.Gamma, g.Lambda, eps)
		if g.Clamped {
			clamped++
		}
	}
	s.ApplyDependency()
	return clamped, nil
}

// eachPenalised calls f with every group the penalty acts on (live, lambda
// > 0, not already at zero) and its norm.
func eachPenalised(s Set, f func(g *Group, norm float64)) {
	for _, g := range s.Priors() {
		if g.Frozen || g.Lambda == 0 {
			continue
		}
		if norm := g.Norm(); norm > 0 {
			f(g, norm)
		}
	}
}

// AddPenaltyGrad adds the gradient of sum_g lambda_g*omega_g*||a_g||_2 to
// the variables' gradients and returns the penalty's value. At a_g = 0 the
// subgradient 0 is used.
func AddPenaltyGrad(s Set) float64 {
	var total float64
	eachPenalised(s, func(g *Group, norm float64) {
		k := g.Lambda * g.Omega
		total += k * norm
		for _, v := range g.Vars {
			// Through the host copy and back per variable: on a device
			// backend a write into a stale Grad would be lost (a copy
			// each; a device backend would want a kernel here).
			grad := v.P.HostGrad()
			grad[v.I] += float32(k * v.Value() / norm)
			v.P.CommitGrad()
		}
	})
	return total
}

// ProxPenalty applies the penalty sum_g lambda_g*omega_g*||a_g||_2 as a
// proximal step after the optimizer's step on the data loss alone: every
// live group is shrunk towards zero by its group soft-threshold,
//
//	a_g <- a_g * max(0, 1 - eta_g*lambda_g*omega_g/||a_g||),
//
// eta_g = lr * the mean of step(v) over the group's variables, step being
// the optimizer's factor on a unit gradient (Adam: 1/(sqrt(v_hat)+eps),
// SGD: 1), so the fixed points are those of the penalised loss. Unlike a
// subgradient, it sets groups the data do not hold up to exactly zero: with
// Adam the subgradient leaves them jittering at +-lr around zero, their
// curvature near zero too, and gamma = ||a||/omega ~ ||a|| sqrt(lambda/H)
// blows up.
func ProxPenalty(s Set, lr float64, step func(v Var) float64) {
	eachPenalised(s, func(g *Group, norm float64) {
		var eta float64
		for _, v := range g.Vars {
			eta += step(v)
		}
		eta *= lr / float64(len(g.Vars))
		shrink := max(1-eta*g.Lambda*g.Omega/norm, 0)
		for _, v := range g.Vars {
			v.Set(v.Value() * shrink)
		}
	})
}

// Penalty is sum_g lambda_g*omega_g*||a_g||_2 over live groups.
func Penalty(s Set) float64 {
	var total float64
	for _, g := range s.Priors() {
		if g.Frozen || g.Lambda == 0 {
			continue
		}
		total += g.Lambda * g.Omega * g.Norm()
	}
	return total
}
