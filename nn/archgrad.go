package nn

import "fmt"

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
		if o, other := l.(PerSampleWeighter); other {
			w, g = o.PerSampleWeightGrads()
			return w, g, true
		}
		return nil, nil, false
	}
	return ws.w, ws.partial[:ws.y.N()*len(ws.w)], true
}

// PerSampleScaleGrads writes, for a batch norm layer after a Forward in
// evaluation mode and a Backward, the gradient of the seeded output with
// respect to each channel's scale restricted to each sample:
// g[b*C+c] = sum over positions of dy[b,c] * (x[b,c]-mean_c)*invStd_c,
// with the running statistics the Forward used. Channel gates in
// compression are batch norm scales, and their curvature squares these.
// In training mode the batch statistics couple the samples, so per-sample
// gradients are not gradients of per-sample losses: err then. ok is false
// for layers that are not batch norms of this backend.
//
// A channel scale (IsChannelScale: a 1x1 depthwise convolution without
// bias, y[b,c] = w_c x[b,c]) counts too, with g[b*C+c] = sum over
// positions of dy[b,c] * x[b,c]: compression puts one after a conv whose
// channels no batch norm scales, as that conv's gate.
func PerSampleScaleGrads(l Layer, g []float64) (gamma *Param, ok bool, err error) {
	if cv, isConv := l.(*conv); isConv && cv.isChannelScale() {
		return cv.perSampleScaleGrads(g)
	}
	bn, ok := l.(*bnLayer)
	if !ok {
		if o, other := l.(PerSampleScaler); other {
			return o.PerSampleScaleGrads(g)
		}
		return nil, false, nil
	}
	n := bn.y.N()
	if bn.train {
		return bn.gamma, true, fmt.Errorf("batchnorm on %s: per-sample scale gradients need evaluation mode", bn.x.Name)
	}
	if len(g) < n*bn.c {
		return bn.gamma, true, fmt.Errorf("batchnorm on %s: %d slots for %d samples x %d channels", bn.x.Name, len(g), n, bn.c)
	}
	hw, stride := bn.hw, bn.c*bn.hw
	x, dy := bn.x.Data, bn.y.Grad
	for b := range n {
		for ch := range bn.c {
			off := b*stride + ch*hw
			mean := float32(bn.mean[ch])
			var s float64
			for i, v := range x[off : off+hw] {
				if bn.relu && !(bn.y.Data[off+i] > 0) {
					continue // a fused ReLU passed no gradient here
				}
				s += float64(dy[off+i]) * float64(v-mean)
			}
			g[b*bn.c+ch] = s * bn.invStd[ch]
		}
	}
	return bn.gamma, true, nil
}

// IsChannelScale reports whether l multiplies each channel by its own
// weight and does nothing else: a 1x1 depthwise convolution, stride 1, no
// padding, no bias.
func IsChannelScale(l Layer) bool {
	cv, ok := l.(*conv)
	if !ok {
		o, other := l.(PerSampleScaler)
		return other && o.IsChannelScale()
	}
	return cv.isChannelScale()
}

// PerSampleWeighter is how another backend's weighted-sum layer provides
// PerSampleWeightGrads: the weights and the per-sample gradients
// g[b*len(w)+j] = <dy_b, x_{b,j}> of the last Backward (its own buffer).
type PerSampleWeighter interface {
	PerSampleWeightGrads() (w []*Param, g []float64)
}

// PerSampleScaler is how another backend's batch norm and convolution
// layers provide PerSampleScaleGrads (same contract: ok false when the
// layer is neither a batch norm nor a channel scale) and IsChannelScale.
type PerSampleScaler interface {
	PerSampleScaleGrads(g []float64) (gamma *Param, ok bool, err error)
	IsChannelScale() bool
}

func (l *conv) isChannelScale() bool {
	return l.mode == convDepthwise && l.k == 1 && l.stride == 1 && l.pad == 0 && l.b == nil &&
		l.groups == l.inC && l.outC == l.inC
}

func (l *conv) perSampleScaleGrads(g []float64) (*Param, bool, error) {
	n, c, hw := l.y.N(), l.outC, l.spatial
	if len(g) < n*c {
		return l.w, true, fmt.Errorf("channel scale %s: %d slots for %d samples x %d channels", l.w.Name, len(g), n, c)
	}
	x, dy := l.x.Data, l.y.Grad
	for b := range n {
		for ch := range c {
			off := (b*c + ch) * hw
			var s float64
			for i, v := range x[off : off+hw] {
				s += float64(dy[off+i]) * float64(v)
			}
			g[b*c+ch] = s
		}
	}
	return l.w, true, nil
}
