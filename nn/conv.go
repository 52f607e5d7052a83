package nn

import (
	"fmt"
	"slices"
)

// convMinChunks is the number of image chunks the backward pass splits a
// batch into (or more, when there are more workers). Weight and bias
// gradients are accumulated per chunk and then summed in chunk order, so
// the result depends on the batch size but not on which worker ran which
// chunk: it is identical for every worker count up to convMinChunks.
const convMinChunks = 8

type convMode int

const (
	convIm2col    convMode = iota // im2col + one GEMM per group
	convPointwise                 // 1x1, stride 1, pad 0: GEMM on the image itself
	convDepthwise                 // Groups == InC: direct loops
)

// conv is a 2-D convolution layer of the CPU backend.
type conv struct {
	x, y *Value
	// assignX: the next Backward overwrites x.Grad (see gradLayer); each
	// image's gradient is cleared just before its first accumulation.
	assignX bool
	w, b    *Param
	gemm    Gemm
	pool    *Pool
	mode    convMode

	inC, h, wd            int // input channels and spatial size
	outC, oh, ow          int
	k, stride, pad, dil   int
	groups, cg, ocg, kdim int // per group: in channels, out channels, GEMM depth
	spatial               int // oh*ow

	// cols[worker] holds one image's im2col matrix (inC*k*k x spatial); in
	// the backward pass each group's rows are overwritten by their gradient.
	// Depthwise layers keep their planes there (layout in dw).
	cols [][]float32
	dw   *dwPlan
	// gatherDX: the input gradient is computed as a stride-1 convolution of
	// the padded output gradient with the flipped kernel (im2col of dY, then
	// one GEMM with depth OutC/Groups*K*K into dX), which gathers with copies
	// where col2im would scatter-add with scalar loops. wFlip holds the
	// flipped, transposed weights, rebuilt at each Backward.
	gatherDX bool
	wFlip    []float32
	// dwAcc[chunk] and dbAcc[chunk] collect one chunk's weight and bias gradients.
	dwAcc, dbAcc [][]float32
	chunks       int
	nChunks      int // chunks used by the current backward pass

	// Stored at construction so that Forward and Backward allocate nothing.
	fwdFn, bwdFn func(worker, i int)
}

