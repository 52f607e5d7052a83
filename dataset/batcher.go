package dataset

import (
	"fmt"
	"math"
)

// Augment is the training-time augmentation, applied in torchvision's order:
// random crop after zero padding by CropPad pixels on each side, random
// horizontal flip (probability 1/2), both on the raw pixels; then
// normalisation; then cutout, which sets a Cutout x Cutout square (centre
// uniform over the image, clipped at the borders) to 0 in normalised space.
// The zero value is no augmentation.
type Augment struct {
	CropPad int
	Flip    bool
	Cutout  int
}

// Normalize maps a byte v of channel c to (v/255 - Mean[c]) / Std[c]. Empty
// slices mean mean 0, std 1 (pixels scaled to [0,1] only).
type Normalize struct {
	Mean, Std []float32
}

// Batcher fills float32 NCHW batches from a set's samples at given indices.
// A training batcher shuffles every epoch with an order derived from (seed,
// epoch) and draws each sample's augmentation from (seed, epoch, position in
// the epoch), so any epoch, and any batch within it, can be reproduced
// without replaying the ones before: StartEpoch(e) then Skip(k) resumes
// exactly where an uninterrupted run would be. It is not safe for
// concurrent use.
type Batcher struct {
	set     *Set
	indices []int
	order   []int // this epoch's sample order
	batch   int
	aug     Augment
	augment bool      // whether any augmentation is on (eval batchers: never)
	lut     []float32 // C*256 normalised value of every byte, per channel
	seed    uint64
	shuffle bool
	epoch   int
	pos     int // next position in order
}

// NewBatcher returns a shuffling, augmenting batcher over s's samples at
// indices, positioned at the start of epoch 0.
func NewBatcher(s *Set, indices []int, batch int, aug Augment, norm Normalize, seed uint64) (*Batcher, error) {
	return newBatcher(s, indices, batch, aug, norm, seed, true)
}

// NewEvalBatcher returns a batcher for evaluation: samples in the order of
// indices, no augmentation, only normalisation.
func NewEvalBatcher(s *Set, indices []int, batch int, norm Normalize) (*Batcher, error) {
	return newBatcher(s, indices, batch, Augment{}, norm, 0, false)
}

func newBatcher(s *Set, indices []int, batch int, aug Augment, norm Normalize, seed uint64, shuffle bool) (*Batcher, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("batcher: %w", err)
	}
	switch {
	case batch <= 0:
		return nil, fmt.Errorf("batcher for %s: batch size %d, want > 0", s.Name, batch)
	case len(indices) == 0:
		return nil, fmt.Errorf("batcher for %s: no sample indices", s.Name)
	case aug.CropPad < 0:
		return nil, fmt.Errorf("batcher for %s: augment CropPad %d, want >= 0", s.Name, aug.CropPad)
	case aug.Cutout < 0:
		return nil, fmt.Errorf("batcher for %s: augment Cutout %d, want >= 0", s.Name, aug.Cutout)
	}
	for p, i := range indices {
		if i < 0 || i >= s.N {
			return nil, fmt.Errorf("batcher for %s: index %d (position %d) out of range [0,%d)", s.Name, i, p, s.N)
		}
	}
	lut, err := normLUT(s, norm)
	if err != nil {
		return nil, err
	}
	b := &Batcher{
		set:     s,
		indices: append([]int(nil), indices...),
		order:   make([]int, len(indices)),
		batch:   batch,
		aug:     aug,
		augment: aug.CropPad > 0 || aug.Flip || aug.Cutout > 0,
		lut:     lut,
		seed:    seed,
		shuffle: shuffle,
	}
	b.StartEpoch(0)
	return b, nil
}

// normLUT tabulates the normalised value of each byte per channel, so the
// per-pixel work is one table load.
func normLUT(s *Set, norm Normalize) ([]float32, error) {
	if len(norm.Mean) != len(norm.Std) || (len(norm.Mean) != 0 && len(norm.Mean) != s.C) {
		return nil, fmt.Errorf("batcher for %s: normalize has %d means and %d stds, want %d of each (one per channel) or none", s.Name, len(norm.Mean), len(norm.Std), s.C)
	}
	lut := make([]float32, s.C*256)
	for c := 0; c < s.C; c++ {
		mean, std := 0.0, 1.0
		if len(norm.Mean) != 0 {
			mean, std = float64(norm.Mean[c]), float64(norm.Std[c])
		}
		if !(std > 0) || math.IsInf(std, 0) || math.IsNaN(mean) || math.IsInf(mean, 0) {
			return nil, fmt.Errorf("batcher for %s: normalize channel %d has mean %v std %v, want finite values and std > 0", s.Name, c, mean, std)
		}
		for v := 0; v < 256; v++ {
			lut[c*256+v] = float32((float64(v)/255 - mean) / std)
		}
	}
	return lut, nil
}

// StartEpoch rewinds to the first batch of the given epoch, whose order
// (when shuffling) depends only on the seed and epoch.
func (b *Batcher) StartEpoch(epoch int) {
	b.epoch = epoch
	b.pos = 0
	copy(b.order, b.indices)
	if !b.shuffle {
		return
	}
	r := derive(tagShuffle, b.seed, uint64(epoch))
	for i := len(b.order) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		b.order[i], b.order[j] = b.order[j], b.order[i]
	}
}

