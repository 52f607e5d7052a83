package nn

// PerSampleWeightGrads exposes what a WeightedSum layer's Backward already
// computes: for sample b of the current batch and input j,
// g[b*len(w)+j] = <dy_b, x_{b,j}>, the gradient of the seeded output with
// respect to w_j restricted to sample b. Curvature estimators square these
// per-sample gradients (Fisher, Gauss-Newton) without a second pass over
// cached feature maps. The slice is the layer's own buffer: it is valid
// until the next Backward and must not be written. ok is false for layers
// that are not weighted sums of this backend.
func PerSampleWeightGrads(l Layer) (w []*Param, g []float64, ok bool) {
	ws, ok := l.(*weightedSumLayer)
	if !ok {
		return nil, nil, false
	}
	return ws.w, ws.partial[:ws.y.N()*len(ws.w)], true
}