// Conv2D builds a convolution of x (NCHW) with weight w [OutC, InC/Groups, K, K]
// and optional bias b [OutC].
func (c *CPU) Conv2D(x *Value, w, b *Param, a ConvAttrs) (Layer, error) {
	if w == nil {
		return nil, fmt.Errorf("conv: weight is nil")
	}
	name := w.Name
	if x == nil {
		return nil, fmt.Errorf("conv %s: input is nil", name)
	}
	if len(x.Shape) != 4 || x.Shape[0] < 1 || x.Shape[1] < 1 || x.Shape[2] < 1 || x.Shape[3] < 1 {
		return nil, fmt.Errorf("conv %s: input %s has shape %v, want N,C,H,W all positive", name, x.Name, x.Shape)
	}
	switch {
	case a.Kernel < 1:
		return nil, fmt.Errorf("conv %s: kernel %d < 1", name, a.Kernel)
	case a.Stride < 1:
		return nil, fmt.Errorf("conv %s: stride %d < 1", name, a.Stride)
	case a.Pad < 0:
		return nil, fmt.Errorf("conv %s: pad %d < 0", name, a.Pad)
	case a.Dilation < 1:
		return nil, fmt.Errorf("conv %s: dilation %d < 1", name, a.Dilation)
	case a.Groups < 1:
		return nil, fmt.Errorf("conv %s: groups %d < 1", name, a.Groups)
	case a.OutC < 1:
		return nil, fmt.Errorf("conv %s: output channels %d < 1", name, a.OutC)
	}
	n, inC, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if inC%a.Groups != 0 || a.OutC%a.Groups != 0 {
		return nil, fmt.Errorf("conv %s: input channels %d and output channels %d must both be divisible by groups %d",
			name, inC, a.OutC, a.Groups)
	}
	wantW := []int{a.OutC, inC / a.Groups, a.Kernel, a.Kernel}
	if !slices.Equal(w.Shape, wantW) || len(w.Data) != a.OutC*inC/a.Groups*a.Kernel*a.Kernel {
		return nil, fmt.Errorf("conv %s: weight shape %v, want %v (OutC, InC/Groups, K, K)", name, w.Shape, wantW)
	}
	if w.Grad != nil && len(w.Grad) != len(w.Data) {
		return nil, fmt.Errorf("conv %s: weight gradient has %d elements, want %d", name, len(w.Grad), len(w.Data))
	}
	if b != nil && (!slices.Equal(b.Shape, []int{a.OutC}) || len(b.Data) != a.OutC || (b.Grad != nil && len(b.Grad) != a.OutC)) {
		return nil, fmt.Errorf("conv %s: bias %s shape %v, want [%d]", name, b.Name, b.Shape, a.OutC)
	}
	oh := OutSize(h, a.Kernel, a.Stride, a.Pad, a.Dilation)
	ow := OutSize(wd, a.Kernel, a.Stride, a.Pad, a.Dilation)
	if oh < 1 || ow < 1 {
		return nil, fmt.Errorf("conv %s: input %dx%d too small for kernel %d, dilation %d, pad %d (output %dx%d)",
			name, h, wd, a.Kernel, a.Dilation, a.Pad, oh, ow)
	}
	l := &conv{
		x: x, w: w, b: b, gemm: c.Gemm, pool: c.Pool,
		inC: inC, h: h, wd: wd, outC: a.OutC, oh: oh, ow: ow,
		k: a.Kernel, stride: a.Stride, pad: a.Pad, dil: a.Dilation,
		groups: a.Groups, cg: inC / a.Groups, ocg: a.OutC / a.Groups,
		spatial: oh * ow,
	}
	l.kdim = l.cg * l.k * l.k
	switch {
	case a.Groups == inC && a.Groups > 1:
		l.mode = convDepthwise
	case a.Kernel == 1 && a.Stride == 1 && a.Pad == 0:
		l.mode = convPointwise
	default:
		l.mode = convIm2col
	}
	l.y = c.NewValue(name+":out", []int{n, a.OutC, oh, ow}, true)

	workers := c.Pool.Workers()
	var scratch int
	switch l.mode {
	case convIm2col:
		scratch = inC * l.k * l.k * l.spatial
		// Needs a non-negative transposed pad: pad <= dil*(k-1).
		l.gatherDX = l.stride == 1 && l.pad <= l.dil*(l.k-1)
		if l.gatherDX {
			scratch = max(scratch, a.OutC*l.k*l.k*h*wd)
			l.wFlip = make([]float32, len(w.Data))
		}
	case convDepthwise:
		l.dw = newDWPlan(l)
		scratch = l.dw.scratchLen
	}
	if scratch > 0 {
		l.cols = make([][]float32, workers)
		for i := range l.cols {
			l.cols[i] = make([]float32, scratch)
		}
	}
	l.chunks = min(n, max(convMinChunks, workers))
	l.dwAcc = make([][]float32, l.chunks)
	l.dbAcc = make([][]float32, l.chunks)
	for i := range l.dwAcc {
		l.dwAcc[i] = make([]float32, len(w.Data))
		l.dbAcc[i] = make([]float32, a.OutC)
	}
	if l.mode == convDepthwise {
		l.fwdFn = l.forwardDepthwise
		l.bwdFn = l.backwardDepthwiseChunk
	} else {
		l.fwdFn = l.forwardImage
		l.bwdFn = l.backwardChunk
	}
	return l, nil
}

func (l *conv) Output() *Value { return l.y }

func (l *conv) inputs() []*Value { return []*Value{l.x} }

