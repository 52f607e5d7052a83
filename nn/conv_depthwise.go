package nn

import "bayesnas/internal/tapsum"

// Depthwise convolution (Groups == InC, OutC = InC*mult). Each output
// channel reads one input channel, so a GEMM per group would be a one-row
// matrix product dominated by im2col; instead every pass is a sum of shifted
// copies of one flat array, which a single kernel (tapsum.MAC, a multiply-add
// over a table of tap offsets) runs over the whole plane at once instead of over
// short rows:
//
//   - The zero-padded input plane is split into stride x stride phase planes
//     (phase (a, b) holds padded pixels (r*s+a, c*s+b)), each hq x wq. Tap
//     (kh, kw) then reads phase ((kh*dil)%s, (kw*dil)%s) at a constant offset
//     from the output position, for stride 1 (one phase) and 2 alike.
//   - Outputs are computed on a grid oh x wq as wide as a phase plane. The
//     columns past ow are garbage (they read into the next row) and are
//     dropped; they cost (wq-ow)/ow extra work but make each pass one long
//     vector loop.
//   - The weight gradient is one dot product per tap between the output
//     gradient, laid out on the same grid with zero garbage columns, and the
//     shifted phase buffer.
//   - The input gradient is gathered rather than scattered: each phase plane
//     of dP is a dwMAC over the taps of that phase reading the output gradient
//     at the negated offsets, from a buffer with a zero margin in front.
//
// Sums run in a fixed order per (image, channel), so the result depends on
// neither the worker count nor the scheduling.

// dwPlan is the layer's fixed geometry and the layout of its per-worker
// scratch (conv.cols[worker]).
type dwPlan struct {
	s          int // stride: s*s phase planes
	hq, wq     int // phase plane size
	phaseSize  int // hq*wq
	grid       int // oh*wq outputs computed per channel
	offs       []int
	maxOff     int
	phaseIdx   []int32 // stride > 1: phase buffer index of each input pixel
	ones       []float32
	oneOff     []int
	phaseTaps  [][]int // per phase: the taps (kh*k+kw) in it
	phaseOffs  [][]int // per phase: offsets into dyz of those taps
	planeEnd   int     // phase buffer length (reads of garbage outputs included)
	scratchLen int

	// scratch layout: P | dP | y grid | dyz (maxOff zeros, then the grid) | wsub
	pOff, dpOff, yOff, dyzOff, wsubOff int
}

func newDWPlan(l *conv) *dwPlan {
	s, k, d := l.stride, l.k, l.dil
	hp, wp := l.h+2*l.pad, l.wd+2*l.pad
	p := &dwPlan{s: s, hq: (hp + s - 1) / s, wq: (wp + s - 1) / s}
	p.phaseSize = p.hq * p.wq
	p.grid = l.oh * p.wq
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
	if s > 1 {
		// Division-free fill and gather: a table instead of per-row phase
		// arithmetic, which cost more than the arithmetic of the taps.
		p.phaseIdx = make([]int32, l.h*l.wd)
		for y := 0; y < l.h; y++ {
			for x := 0; x < l.wd; x++ {
				py, px := y+l.pad, x+l.pad
				p.phaseIdx[y*l.wd+x] = int32((py%s*s+px%s)*p.phaseSize + py/s*p.wq + px/s)
			}
		}
	}
	// The bias gradient is the dot product of the output gradient with ones.
	p.ones = make([]float32, p.grid)
	for i := range p.ones {
		p.ones[i] = 1
	}
	p.oneOff = []int{0}
	p.phaseOffs = make([][]int, s*s)
	for ph, taps := range p.phaseTaps {
		for _, t := range taps {
			p.phaseOffs[ph] = append(p.phaseOffs[ph], ph*p.phaseSize+p.maxOff-p.offs[t])
		}
	}
	// Garbage outputs of the last rows read up to maxOff+grid.
	p.planeEnd = max(s*s*p.phaseSize, p.maxOff+p.grid)
	p.pOff = 0
	p.dpOff = p.planeEnd
	p.yOff = p.dpOff + s*s*p.phaseSize
	p.dyzOff = p.yOff + p.grid
	// dP plane ph reads dyz up to ph*phaseSize + phaseSize + maxOff - offs[t],
	// at most maxOff + phaseSize since offs[t] >= ph*phaseSize.
	p.wsubOff = p.dyzOff + p.maxOff + max(p.phaseSize, p.grid)
	p.scratchLen = p.wsubOff + k*k
	return p
}

