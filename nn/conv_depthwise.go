package nn

import "bayesnas/internal/tapsum"

// Depthwise convolution (Groups == InC, OutC = InC*mult). Each output
// channel reads one input channel, so a GEMM per group would be a one-row
// matrix product dominated by im2col. Instead every pass is a sum of
// shifted copies of one array, which two kernels of package tapsum (AVX2
// assembly with a Go fallback) run over whole planes at a time: MAC, a
// multiply-add over a table of tap offsets, and Dots, one dot product per
// tap.
//
//   - The zero-padded input channel is split into stride x stride phase
//     planes (phase (a, b) holds padded pixels (r*s+a, c*s+b)), each hq x wq,
//     so that tap (kh, kw) reads phase ((kh*dil)%s, (kw*dil)%s) at a
//     constant offset from the output pixel for any stride: the output is
//     MAC over the taps, its rows read with stride wq.
//   - The weight gradient is Dots of the output gradient with the same
//     shifted planes; the bias gradient is Dots with ones.
//   - The input gradient is gathered rather than scattered: the output
//     gradient is copied into a grid of row stride wq with zeros around it,
//     and each input pixel is MAC over the taps at the negated offsets. For
//     stride 1 that writes the input gradient directly; for larger strides
//     it fills the phase planes of dP, each from the taps of its phase, and
//     a table maps them back.
//
// Sums run in a fixed order per (image, channel), so the result depends on
// neither the worker count nor the scheduling.

// dwPlan is the layer's fixed geometry and the layout of its per-worker
// scratch (conv.cols[worker]).
type dwPlan struct {
	s         int // stride: s*s phase planes
	hq, wq    int // phase plane size
	phaseSize int // hq*wq
	offs      []int
	maxOff    int
	outGrid   tapsum.Grid // the output (and its gradient) over the phase planes
	// flat: the output is narrower than a 32-wide block, where per-row
	// kernels would run one short dependency chain per row: compute on
	// flatGrid, all oh rows of wq columns as one long row (the columns past
	// ow are garbage, dropped), and copy out with a one-tap MAC.
	flat     bool
	flatGrid tapsum.Grid
	unit     []float32 // the weight of that one tap
	zeroOff  []int
	ones     []float32
	oneOff   []int
	dxGrid   tapsum.Grid // stride 1: the input gradient over the dy grid
	dxOffs   []int       // stride 1: offsets of the taps into dyz
	// stride 1, flat: dP's interior as one row from dxStart, dxFlat long
	dxStart    int
	dxStartOff []int
	dxFlat     tapsum.Grid
	phaseIdx   []int32 // stride > 1: phase buffer index of each input pixel
	phaseTaps  [][]int // stride > 1: per phase, the taps (kh*k+kw) in it
	phaseOffs  [][]int // stride > 1: per phase, offsets of those taps into dyz

	// scratch layout: P | dP | dyz (maxOff zeros, then the dy grid, then
	// zeros) | y grid (flat) | wsub
	dpOff, dyzOff, ygridOff, wsubOff, scratchLen int
}