func (l *conv) setAssign(x *Value, on bool) bool {
	if x != l.x {
		return false
	}
	l.assignX = on
	return true
}

func (l *conv) Forward(train bool) { l.pool.Run(l.x.N(), l.fwdFn) }

func (l *conv) Backward() {
	if l.gatherDX && l.x.Grad != nil {
		l.flipWeights()
	}
	n := l.x.N()
	l.nChunks = min(l.chunks, n)
	l.pool.Run(l.nChunks, l.bwdFn)
	// Fixed chunk order keeps the sums independent of scheduling.
	if l.w.Grad != nil {
		for c := 0; c < l.nChunks; c++ {
			addTo(l.w.Grad, l.dwAcc[c])
		}
	}
	if l.b != nil && l.b.Grad != nil {
		for c := 0; c < l.nChunks; c++ {
			addTo(l.b.Grad, l.dbAcc[c])
		}
	}
}

// flipWeights fills wFlip, per group, with the (InC/G) x (OutC/G*K*K)
// matrix wFlip[c][o][kh][kw] = w[o][c][K-1-kh][K-1-kw].
func (l *conv) flipWeights() {
	k := l.k
	kk := k * k
	for g := 0; g < l.groups; g++ {
		wg := l.w.Data[g*l.ocg*l.kdim : (g+1)*l.ocg*l.kdim]
		fg := l.wFlip[g*l.ocg*l.kdim : (g+1)*l.ocg*l.kdim]
		for o := 0; o < l.ocg; o++ {
			for c := 0; c < l.cg; c++ {
				src := wg[(o*l.cg+c)*kk : (o*l.cg+c+1)*kk]
				dst := fg[(c*l.ocg+o)*kk : (c*l.ocg+o+1)*kk]
				for t := range dst {
					dst[t] = src[kk-1-t]
				}
			}
		}
	}
}

// chunkImages is the range of images of backward chunk c.
func (l *conv) chunkImages(c int) (lo, hi int) {
	n := l.x.N()
	return c * n / l.nChunks, (c + 1) * n / l.nChunks
}

func addTo(dst, src []float32) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] += v
	}
}

func (l *conv) forwardImage(worker, i int) {
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	xn := l.x.Data[i*inSize : (i+1)*inSize]
	yn := l.y.Data[i*outSize : (i+1)*outSize]
	src := xn
	if l.mode == convIm2col {
		src = l.cols[worker]
		im2col(xn, l.inC, l.h, l.wd, l.k, l.stride, l.pad, l.dil, l.oh, l.ow, src)
	}
	wsz := l.ocg * l.kdim
	for g := 0; g < l.groups; g++ {
		l.gemm.Sgemm(false, false, l.ocg, l.spatial, l.kdim, 1, l.w.Data[g*wsz:(g+1)*wsz], l.kdim,
			src[g*l.kdim*l.spatial:(g+1)*l.kdim*l.spatial], l.spatial, 0, yn[g*l.ocg*l.spatial:], l.spatial)
	}
	if l.b != nil {
		for o, bv := range l.b.Data {
			row := yn[o*l.spatial : (o+1)*l.spatial]
			for j := range row {
				row[j] += bv
			}
		}
	}
}

