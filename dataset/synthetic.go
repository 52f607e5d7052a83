package dataset

import (
	"fmt"
	"math"
)

// Synthetic generates a small learnable set for tests and smoke runs: each
// class has a smooth random template per channel (a 4x4 grid of random
// levels, bilinearly interpolated over the image) and every sample is its
// class template plus independent pixel noise. Classes are balanced (labels
// i mod classes, shuffled). The same arguments give the same bytes.
func Synthetic(n, c, h, w, classes int, seed uint64) (*Set, error) {
	switch {
	case n <= 0:
		return nil, fmt.Errorf("dataset synthetic: n = %d, want > 0", n)
	case c <= 0 || h <= 0 || w <= 0:
		return nil, fmt.Errorf("dataset synthetic: sample shape %dx%dx%d (CxHxW) has a non-positive dimension", c, h, w)
	case classes <= 0 || classes > 256:
		return nil, fmt.Errorf("dataset synthetic: classes = %d, want 1..256", classes)
	case int64(n)*int64(c)*int64(h)*int64(w) > 1<<31:
		return nil, fmt.Errorf("dataset synthetic: %d samples of %dx%dx%d is over 2 GiB", n, c, h, w)
	}
	const grid = 4 // template control points per side
	const noiseSigma = 30.0
	per := c * h * w
	templates := make([]float64, classes*per)
	tr := derive(tagSynthTemplate, seed)
	ctrl := make([]float64, grid*grid)
	for k := 0; k < classes; k++ {
		for ch := 0; ch < c; ch++ {
			for i := range ctrl {
				ctrl[i] = 40 + 175*tr.float64()
			}
			plane := templates[(k*c+ch)*h*w : (k*c+ch+1)*h*w]
			for y := 0; y < h; y++ {
				gy, fy := gridPos(y, h, grid)
				for x := 0; x < w; x++ {
					gx, fx := gridPos(x, w, grid)
					top := ctrl[gy*grid+gx]*(1-fx) + ctrl[gy*grid+min(gx+1, grid-1)]*fx
					bot := ctrl[min(gy+1, grid-1)*grid+gx]*(1-fx) + ctrl[min(gy+1, grid-1)*grid+min(gx+1, grid-1)]*fx
					plane[y*w+x] = top*(1-fy) + bot*fy
				}
			}
		}
	}

	s := &Set{
		Name: "synthetic", N: n, C: c, H: h, W: w, Classes: classes,
		Images: make([]uint8, n*per), Labels: make([]uint8, n),
		ClassNames: make([]string, classes),
	}
	for k := range s.ClassNames {
		s.ClassNames[k] = fmt.Sprintf("class%d", k)
	}
	for i := range s.Labels {
		s.Labels[i] = uint8(i % classes)
	}
	lr := derive(tagSynthLabels, seed)
	for i := n - 1; i > 0; i-- {
		j := lr.intn(i + 1)
		s.Labels[i], s.Labels[j] = s.Labels[j], s.Labels[i]
	}
	for i := 0; i < n; i++ {
		nr := derive(tagSynthNoise, seed, uint64(i))
		tpl := templates[int(s.Labels[i])*per : (int(s.Labels[i])+1)*per]
		img := s.Images[i*per : (i+1)*per]
		for p := range img {
			// Sum of four uniforms: cheap, bounded, close enough to normal.
			u := nr.float64() + nr.float64() + nr.float64() + nr.float64() - 2
			v := tpl[p] + u*noiseSigma*math.Sqrt(3)
			img[p] = uint8(math.Round(math.Max(0, math.Min(255, v))))
		}
	}
	return s, nil
}

// gridPos maps pixel i of size to a control-point cell and the fraction
// within it, spreading grid points evenly from the first to the last pixel.
func gridPos(i, size, grid int) (cell int, frac float64) {
	if size == 1 {
		return 0, 0
	}
	t := float64(i) / float64(size-1) * float64(grid-1)
	cell = int(t)
	if cell >= grid-1 {
		return grid - 1, 0
	}
	return cell, t - float64(cell)
}