func newDWPlan(l *conv) *dwPlan {
	s, k, d := l.stride, l.k, l.dil
	hp, wp := l.h+2*l.pad, l.wd+2*l.pad
	p := &dwPlan{s: s, hq: (hp + s - 1) / s, wq: (wp + s - 1) / s}
	p.phaseSize = p.hq * p.wq
	p.phaseTaps = make([][]int, s*s)
	p.offs = make([]int, k*k)
	for kh := 0; kh < k; kh++ {
		for kw := 0; kw < k; kw++ {
			ph := (kh*d%s)*s + kw*d%s
			t := kh*k + kw
			p.offs[t] = ph*p.phaseSize + kh*d/s*p.wq + kw*d/s
			p.maxOff = max(p.maxOff, p.offs[t])
			p.phaseTaps[ph] = append(p.phaseTaps[ph], t)
		}
	}
	p.outGrid = tapsum.Grid{Rows: l.oh, Width: l.ow, OutStride: l.ow, SrcStride: p.wq}
	p.ones = make([]float32, l.ow)
	for i := range p.ones {
		p.ones[i] = 1
	}
	p.oneOff = []int{0}
	p.flat = l.ow < 32
	p.flatGrid = tapsum.Grid{Rows: 1, Width: l.oh * p.wq, OutStride: l.oh * p.wq}
	p.unit, p.zeroOff = []float32{1}, []int{0}
	// dyz holds dy at row stride wq from maxOff on. Output pixel (y, x)
	// reads phase-buffer position offs[t] + y*wq + x, so a phase-buffer
	// position q receives dy at dyz index q + maxOff - offs[t]: at most
	// maxOff + phaseSize for q inside its phase plane.
	dyzLen := p.maxOff + max(p.phaseSize, l.oh*p.wq)
	if s == 1 {
		p.dxGrid = tapsum.Grid{Rows: l.h, Width: l.wd, OutStride: l.wd, SrcStride: p.wq}
		p.dxStart = l.pad*p.wq + l.pad
		p.dxFlat = tapsum.Grid{Rows: 1, Width: (l.h-1)*p.wq + l.wd, OutStride: (l.h-1)*p.wq + l.wd}
		p.dxStartOff = []int{p.dxStart}
		for _, o := range p.offs {
			p.dxOffs = append(p.dxOffs, l.pad*p.wq+l.pad+p.maxOff-o)
		}
	} else {
		// Division-free fill and gather: a table instead of per-row phase
		// arithmetic, which cost more than the multiply-adds.
		p.phaseIdx = make([]int32, l.h*l.wd)
		for y := 0; y < l.h; y++ {
			for x := 0; x < l.wd; x++ {
				py, px := y+l.pad, x+l.pad
				p.phaseIdx[y*l.wd+x] = int32((py%s*s+px%s)*p.phaseSize + py/s*p.wq + px/s)
			}
		}
		p.phaseOffs = make([][]int, s*s)
		for ph, taps := range p.phaseTaps {
			for _, t := range taps {
				p.phaseOffs[ph] = append(p.phaseOffs[ph], ph*p.phaseSize+p.maxOff-p.offs[t])
			}
		}
	}
	// Phase buffers: the last phase's taps read up to maxOff plus the grid.
	planeLen := max(s*s*p.phaseSize, p.maxOff+l.oh*p.wq)
	p.dpOff = planeLen
	p.dyzOff = p.dpOff + s*s*p.phaseSize
	p.ygridOff = p.dyzOff + dyzLen
	p.wsubOff = p.ygridOff + l.oh*p.wq
	p.scratchLen = p.wsubOff + k*k
	return p
}

// dwScratch is one worker's scratch split into its parts.
type dwScratch struct {
	plane, dplane, dyz, dygrid, ygrid, wsub []float32
}

func (l *conv) dwScratch(worker int) dwScratch {
	p, s := l.dw, l.cols[worker]
	return dwScratch{
		plane:  s[:p.dpOff],
		dplane: s[p.dpOff:p.dyzOff],
		dyz:    s[p.dyzOff:p.ygridOff],
		dygrid: s[p.dyzOff+p.maxOff : p.ygridOff],
		ygrid:  s[p.ygridOff:p.wsubOff],
		wsub:   s[p.wsubOff:p.scratchLen],
	}
}

// fillPhases copies one input channel into the interior of the phase
// planes. Nothing else is ever written there, so the padding stays zero.
func (l *conv) fillPhases(plane, xc []float32) {
	p := l.dw
	if p.s == 1 {
		w, wq := l.wd, p.wq
		for y := 0; y < l.h; y++ {
			copy(plane[(y+l.pad)*wq+l.pad:(y+l.pad)*wq+l.pad+w], xc[y*w:(y+1)*w])
		}
		return
	}
	idx := p.phaseIdx[:len(xc)]
	for i, v := range xc {
		plane[idx[i]] = v
	}
}

func (l *conv) forwardDepthwise(worker, i int) {
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	xn := l.x.Data[i*inSize : (i+1)*inSize]
	yn := l.y.Data[i*outSize : (i+1)*outSize]
	p := l.dw
	sc := l.dwScratch(worker)
	plane := sc.plane
	mult := l.outC / l.inC
	kk := l.k * l.k
	for ic := 0; ic < l.inC; ic++ {
		l.fillPhases(plane, xn[ic*l.h*l.wd:(ic+1)*l.h*l.wd])
		for oc := ic * mult; oc < (ic+1)*mult; oc++ {
			var bias float32
			if l.b != nil {
				bias = l.b.Data[oc]
			}
			yc, kern := yn[oc*l.spatial:(oc+1)*l.spatial], l.w.Data[oc*kk:(oc+1)*kk]
			if p.flat {
				tapsum.MAC(sc.ygrid, plane, p.flatGrid, p.offs, kern, 0, false)
				tapsum.MAC(yc, sc.ygrid, p.outGrid, p.zeroOff, p.unit, bias, false)
				continue
			}
			tapsum.MAC(yc, plane, p.outGrid, p.offs, kern, bias, false)
		}
	}
}