func (l *conv) backwardChunk(worker, c int) {
	dw, db := l.dwAcc[c], l.dbAcc[c]
	clear(dw)
	clear(db)
	lo, hi := l.chunkImages(c)
	inSize, outSize := l.inC*l.h*l.wd, l.outC*l.spatial
	wsz, colsz, ysz := l.ocg*l.kdim, l.kdim*l.spatial, l.ocg*l.spatial
	for i := lo; i < hi; i++ {
		xn := l.x.Data[i*inSize : (i+1)*inSize]
		dyn := l.y.Grad[i*outSize : (i+1)*outSize]
		var dxn []float32
		// The pointwise and gathered input gradients are GEMMs whose
		// outputs tile dxn, so overwriting is beta = 0; col2im scatters and
		// needs dxn cleared first.
		dxBeta := float32(1)
		if l.x.Grad != nil {
			dxn = l.x.Grad[i*inSize : (i+1)*inSize]
			if l.assignX {
				dxBeta = 0
				if l.mode == convIm2col && !l.gatherDX {
					clear(dxn)
				}
			}
		}
		src := xn
		if l.mode == convIm2col {
			src = l.cols[worker]
			im2col(xn, l.inC, l.h, l.wd, l.k, l.stride, l.pad, l.dil, l.oh, l.ow, src)
		}
		for g := 0; g < l.groups; g++ {
			wg := l.w.Data[g*wsz : (g+1)*wsz]
			dyg := dyn[g*ysz : (g+1)*ysz]
			srcg := src[g*colsz : (g+1)*colsz]
			if l.w.Grad != nil {
				// dW_g += dY_g * col_g^T
				l.gemm.Sgemm(false, true, l.ocg, l.kdim, l.spatial, 1, dyg, l.spatial, srcg, l.spatial,
					1, dw[g*wsz:(g+1)*wsz], l.kdim)
			}
			if dxn == nil {
				continue
			}
			if l.mode == convPointwise {
				// dX_g += W_g^T * dY_g directly: the image is its own column matrix.
				l.gemm.Sgemm(true, false, l.kdim, l.spatial, l.ocg, 1, wg, l.kdim, dyg, l.spatial,
					dxBeta, dxn[g*colsz:(g+1)*colsz], l.spatial)
			} else if !l.gatherDX {
				// col_g is no longer needed: overwrite it with dcol_g = W_g^T * dY_g.
				l.gemm.Sgemm(true, false, l.kdim, l.spatial, l.ocg, 1, wg, l.kdim, dyg, l.spatial,
					0, srcg, l.spatial)
			}
		}
		if dxn != nil && l.mode == convIm2col {
			if l.gatherDX {
				l.gatherInputGrad(src, dyn, dxn, dxBeta)
			} else {
				col2im(src, l.inC, l.h, l.wd, l.k, l.stride, l.pad, l.dil, l.oh, l.ow, dxn)
			}
		}
		if l.b != nil {
			for o := range db {
				var s float32
				for _, v := range dyn[o*l.spatial : (o+1)*l.spatial] {
					s += v
				}
				db[o] += s
			}
		}
	}
}

// gatherInputGrad adds one image's input gradient into dxn (beta 1) or
// writes it there (beta 0): the weight gradient GEMMs are done with col, so
// it holds im2col(dY) now.
func (l *conv) gatherInputGrad(col, dyn, dxn []float32, beta float32) {
	hw := l.h * l.wd
	tpad := l.dil*(l.k-1) - l.pad
	im2col(dyn, l.outC, l.oh, l.ow, l.k, 1, tpad, l.dil, l.h, l.wd, col)
	depth := l.ocg * l.k * l.k
	for g := 0; g < l.groups; g++ {
		l.gemm.Sgemm(false, false, l.cg, hw, depth, 1, l.wFlip[g*l.cg*depth:(g+1)*l.cg*depth], depth,
			col[g*depth*hw:(g+1)*depth*hw], hw, beta, dxn[g*l.cg*hw:(g+1)*l.cg*hw], hw)
	}
}

// tapRange returns the outputs [lo, hi) of a row of out positions whose input
// position o*stride+off falls inside [0, in).
func tapRange(off, stride, in, out int) (lo, hi int) {
	if off < 0 {
		lo = (-off + stride - 1) / stride
	}
	if in-1-off < 0 {
		return 0, 0
	}
	hi = min(out, (in-1-off)/stride+1)
	if lo > hi {
		lo = hi
	}
	return lo, hi
}

