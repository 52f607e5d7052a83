package nn

// Depthwise convolution (Groups == InC, OutC = InC*mult) as direct loops:
// each output channel reads one input channel, so a GEMM per group would be
// a one-row matrix product dominated by im2col. Each input channel is first
// copied into a zero-bordered plane (per-worker scratch) so that the inner
// loops have no border tests: for stride 1 every kernel row is a few fused
// multiply-add sweeps over contiguous rows.

// dwPlanes returns a worker's padded input plane and its gradient plane.
// Their borders are never written, so they stay zero.
func (l *conv) dwPlanes(worker int) (plane, dplane []float32) {
	sz := (l.h + 2*l.pad) * (l.wd + 2*l.pad)
	s := l.cols[worker]
	return s[:sz], s[sz : 2*sz]
}

// fillPlane copies one input channel into the interior of a padded plane.
func (l *conv) fillPlane(plane, xc []float32) {
	wp := l.wd + 2*l.pad
	for y := 0; y < l.h; y++ {
		copy(plane[(y+l.pad)*wp+l.pad:(y+l.pad)*wp+l.pad+l.wd], xc[y*l.wd:(y+1)*l.wd])
	}
}

func (l *conv) forwardDepthwise(worker, i int) {
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	xn := l.x.Data[i*inSize : (i+1)*inSize]
	yn := l.y.Data[i*outSize : (i+1)*outSize]
	plane, _ := l.dwPlanes(worker)
	mult := l.outC / l.inC
	kk := l.k * l.k
	wp := l.wd + 2*l.pad
	for ic := 0; ic < l.inC; ic++ {
		l.fillPlane(plane, xn[ic*l.h*l.wd:(ic+1)*l.h*l.wd])
		for oc := ic * mult; oc < (ic+1)*mult; oc++ {
			yc := yn[oc*l.spatial : (oc+1)*l.spatial]
			var bias float32
			if l.b != nil {
				bias = l.b.Data[oc]
			}
			for j := range yc {
				yc[j] = bias
			}
			kern := l.w.Data[oc*kk : (oc+1)*kk]
			for y := 0; y < l.oh; y++ {
				yrow := yc[y*l.ow : (y+1)*l.ow]
				for kh := 0; kh < l.k; kh++ {
					r := (y*l.stride + kh*l.dil) * wp
					dwRowForward(yrow, plane[r:r+wp], kern[kh*l.k:(kh+1)*l.k], l.stride, l.dil)
				}
			}
		}
	}
}

// dwRowForward adds one kernel row's taps into an output row:
// out[o] += sum_kw kern[kw] * in[o*stride + kw*dil], in being a padded row.
func dwRowForward(out, in, kern []float32, stride, dil int) {
	n := len(out)
	if stride == 1 {
		switch len(kern) {
		case 3:
			k0, k1, k2 := kern[0], kern[1], kern[2]
			a, b, c := in[:n], in[dil:dil+n], in[2*dil:2*dil+n]
			for j := range out {
				out[j] += k0*a[j] + k1*b[j] + k2*c[j]
			}
			return
		case 5:
			k0, k1, k2, k3, k4 := kern[0], kern[1], kern[2], kern[3], kern[4]
			a, b, c, d, e := in[:n], in[dil:dil+n], in[2*dil:2*dil+n], in[3*dil:3*dil+n], in[4*dil:4*dil+n]
			for j := range out {
				out[j] += k0*a[j] + k1*b[j] + k2*c[j] + k3*d[j] + k4*e[j]
			}
			return
		}
		for kw, kv := range kern {
			src := in[kw*dil : kw*dil+n]
			for j := range out {
				out[j] += kv * src[j]
			}
		}
		return
	}
	for kw, kv := range kern {
		src := in[kw*dil:]
		for j := range out {
			out[j] += kv * src[j*stride]
		}
	}
}

