package hwprofile

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"bayesnas/export"
	"bayesnas/internal/stats"
)

// CheckNet is one network of a check: where it comes from and its model.
type CheckNet struct {
	Space string
	Name  string
	Model *export.Model
}

// SampleNets draws n networks of each space with seed (Space.Sample) and
// exports them for pricing and timing.
func SampleNets(spaces []Space, n int, seed uint64) ([]CheckNet, error) {
	var nets []CheckNet
	for _, sp := range spaces {
		gs, err := sp.Sample(n, seed)
		if err != nil {
			return nil, err
		}
		for _, g := range gs {
			m, err := Network(g, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", g.Name, err)
			}
			nets = append(nets, CheckNet{Space: sp.Name, Name: g.Name, Model: m})
		}
	}
	return nets, nil
}

// CheckRow is one network's prediction against its measurements.
type CheckRow struct {
	Space       string  `json:"space"`
	Name        string  `json:"name"`
	MACs        int64   `json:"macs"`
	PredictedMs float64 `json:"predicted_ms"`
	// MeasuredMs is the first measurement, RepeatMs the second, from
	// alternate rounds (each the quietest of its rounds: StatisticQuietest).
	MeasuredMs float64 `json:"measured_ms"`
	RepeatMs   float64 `json:"repeat_ms"`
	MACsFitMs  float64 `json:"macs_fit_ms"`
}

// Accuracy summarises predictions against measurements.
type Accuracy struct {
	Within10 float64 `json:"within_10pct"` // fraction with |pred-meas| <= 10 % of meas
	RMSEMs   float64 `json:"rmse_ms"`
	RMSEPct  float64 `json:"rmse_pct"` // root mean squared relative error, in %
	Spearman float64 `json:"spearman"`
}

// CheckReport is the outcome of Check.
type CheckReport struct {
	Device   DeviceInfo  `json:"device"`
	Runtime  RuntimeInfo `json:"runtime"`
	Protocol Protocol    `json:"protocol"`
	Sessions int         `json:"sessions"`
	Profile  string      `json:"profile_hash"`
	Rows     []CheckRow  `json:"networks"`
	// Profile is the profile's prediction; MACs a least-squares fit
	// latency = a + b*MACs on these same measurements (favouring it); Noise
	// the second measurement taken as a prediction of the first: the best
	// any predictor can do on this machine.
	ProfileAcc Accuracy `json:"profile"`
	// AtSpeedAcc is the profile's predictions scaled by SpeedVsProfile:
	// what is left of the error once the machine's change of speed since
	// the profile was measured is taken out.
	AtSpeedAcc Accuracy `json:"profile_at_current_speed"`
	MACsAcc    Accuracy `json:"macs_only"`
	NoiseAcc   Accuracy `json:"noise_floor"`
	// ReferenceMs is ReferenceNetwork's latency during the check;
	// SpeedVsProfile its ratio to the profile's ReferenceMs (above 1: the
	// device runs slower now than when the profile was measured; 0 when the
	// profile has no reference).
	ReferenceMs    float64 `json:"reference_ms"`
	SpeedVsProfile float64 `json:"speed_vs_profile"`
	// MACsFit is (a, b) of the MACs-only fit, in ms and ms per MAC.
	MACsFit [2]float64 `json:"macs_fit"`
	// BySpace are the same three per space, in the order of the networks.
	BySpace []SpaceAccuracy `json:"by_space"`
}

// SpaceAccuracy is a check's accuracies over the networks of one space.
type SpaceAccuracy struct {
	Space      string   `json:"space"`
	Networks   int      `json:"networks"`
	ProfileAcc Accuracy `json:"profile"`
	AtSpeedAcc Accuracy `json:"profile_at_current_speed"`
	MACsAcc    Accuracy `json:"macs_only"`
	NoiseAcc   Accuracy `json:"noise_floor"`
}