// dwScratch is one worker's scratch split into its parts.
type dwScratch struct {
	plane, dplane, ygrid, dyz, dygrid, wsub []float32
}

func (l *conv) dwScratch(worker int) dwScratch {
	p, s := l.dw, l.cols[worker]
	return dwScratch{
		plane:  s[p.pOff:p.dpOff],
		dplane: s[p.dpOff:p.yOff],
		ygrid:  s[p.yOff:p.dyzOff],
		dyz:    s[p.dyzOff:p.wsubOff],
		dygrid: s[p.dyzOff+p.maxOff : p.dyzOff+p.maxOff+p.grid],
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

// addPhases adds the interior of the phase planes of dP into one channel's
// input gradient (the border is the padding's gradient and is dropped).
// Phase planes that no tap reads were never written: their zeros are the
// gradient of the pixels that no output depends on.
func (l *conv) addPhases(dx, dplane []float32) {
	p := l.dw
	if p.s == 1 {
		w, wq := l.wd, p.wq
		for y := 0; y < l.h; y++ {
			dst := dx[y*w : (y+1)*w]
			src := dplane[(y+l.pad)*wq+l.pad : (y+l.pad)*wq+l.pad+w]
			src = src[:len(dst)]
			for j, v := range src {
				dst[j] += v
			}
		}
		return
	}
	idx := p.phaseIdx[:len(dx)]
	for i := range dx {
		dx[i] += dplane[idx[i]]
	}
}

func (l *conv) forwardDepthwise(worker, i int) {
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	xn := l.x.Data[i*inSize : (i+1)*inSize]
	yn := l.y.Data[i*outSize : (i+1)*outSize]
	p := l.dw
	sc := l.dwScratch(worker)
	mult := l.outC / l.inC
	kk := l.k * l.k
	for ic := 0; ic < l.inC; ic++ {
		l.fillPhases(sc.plane, xn[ic*l.h*l.wd:(ic+1)*l.h*l.wd])
		for oc := ic * mult; oc < (ic+1)*mult; oc++ {
			tapsum.MAC(sc.ygrid, sc.plane, p.offs, l.w.Data[oc*kk:(oc+1)*kk], false)
			var bias float32
			if l.b != nil {
				bias = l.b.Data[oc]
			}
			yc := yn[oc*l.spatial : (oc+1)*l.spatial]
			for y := 0; y < l.oh; y++ {
				dst := yc[y*l.ow : (y+1)*l.ow]
				src := sc.ygrid[y*p.wq : y*p.wq+l.ow]
				src = src[:len(dst)]
				for j, v := range src {
					dst[j] = v + bias
				}
			}
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
				// Valid columns only: the garbage columns of dygrid stay zero.
				for y := 0; y < l.oh; y++ {
					copy(sc.dygrid[y*p.wq:y*p.wq+l.ow], dyc[y*l.ow:(y+1)*l.ow])
				}
				if l.b != nil {
					tapsum.Dots(sc.dygrid, p.ones, p.oneOff, db[oc:oc+1])
				}
				kern := l.w.Data[oc*kk : (oc+1)*kk]
				if wantW {
					tapsum.Dots(sc.dygrid, sc.plane, p.offs, dw[oc*kk:(oc+1)*kk])
				}
				if dxn == nil {
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
						p.phaseOffs[ph], wsub, m > 0)
				}
			}
			if dxn != nil {
				l.addPhases(dxn[ic*hw:(ic+1)*hw], sc.dplane)
			}
		}
	}
}
