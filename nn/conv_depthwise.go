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
	used       []bool  // phase planes read by some tap
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
	p.used = make([]bool, s*s)
	p.phaseTaps = make([][]int, s*s)
	p.offs = make([]int, k*k)
	for kh := 0; kh < k; kh++ {
		for kw := 0; kw < k; kw++ {
			ph := (kh*d%s)*s + kw*d%s
			t := kh*k + kw
			p.offs[t] = ph*p.phaseSize + kh*d/s*p.wq + kw*d/s
			p.maxOff = max(p.maxOff, p.offs[t])
			p.used[ph] = true
			p.phaseTaps[ph] = append(p.phaseTaps[ph], t)
		}
	}
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
	s, w := p.s, l.wd
	if s == 1 {
		for y := 0; y < l.h; y++ {
			copy(plane[(y+l.pad)*p.wq+l.pad:(y+l.pad)*p.wq+l.pad+w], xc[y*w:(y+1)*w])
		}
		return
	}
	for y := 0; y < l.h; y++ {
		py := y + l.pad
		a, r := py%s, py/s
		src := xc[y*w : (y+1)*w]
		for b := 0; b < s; b++ {
			if !p.used[a*s+b] {
				continue
			}
			// Input columns x with (x+pad)%s == b, from x0 on in steps of s.
			x0 := ((b-l.pad)%s + s) % s
			if x0 >= w {
				continue
			}
			dst := plane[(a*s+b)*p.phaseSize+r*p.wq+(x0+l.pad)/s:]
			cnt := (w - x0 + s - 1) / s
			dst = dst[:cnt]
			for j := range dst {
				dst[j] = src[x0+j*s]
			}
		}
	}
}

// addPhases adds the interior of the phase planes of dP into one channel's
// input gradient (the border is the padding's gradient and is dropped).
func (l *conv) addPhases(dx, dplane []float32) {
	p := l.dw
	s, w := p.s, l.wd
	for y := 0; y < l.h; y++ {
		py := y + l.pad
		a, r := py%s, py/s
		dst := dx[y*w : (y+1)*w]
		if s == 1 {
			src := dplane[r*p.wq+l.pad : r*p.wq+l.pad+w]
			src = src[:len(dst)]
			for j, v := range src {
				dst[j] += v
			}
			continue
		}
		for b := 0; b < s; b++ {
			if !p.used[a*s+b] {
				continue // no tap reads these pixels: their gradient is zero
			}
			x0 := ((b-l.pad)%s + s) % s
			if x0 >= w {
				continue
			}
			cnt := (w - x0 + s - 1) / s
			src := dplane[(a*s+b)*p.phaseSize+r*p.wq+(x0+l.pad)/s:]
			src = src[:cnt]
			for j, v := range src {
				dst[x0+j*s] += v
			}
		}
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
				if l.b != nil {
					var s float32
					for _, v := range dyc {
						s += v
					}
					db[oc] += s
				}
				// Valid columns only: the garbage columns of dygrid stay zero.
				for y := 0; y < l.oh; y++ {
					copy(sc.dygrid[y*p.wq:y*p.wq+l.ow], dyc[y*l.ow:(y+1)*l.ow])
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