func (l *conv) backwardDepthwiseChunk(worker, c int) {
	dw, db := l.dwAcc[c], l.dbAcc[c]
	clear(dw)
	clear(db)
	lo, hi := l.chunkImages(c)
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	plane, dplane := l.dwPlanes(worker)
	mult := l.outC / l.inC
	kk := l.k * l.k
	wp := l.wd + 2*l.pad
	for i := lo; i < hi; i++ {
		xn := l.x.Data[i*inSize : (i+1)*inSize]
		dyn := l.y.Grad[i*outSize : (i+1)*outSize]
		if l.x.Grad != nil && l.assignX {
			clear(l.x.Grad[i*inSize : (i+1)*inSize])
		}
		for ic := 0; ic < l.inC; ic++ {
			l.fillPlane(plane, xn[ic*l.h*l.wd:(ic+1)*l.h*l.wd])
			var dp []float32
			if l.x.Grad != nil {
				dp = dplane
				clear(dp)
			}
			for oc := ic * mult; oc < (ic+1)*mult; oc++ {
				dyc := dyn[oc*l.spatial : (oc+1)*l.spatial]
				kern := l.w.Data[oc*kk : (oc+1)*kk]
				dkern := dw[oc*kk : (oc+1)*kk]
				if l.b != nil {
					var s float32
					for _, v := range dyc {
						s += v
					}
					db[oc] += s
				}
				for y := 0; y < l.oh; y++ {
					dyrow := dyc[y*l.ow : (y+1)*l.ow]
					for kh := 0; kh < l.k; kh++ {
						r := (y*l.stride + kh*l.dil) * wp
						var dprow []float32
						if dp != nil {
							dprow = dp[r : r+wp]
						}
						dwRowBackward(dyrow, plane[r:r+wp], dprow, kern[kh*l.k:(kh+1)*l.k],
							dkern[kh*l.k:(kh+1)*l.k], l.stride, l.dil)
					}
				}
			}
			if dp != nil {
				// The border of the gradient plane belongs to the padding: drop it.
				dxc := l.x.Grad[i*inSize+ic*l.h*l.wd : i*inSize+(ic+1)*l.h*l.wd]
				for y := 0; y < l.h; y++ {
					src := dp[(y+l.pad)*wp+l.pad : (y+l.pad)*wp+l.pad+l.wd]
					dst := dxc[y*l.wd : (y+1)*l.wd]
					for j, v := range src {
						dst[j] += v
					}
				}
			}
		}
	}
}

// dwRowBackward is the adjoint of dwRowForward for one kernel row: it adds
// dy*in into the taps' gradients and (when dx is not nil) kern*dy into dx.
func dwRowBackward(dy, in, dx, kern, dkern []float32, stride, dil int) {
	n := len(dy)
	if stride == 1 && len(kern) == 3 {
		a, b, c := in[:n], in[dil:dil+n], in[2*dil:2*dil+n]
		var s0, s1, s2 float32
		for j, g := range dy {
			s0 += g * a[j]
			s1 += g * b[j]
			s2 += g * c[j]
		}
		dkern[0] += s0
		dkern[1] += s1
		dkern[2] += s2
		if dx != nil {
			dwRowGatherDX3(dy, dx, kern, dil)
		}
		return
	}
	for kw, kv := range kern {
		var s float32
		if stride == 1 {
			src := in[kw*dil : kw*dil+n]
			for j, g := range dy {
				s += g * src[j]
			}
			if dx != nil {
				d := dx[kw*dil : kw*dil+n]
				for j, g := range dy {
					d[j] += kv * g
				}
			}
		} else {
			src := in[kw*dil:]
			for j, g := range dy {
				s += g * src[j*stride]
			}
			if dx != nil {
				d := dx[kw*dil:]
				for j, g := range dy {
					d[j*stride] += kv * g
				}
			}
		}
		dkern[kw] += s
	}
}

// dwRowGatherDX3 adds the input gradient of a stride-1, 3-tap kernel row,
// dx[p] += sum_kw kern[kw]*dy[p-kw*dil], gathering all taps per element (one
// store each) on the interior where every tap is valid.
func dwRowGatherDX3(dy, dx, kern []float32, dil int) {
	n, span := len(dy), 2*dil
	k0, k1, k2 := kern[0], kern[1], kern[2]
	if n > span {
		d := dx[span:n]
		a, b, c := dy[span:n], dy[span-dil:n-dil], dy[:n-span]
		a, b, c = a[:len(d)], b[:len(d)], c[:len(d)]
		for j := range d {
			d[j] += k0*a[j] + k1*b[j] + k2*c[j]
		}
		dwGatherDXEdge(dy, dx, kern, dil, 0, span)
		dwGatherDXEdge(dy, dx, kern, dil, n, n+span)
		return
	}
	dwGatherDXEdge(dy, dx, kern, dil, 0, n+span)
}

// dwGatherDXEdge is dwRowGatherDX3 on dx[plo:phi] with bounds tests.
func dwGatherDXEdge(dy, dx, kern []float32, dil, plo, phi int) {
	n := len(dy)
	for p := plo; p < phi; p++ {
		var s float32
		for kw, kv := range kern {
			if j := p - kw*dil; j >= 0 && j < n {
				s += kv * dy[j]
			}
		}
		dx[p] += s
	}
}