func (l *conv) backwardDepthwiseChunk(worker, c int) {
	dw, db := l.dwAcc[c], l.dbAcc[c]
	clear(dw)
	clear(db)
	lo, hi := l.chunkImages(c)
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	p := l.dw
	sc := l.dwScratch(worker)
	mult := l.outC / l.inC
	kk := l.k * l.k
	hw := l.h * l.wd
	wantW := l.w.Grad != nil
	for i := lo; i < hi; i++ {
		xn := l.x.Data[i*inSize : (i+1)*inSize]
		dyn := l.y.Grad[i*outSize : (i+1)*outSize]
		var dxn []float32
		if l.x.Grad != nil {
			dxn = l.x.Grad[i*inSize : (i+1)*inSize]
			if l.assignX {
				clear(dxn)
			}
		}
		for ic := 0; ic < l.inC; ic++ {
			if wantW {
				l.fillPhases(sc.plane, xn[ic*hw:(ic+1)*hw])
			}
			for m := 0; m < mult; m++ {
				oc := ic*mult + m
				dyc := dyn[oc*l.spatial : (oc+1)*l.spatial]
				if l.b != nil {
					tapsum.Dots(dyc, p.ones, tapsum.Grid{Rows: l.oh, Width: l.ow, OutStride: l.ow},
						p.oneOff, db[oc:oc+1])
				}
				kern := l.w.Data[oc*kk : (oc+1)*kk]
				if dxn != nil || p.flat {
					// Valid columns only: the columns past ow stay zero.
					for y := 0; y < l.oh; y++ {
						copy(sc.dygrid[y*p.wq:y*p.wq+l.ow], dyc[y*l.ow:(y+1)*l.ow])
					}
				}
				if wantW {
					if p.flat {
						tapsum.Dots(sc.dygrid, sc.plane, p.flatGrid, p.offs, dw[oc*kk:(oc+1)*kk])
					} else {
						tapsum.Dots(dyc, sc.plane, p.outGrid, p.offs, dw[oc*kk:(oc+1)*kk])
					}
				}
				if dxn == nil {
					continue
				}
				if p.s == 1 && !p.flat {
					tapsum.MAC(dxn[ic*hw:(ic+1)*hw], sc.dyz, p.dxGrid, p.dxOffs, kern, 0, true)
					continue
				}
				if p.s == 1 {
					// The interior of dP as one long row from its first pixel.
					tapsum.MAC(sc.dplane[p.dxStart:], sc.dyz, p.dxFlat, p.dxOffs, kern, 0, m > 0)
					continue
				}
				for ph, taps := range p.phaseTaps {
					if len(taps) == 0 {
						continue
					}
					wsub := sc.wsub[:len(taps)]
					for j, t := range taps {
						wsub[j] = kern[t]
					}
					tapsum.MAC(sc.dplane[ph*p.phaseSize:(ph+1)*p.phaseSize], sc.dyz,
						tapsum.Grid{Rows: 1, Width: p.phaseSize, OutStride: p.phaseSize},
						p.phaseOffs[ph], wsub, 0, m > 0)
				}
			}
			if dxn != nil && p.s == 1 && p.flat {
				tapsum.MAC(dxn[ic*hw:(ic+1)*hw], sc.dplane, p.dxGrid, p.dxStartOff, p.unit, 0, true)
			}
			if dxn != nil && p.s > 1 {
				// Phase planes that no tap reads were never written: their
				// zeros are the gradient of pixels no output depends on.
				dxc := dxn[ic*hw : (ic+1)*hw]
				idx := p.phaseIdx[:len(dxc)]
				for j := range dxc {
					dxc[j] += sc.dplane[idx[j]]
				}
			}
		}
	}
}