// Skip moves past the next k batches without filling them (k <= 0 does
// nothing); the batches after them are the same as without skipping.
func (b *Batcher) Skip(k int) {
	if k <= 0 {
		return
	}
	if k > b.Batches() {
		k = b.Batches()
	}
	b.pos = min(len(b.order), b.pos+k*b.batch)
}

// Batches is the number of batches per epoch (the last may be short).
func (b *Batcher) Batches() int { return (len(b.order) + b.batch - 1) / b.batch }

// Done is the number of batches already returned (or skipped) this epoch.
func (b *Batcher) Done() int { return (b.pos + b.batch - 1) / b.batch }

// Epoch is the current epoch.
func (b *Batcher) Epoch() int { return b.epoch }

// Len is the number of samples per epoch.
func (b *Batcher) Len() int { return len(b.order) }

// BatchSize is the maximum number of samples per batch.
func (b *Batcher) BatchSize() int { return b.batch }

// SampleSize is the number of float32 values per sample (C*H*W); x passed
// to Next needs BatchSize()*SampleSize().
func (b *Batcher) SampleSize() int { return b.set.SampleSize() }

// Next fills x (NCHW) and labels with the next batch and returns its size;
// ok is false, and nothing is filled, once the epoch is exhausted. It
// allocates nothing. x must hold BatchSize()*SampleSize() values and labels
// BatchSize(): a shorter buffer is a programming error and panics, as a
// slice index out of range would.
func (b *Batcher) Next(x []float32, labels []int32) (n int, ok bool) {
	n = min(b.batch, len(b.order)-b.pos)
	if n <= 0 {
		return 0, false
	}
	per := b.set.SampleSize()
	if len(x) < n*per || len(labels) < n {
		panic(fmt.Sprintf("dataset: Batcher.Next: buffers hold %d values and %d labels, the batch needs %d and %d", len(x), len(labels), n*per, n))
	}
	for j := 0; j < n; j++ {
		p := b.pos + j
		i := b.order[p]
		b.fill(x[j*per:(j+1)*per], i, p)
		labels[j] = int32(b.set.Labels[i])
	}
	b.pos += n
	return n, true
}

// fill writes sample i, at position p of the epoch, into dst.
func (b *Batcher) fill(dst []float32, i, p int) {
	s := b.set
	per := s.SampleSize()
	src := s.Images[i*per : (i+1)*per]
	if !b.augment {
		plane := s.H * s.W
		for c := 0; c < s.C; c++ {
			lut := b.lut[c*256 : (c+1)*256]
			d := dst[c*plane : (c+1)*plane]
			for k, v := range src[c*plane : (c+1)*plane] {
				d[k] = lut[v]
			}
		}
		return
	}
	// Every draw is made whether or not its augmentation is on, in a fixed
	// order, so turning one augmentation on or off leaves the others' draws
	// unchanged.
	r := derive(tagAugment, b.seed, uint64(b.epoch), uint64(p))
	pad := b.aug.CropPad
	dy := r.intn(2*pad+1) - pad // crop offset relative to the unpadded image
	dx := r.intn(2*pad+1) - pad
	flip := r.next()>>63 == 1 && b.aug.Flip
	cy, cx := r.intn(s.H), r.intn(s.W)
	cropFlip(dst, src, b.lut, s.C, s.H, s.W, dy, dx, flip)
	if l := b.aug.Cutout; l > 0 {
		cutout(dst, s.C, s.H, s.W, cy, cx, l)
	}
}

// cropFlip writes out[c][y][x] = norm(in[c][y+dy][x'+dx]) with x' = W-1-x
// when flipping and x otherwise, and norm(0) (zero padding) where the
// source falls outside the image.
func cropFlip(dst []float32, src []uint8, lut []float32, C, H, W, dy, dx int, flip bool) {
	// Columns x whose source column lies inside the image.
	x0, x1 := max(0, -dx), min(W, W-dx)
	if flip {
		x0, x1 = max(0, dx), min(W, W+dx)
	}
	for c := 0; c < C; c++ {
		l := lut[c*256 : (c+1)*256]
		zero := l[0]
		for y := 0; y < H; y++ {
			row := dst[(c*H+y)*W : (c*H+y+1)*W]
			sy := y + dy
			if sy < 0 || sy >= H || x0 >= x1 {
				for x := range row {
					row[x] = zero
				}
				continue
			}
			srow := src[(c*H+sy)*W : (c*H+sy+1)*W]
			for x := 0; x < x0; x++ {
				row[x] = zero
			}
			if flip {
				for x := x0; x < x1; x++ {
					row[x] = l[srow[W-1-x+dx]]
				}
			} else {
				for x := x0; x < x1; x++ {
					row[x] = l[srow[x+dx]]
				}
			}
			for x := x1; x < W; x++ {
				row[x] = zero
			}
		}
	}
}

// cutout zeroes, in every channel, the l x l square whose top-left corner is
// (cy-l/2, cx-l/2), clipped to the image (for even l this is DARTS' cutout).
func cutout(dst []float32, C, H, W, cy, cx, l int) {
	y0, y1 := max(0, cy-l/2), min(H, cy-l/2+l)
	x0, x1 := max(0, cx-l/2), min(W, cx-l/2+l)
	for c := 0; c < C; c++ {
		for y := y0; y < y1; y++ {
			row := dst[(c*H+y)*W : (c*H+y+1)*W]
			for x := x0; x < x1; x++ {
				row[x] = 0
			}
		}
	}
}