// im2col lays out one image (c x h x w) as a (c*k*k) x (oh*ow) matrix whose
// row (ci, kh, kw) holds the input pixel under tap (kh, kw) for every output
// position, zero where the tap falls in the padding.
func im2col(x []float32, c, h, w, k, stride, pad, dil, oh, ow int, col []float32) {
	sp := oh * ow
	for ci := 0; ci < c; ci++ {
		xc := x[ci*h*w : (ci+1)*h*w]
		for kh := 0; kh < k; kh++ {
			for kw := 0; kw < k; kw++ {
				row := col[((ci*k+kh)*k+kw)*sp : ((ci*k+kh)*k+kw+1)*sp]
				off := kw*dil - pad
				lo, hi := tapRange(off, stride, w, ow)
				if stride == 1 && ow == w {
					im2colPlane(xc, row, h, w, oh, kh*dil-pad, off, lo, hi)
					continue
				}
				for y := 0; y < oh; y++ {
					dst := row[y*ow : (y+1)*ow]
					ih := y*stride - pad + kh*dil
					if ih < 0 || ih >= h {
						clear(dst)
						continue
					}
					src := xc[ih*w : (ih+1)*w]
					// Loops rather than clear: the borders are a float or two,
					// where a call costs more than the work.
					for j := range dst[:lo] {
						dst[j] = 0
					}
					for j := hi; j < len(dst); j++ {
						dst[j] = 0
					}
					if stride == 1 {
						copy(dst[lo:hi], src[lo+off:hi+off])
					} else {
						for j := lo; j < hi; j++ {
							dst[j] = src[j*stride+off]
						}
					}
				}
			}
		}
	}
}

// im2colPlane fills one im2col row (an oh x w plane) when the stride is 1
// and the output is as wide as the input: output (y, j) then reads input
// (y+dy, j+off), a constant shift, so all valid rows are one copy, after
// which the columns [0, lo) and [hi, w), copied from neighbouring rows, are
// zeroed. This replaces oh short copies, whose call overhead dominated.
func im2colPlane(xc, dst []float32, h, w, oh, dy, off, lo, hi int) {
	ylo, yhi := max(0, -dy), min(oh, h-dy)
	if ylo >= yhi || lo >= hi {
		clear(dst[:oh*w])
		return
	}
	clear(dst[:ylo*w])
	clear(dst[yhi*w : oh*w])
	start, end := ylo*w+lo, (yhi-1)*w+hi
	shift := dy*w + off
	copy(dst[start:end], xc[start+shift:end+shift])
	for y := ylo; y < yhi; y++ {
		r := dst[y*w : (y+1)*w]
		for j := range r[:lo] {
			r[j] = 0
		}
		for j := hi; j < w; j++ {
			r[j] = 0
		}
	}
}

// col2im is the adjoint of im2col: it ADDS each column-matrix entry into the
// input pixel it was copied from.
func col2im(col []float32, c, h, w, k, stride, pad, dil, oh, ow int, x []float32) {
	sp := oh * ow
	for ci := 0; ci < c; ci++ {
		xc := x[ci*h*w : (ci+1)*h*w]
		for kh := 0; kh < k; kh++ {
			for kw := 0; kw < k; kw++ {
				row := col[((ci*k+kh)*k+kw)*sp : ((ci*k+kh)*k+kw+1)*sp]
				off := kw*dil - pad
				lo, hi := tapRange(off, stride, w, ow)
				if lo >= hi {
					continue
				}
				for y := 0; y < oh; y++ {
					ih := y*stride - pad + kh*dil
					if ih < 0 || ih >= h {
						continue
					}
					src := row[y*ow+lo : y*ow+hi]
					dst := xc[ih*w : (ih+1)*w]
					if stride == 1 {
						dst = dst[lo+off : hi+off]
						dst = dst[:len(src)]
						for j, v := range src {
							dst[j] += v
						}
					} else {
						for j, v := range src {
							dst[(lo+j)*stride+off] += v
						}
					}
				}
			}
		}
	}
}
