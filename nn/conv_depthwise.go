package nn

// Depthwise convolution (Groups == InC, OutC = InC*mult) as direct loops:
// each output channel reads one input channel, so a GEMM per group would be
// a 1-row matrix product dominated by im2col. Loops run over output rows and
// kernel taps, with the valid output range of each tap computed once so the
// inner loops are branch-free (contiguous when the stride is 1).

func (l *conv) forwardDepthwise(_, i int) {
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	xn := l.x.Data[i*inSize : (i+1)*inSize]
	yn := l.y.Data[i*outSize : (i+1)*outSize]
	mult := l.outC / l.inC
	kk := l.k * l.k
	for oc := 0; oc < l.outC; oc++ {
		xc := xn[(oc/mult)*l.h*l.wd : (oc/mult+1)*l.h*l.wd]
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
				ih := y*l.stride - l.pad + kh*l.dil
				if ih < 0 || ih >= l.h {
					continue
				}
				xrow := xc[ih*l.wd : (ih+1)*l.wd]
				dwRowForward(yrow, xrow, kern[kh*l.k:(kh+1)*l.k], l.stride, l.pad, l.dil)
			}
		}
	}
}

// dwRowForward adds one kernel row's taps into an output row:
// out[o] += sum_kw kern[kw] * in[o*stride + kw*dil - pad] over valid positions.
func dwRowForward(out, in, kern []float32, stride, pad, dil int) {
	ow, w := len(out), len(in)
	if stride == 1 && len(kern) == 3 {
		// The common 3x3 case: all three taps at once on the interior
		// (one pass over out instead of three), single taps at the borders.
		off0 := -pad
		lo0, hi0 := tapRange(off0, 1, w, ow)
		lo2, hi2 := tapRange(off0+2*dil, 1, w, ow)
		lo, hi := max(lo0, lo2), min(hi0, hi2)
		if lo < hi {
			k0, k1, k2 := kern[0], kern[1], kern[2]
			o := out[lo:hi]
			a := in[lo+off0 : hi+off0]
			b := in[lo+off0+dil : hi+off0+dil]
			c := in[lo+off0+2*dil : hi+off0+2*dil]
			a, b, c = a[:len(o)], b[:len(o)], c[:len(o)]
			for j := range o {
				o[j] += k0*a[j] + k1*b[j] + k2*c[j]
			}
			for kw, kv := range kern {
				off := kw*dil - pad
				tlo, thi := tapRange(off, 1, w, ow)
				for j := tlo; j < min(thi, lo); j++ {
					out[j] += kv * in[j+off]
				}
				for j := max(tlo, hi); j < thi; j++ {
					out[j] += kv * in[j+off]
				}
			}
			return
		}
	}
	for kw, kv := range kern {
		off := kw*dil - pad
		lo, hi := tapRange(off, stride, w, ow)
		if lo >= hi {
			continue
		}
		if stride == 1 {
			o := out[lo:hi]
			src := in[lo+off : hi+off]
			src = src[:len(o)]
			for j := range o {
				o[j] += kv * src[j]
			}
		} else {
			for j := lo; j < hi; j++ {
				out[j] += kv * in[j*stride+off]
			}
		}
	}
}

func (l *conv) backwardDepthwiseChunk(_, c int) {
	dw, db := l.dwAcc[c], l.dbAcc[c]
	clear(dw)
	clear(db)
	lo, hi := l.chunkImages(c)
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	mult := l.outC / l.inC
	kk := l.k * l.k
	for i := lo; i < hi; i++ {
		xn := l.x.Data[i*inSize : (i+1)*inSize]
		dyn := l.y.Grad[i*outSize : (i+1)*outSize]
		var dxn []float32
		if l.x.Grad != nil {
			dxn = l.x.Grad[i*inSize : (i+1)*inSize]
		}
		for oc := 0; oc < l.outC; oc++ {
			ic := oc / mult
			xc := xn[ic*l.h*l.wd : (ic+1)*l.h*l.wd]
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
					ih := y*l.stride - l.pad + kh*l.dil
					if ih < 0 || ih >= l.h {
						continue
					}
					xrow := xc[ih*l.wd : (ih+1)*l.wd]
					var dxrow []float32
					if dxn != nil {
						dxrow = dxn[ic*l.h*l.wd+ih*l.wd : ic*l.h*l.wd+(ih+1)*l.wd]
					}
					dwRowBackward(dyrow, xrow, dxrow, kern[kh*l.k:(kh+1)*l.k], dkern[kh*l.k:(kh+1)*l.k],
						l.stride, l.pad, l.dil)
				}
			}
		}
	}
}

// dwRowBackward is the adjoint of dwRowForward for one kernel row: it adds
// dy*in into the taps' gradients and (when dx is not nil) kern*dy into dx.
func dwRowBackward(dy, in, dx, kern, dkern []float32, stride, pad, dil int) {
	ow, w := len(dy), len(in)
	for kw, kv := range kern {
		off := kw*dil - pad
		lo, hi := tapRange(off, stride, w, ow)
		if lo >= hi {
			continue
		}
		var s float32
		if stride == 1 {
			g := dy[lo:hi]
			src := in[lo+off : hi+off]
			src = src[:len(g)]
			for j, v := range g {
				s += v * src[j]
			}
			if dx != nil {
				d := dx[lo+off : hi+off]
				d = d[:len(g)]
				for j, v := range g {
					d[j] += kv * v
				}
			}
		} else {
			for j := lo; j < hi; j++ {
				s += dy[j] * in[j*stride+off]
			}
			if dx != nil {
				for j := lo; j < hi; j++ {
					dx[j*stride+off] += kv * dy[j]
				}
			}
		}
		dkern[kw] += s
	}
}