// Check predicts every network with p, measures each twice on dev, and
// compares. Each measurement is the quietest of sessions loads of the
// model (a runtime lays a model out in memory anew in each session), each
// timed with proto; see StatisticQuietest.
func Check(ctx context.Context, dev Device, p *Profile, nets []CheckNet, proto Protocol, sessions int, progress func(done, total int)) (*CheckReport, error) {
	di, ri, err := dev.Describe(ctx)
	if err != nil {
		return nil, err
	}
	if ri != p.Runtime {
		return nil, fmt.Errorf("the profile was measured with %+v, this device runs %+v", p.Runtime, ri)
	}
	dir, err := os.MkdirTemp("", "bayesnas-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rep := &CheckReport{Device: di, Runtime: ri, Protocol: proto, Sessions: sessions, Profile: p.Hash}
	paths := make([]string, len(nets)) // named after the networks, so that errors name them
	for i, n := range nets {
		ks, err := Kernels(n.Model)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
		pr, err := p.PredictKernels(ks, n.Space)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
		rep.Rows = append(rep.Rows, CheckRow{Space: n.Space, Name: n.Name, MACs: pr.MACs, PredictedMs: pr.TotalMs})
		if paths[i], err = filepath.Abs(filepath.Join(dir, n.Name+".onnx")); err != nil {
			return nil, err
		}
		if err := os.WriteFile(paths[i], n.Model.Marshal(), 0o644); err != nil {
			return nil, err
		}
	}
	// 2 x sessions rounds over all networks, alternating between the two
	// measurements, so that both sample the same spells of the machine:
	// their difference is the noise of a measurement, not the drift
	// between two.
	refPath, err := writeReference(dir, p.Protocol.Input)
	if err != nil {
		return nil, err
	}
	times, err := TimeRounds(ctx, dev, append(paths, refPath), proto, 2*max(sessions, 1), progress)
	if err != nil {
		return nil, err
	}
	rep.ReferenceMs = Quietest(times[len(nets)])
	times = times[:len(nets)]
	speed := 1.0
	if p.ReferenceMs > 0 {
		speed = rep.ReferenceMs / p.ReferenceMs
		rep.SpeedVsProfile = speed
	}
	for i, ts := range times {
		var a, b []float64
		for r, t := range ts {
			if r%2 == 0 {
				a = append(a, t)
			} else {
				b = append(b, t)
			}
		}
		rep.Rows[i].MeasuredMs, rep.Rows[i].RepeatMs = Quietest(a), Quietest(b)
	}
	var macs, meas, pred, rep2 []float64
	for _, r := range rep.Rows {
		macs = append(macs, float64(r.MACs))
		meas = append(meas, r.MeasuredMs)
		pred = append(pred, r.PredictedMs)
		rep2 = append(rep2, r.RepeatMs)
	}
	a, b := fitLine(macs, meas)
	rep.MACsFit = [2]float64{a, b}
	fit := make([]float64, len(macs))
	for i, m := range macs {
		fit[i] = a + b*m
		rep.Rows[i].MACsFitMs = fit[i]
	}
	scaled := make([]float64, len(pred))
	for i, v := range pred {
		scaled[i] = v * speed
	}
	rep.ProfileAcc = accuracy(pred, meas)
	rep.AtSpeedAcc = accuracy(scaled, meas)
	rep.MACsAcc = accuracy(fit, meas)
	rep.NoiseAcc = accuracy(rep2, meas)
	var order []string
	idx := map[string][]int{}
	for i, r := range rep.Rows {
		if _, ok := idx[r.Space]; !ok {
			order = append(order, r.Space)
		}
		idx[r.Space] = append(idx[r.Space], i)
	}
	pick := func(v []float64, is []int) []float64 {
		out := make([]float64, len(is))
		for j, i := range is {
			out[j] = v[i]
		}
		return out
	}
	for _, sp := range order {
		is := idx[sp]
		m := pick(meas, is)
		rep.BySpace = append(rep.BySpace, SpaceAccuracy{Space: sp, Networks: len(is),
			ProfileAcc: accuracy(pick(pred, is), m), AtSpeedAcc: accuracy(pick(scaled, is), m), MACsAcc: accuracy(pick(fit, is), m), NoiseAcc: accuracy(pick(rep2, is), m)})
	}
	return rep, nil
}

// writeReference writes the reference network for input into dir.
func writeReference(dir string, input []int) (string, error) {
	m, err := ReferenceNetwork(input)
	if err != nil {
		return "", err
	}
	path, err := filepath.Abs(filepath.Join(dir, "reference.onnx"))
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, m.Marshal(), 0o644)
}

// TimeRounds times every model rounds times on dev, one round over all of
// them after the other (a slow spell of a shared machine then falls on one
// round of each model rather than on all rounds of a few), and returns each
// model's per-round medians.
func TimeRounds(ctx context.Context, dev Device, paths []string, proto Protocol, rounds int, progress func(done, total int)) ([][]float64, error) {
	times := make([][]float64, len(paths))
	done := 0
	for range rounds {
		for i, path := range paths {
			t, err := dev.Time(ctx, path, proto)
			if err != nil {
				return nil, fmt.Errorf("timing %s: %w", path, err)
			}
			times[i] = append(times[i], t.MedianMs)
			done++
			if progress != nil {
				progress(done, rounds*len(paths))
			}
		}
	}
	return times, nil
}

// fitLine is the least-squares line y = a + b x.
func fitLine(x, y []float64) (a, b float64) {
	n := float64(len(x))
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return sy / n, 0
	}
	b = (n*sxy - sx*sy) / den
	return (sy - b*sx) / n, b
}

func accuracy(pred, meas []float64) Accuracy {
	var acc Accuracy
	if len(pred) == 0 {
		return acc
	}
	within := 0
	var se, sre float64
	for i := range pred {
		d := pred[i] - meas[i]
		if math.Abs(d) <= 0.1*meas[i] {
			within++
		}
		se += d * d
		sre += (d / meas[i]) * (d / meas[i])
	}
	n := float64(len(pred))
	acc.Within10 = float64(within) / n
	acc.RMSEMs = math.Sqrt(se / n)
	acc.RMSEPct = 100 * math.Sqrt(sre/n)
	acc.Spearman = stats.Spearman(pred, meas)
	return acc
}
