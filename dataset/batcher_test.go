package dataset

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// bytesOf maps normalised values back to bytes for Normalize{} (v/255).
func bytesOf(x []float32) []int {
	out := make([]int, len(x))
	for i, v := range x {
		out[i] = int(math.Round(float64(v) * 255))
	}
	return out
}

func TestCropFlipCutoutHandMade(t *testing.T) {
	// One 3x3 channel holding 1..9; identity normalisation up to 1/255.
	src := []uint8{1, 2, 3, 4, 5, 6, 7, 8, 9}
	lut, err := normLUT(&Set{C: 1}, Normalize{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		dy, dx int
		flip   bool
		want   []int
	}{
		{"identity", 0, 0, false, []int{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"down one", 1, 0, false, []int{4, 5, 6, 7, 8, 9, 0, 0, 0}},
		{"up one", -1, 0, false, []int{0, 0, 0, 1, 2, 3, 4, 5, 6}},
		{"left pad", 0, -1, false, []int{0, 1, 2, 0, 4, 5, 0, 7, 8}},
		{"flip", 0, 0, true, []int{3, 2, 1, 6, 5, 4, 9, 8, 7}},
		// Crop first ([[2 3 0] [5 6 0] [8 9 0]]), then flip.
		{"crop then flip", 0, 1, true, []int{0, 3, 2, 0, 6, 5, 0, 9, 8}},
		{"corner", -1, 1, false, []int{0, 0, 0, 2, 3, 0, 5, 6, 0}},
		{"all padding", 3, 0, false, []int{0, 0, 0, 0, 0, 0, 0, 0, 0}},
	}
	for _, tc := range cases {
		dst := make([]float32, 9)
		cropFlip(dst, src, lut, 1, 3, 3, tc.dy, tc.dx, tc.flip)
		if got := bytesOf(dst); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	// Two channels: each plane moves with its own values.
	src2 := append(slices.Clone(src), 11, 12, 13, 14, 15, 16, 17, 18, 19)
	lut2, _ := normLUT(&Set{C: 2}, Normalize{})
	dst2 := make([]float32, 18)
	cropFlip(dst2, src2, lut2, 2, 3, 3, 0, 0, true)
	if got := bytesOf(dst2); !slices.Equal(got, []int{3, 2, 1, 6, 5, 4, 9, 8, 7, 13, 12, 11, 16, 15, 14, 19, 18, 17}) {
		t.Errorf("two-channel flip: %v", got)
	}

	cut := []struct {
		name       string
		cy, cx, l  int
		zeroedMask []int
	}{
		{"2 at centre", 1, 1, 2, []int{1, 1, 0, 1, 1, 0, 0, 0, 0}},
		{"2 at corner, clipped", 0, 0, 2, []int{1, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"3 at centre", 1, 1, 3, []int{1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"3 at bottom right, clipped", 2, 2, 3, []int{0, 0, 0, 0, 1, 1, 0, 1, 1}},
		{"1", 2, 0, 1, []int{0, 0, 0, 0, 0, 0, 1, 0, 0}},
	}
	for _, tc := range cut {
		dst := make([]float32, 18)
		for i := range dst {
			dst[i] = -1 // cutout writes 0 whatever normalisation maps padding to
		}
		cutout(dst, 2, 3, 3, tc.cy, tc.cx, tc.l)
		for i, v := range dst {
			want := float32(-1)
			if tc.zeroedMask[i%9] == 1 {
				want = 0
			}
			if v != want {
				t.Errorf("cutout %s: element %d is %v, want %v", tc.name, i, v, want)
			}
		}
	}
}

// augmentReference applies crop (offset oy, ox into the zero-padded image),
// flip, normalisation and cutout the plain way, on one sample.
func augmentReference(src []uint8, C, H, W, pad, oy, ox int, flip bool, cy, cx, l int, mean, std []float32) []float32 {
	PH, PW := H+2*pad, W+2*pad
	padded := make([]uint8, C*PH*PW)
	for c := 0; c < C; c++ {
		for y := 0; y < H; y++ {
			for x := 0; x < W; x++ {
				padded[(c*PH+y+pad)*PW+x+pad] = src[(c*H+y)*W+x]
			}
		}
	}
	out := make([]float32, C*H*W)
	for c := 0; c < C; c++ {
		for y := 0; y < H; y++ {
			for x := 0; x < W; x++ {
				cx0 := x
				if flip {
					cx0 = W - 1 - x
				}
				v := padded[(c*PH+y+oy)*PW+cx0+ox]
				out[(c*H+y)*W+x] = float32((float64(v)/255 - float64(mean[c])) / float64(std[c]))
			}
		}
	}
	if l > 0 {
		for c := 0; c < C; c++ {
			for y := 0; y < H; y++ {
				for x := 0; x < W; x++ {
					if y >= cy-l/2 && y < cy-l/2+l && x >= cx-l/2 && x < cx-l/2+l {
						out[(c*H+y)*W+x] = 0
					}
				}
			}
		}
	}
	return out
}

func TestAugmentMatchesReference(t *testing.T) {
	const C, H, W, pad, l = 2, 4, 5, 1, 2
	s := &Set{Name: "tiny", N: 1, C: C, H: H, W: W, Classes: 1, Labels: []uint8{0}}
	for i := 0; i < C*H*W; i++ {
		s.Images = append(s.Images, uint8(10+i*6))
	}
	mean, std := []float32{0.5, 0.25}, []float32{0.5, 0.2}
	const draws = 600
	b, err := NewBatcher(s, make([]int, draws), 50, Augment{CropPad: pad, Flip: true, Cutout: l}, Normalize{mean, std}, 3)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 50*C*H*W)
	labels := make([]int32, 50)
	offsets := map[[2]int]int{}
	centres := map[[2]int]int{}
	flips := 0
	for {
		n, ok := b.Next(x, labels)
		if !ok {
			break
		}
		for j := 0; j < n; j++ {
			got := x[j*C*H*W : (j+1)*C*H*W]
			matched := false
			// Search every parameter combination: the batcher's output must
			// be the reference for one of them.
			for oy := 0; oy <= 2*pad && !matched; oy++ {
				for ox := 0; ox <= 2*pad && !matched; ox++ {
					for _, flip := range []bool{false, true} {
						for cy := 0; cy < H && !matched; cy++ {
							for cx := 0; cx < W && !matched; cx++ {
								want := augmentReference(s.Images, C, H, W, pad, oy, ox, flip, cy, cx, l, mean, std)
								if maxAbsDiff(got, want) < 1e-5 {
									matched = true
									offsets[[2]int{oy, ox}]++
									centres[[2]int{cy, cx}]++
									if flip {
										flips++
									}
								}
							}
						}
						if matched {
							break
						}
					}
				}
			}
			if !matched {
				t.Fatalf("sample %d matches no crop/flip/cutout of the reference: %v", j, got)
			}
		}
	}
	if len(offsets) != 9 {
		t.Errorf("saw %d of the 9 crop offsets: %v", len(offsets), offsets)
	}
	if len(centres) != H*W {
		t.Errorf("saw %d of the %d cutout centres", len(centres), H*W)
	}
	if f := float64(flips) / draws; f < 0.42 || f > 0.58 {
		t.Errorf("flip rate %.3f, want about 0.5", f)
	}
}

func maxAbsDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// indexSet has N samples of 1x1x2 whose pixels encode the sample index.
func indexSet(n int) *Set {
	s := &Set{Name: "index", N: n, C: 1, H: 1, W: 2, Classes: 10}
	for i := 0; i < n; i++ {
		s.Images = append(s.Images, uint8(i%256), uint8(i/256))
		s.Labels = append(s.Labels, uint8(i%10))
	}
	return s
}

// epochIndices runs one epoch and returns the decoded sample indices and
// the batch sizes.
func epochIndices(t *testing.T, b *Batcher, s *Set) (idx, sizes []int) {
	t.Helper()
	x := make([]float32, b.BatchSize()*b.SampleSize())
	labels := make([]int32, b.BatchSize())
	for {
		n, ok := b.Next(x, labels)
		if !ok {
			return idx, sizes
		}
		sizes = append(sizes, n)
		px := bytesOf(x[:n*2])
		for j := 0; j < n; j++ {
			i := px[2*j] + 256*px[2*j+1]
			if int(labels[j]) != int(s.Labels[i]) {
				t.Fatalf("sample %d has label %d, want %d", i, labels[j], s.Labels[i])
			}
			idx = append(idx, i)
		}
	}
}

func TestBatcherEpochCoverage(t *testing.T) {
	s := indexSet(300)
	sp, err := SplitTrainVal(s, 47, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBatcher(s, sp.Train, 32, Augment{}, Normalize{}, 9)
	if err != nil {
		t.Fatal(err)
	}
	if b.Batches() != 8 || b.Len() != 253 {
		t.Fatalf("Batches %d Len %d, want 8 and 253", b.Batches(), b.Len())
	}
	var orders [][]int
	for epoch := 0; epoch < 3; epoch++ {
		b.StartEpoch(epoch)
		idx, sizes := epochIndices(t, b, s)
		if !slices.Equal(sizes, []int{32, 32, 32, 32, 32, 32, 32, 29}) {
			t.Fatalf("epoch %d batch sizes %v", epoch, sizes)
		}
		sorted := slices.Sorted(slices.Values(idx))
		if !slices.Equal(sorted, sp.Train) {
			t.Fatalf("epoch %d did not visit every training index exactly once", epoch)
		}
		if slices.Equal(idx, sp.Train) {
			t.Fatalf("epoch %d was not shuffled", epoch)
		}
		orders = append(orders, idx)
		if b.Done() != b.Batches() {
			t.Fatalf("Done %d after the epoch, want %d", b.Done(), b.Batches())
		}
	}
	if slices.Equal(orders[0], orders[1]) || slices.Equal(orders[1], orders[2]) {
		t.Fatal("epochs repeat the same order")
	}

	// Eval batchers keep the given order.
	e, err := NewEvalBatcher(s, sp.Val, 10, Normalize{})
	if err != nil {
		t.Fatal(err)
	}
	idx, sizes := epochIndices(t, e, s)
	if !slices.Equal(idx, sp.Val) || !slices.Equal(sizes, []int{10, 10, 10, 10, 7}) {
		t.Fatalf("eval order %v sizes %v, want the validation indices in order", idx, sizes)
	}
}

// collectEpoch returns copies of every batch of one epoch.
func collectEpoch(b *Batcher) (xs [][]float32, ls [][]int32) {
	x := make([]float32, b.BatchSize()*b.SampleSize())
	labels := make([]int32, b.BatchSize())
	for {
		n, ok := b.Next(x, labels)
		if !ok {
			return xs, ls
		}
		xs = append(xs, slices.Clone(x[:n*b.SampleSize()]))
		ls = append(ls, slices.Clone(labels[:n]))
	}
}

func TestBatcherDeterminismAndResume(t *testing.T) {
	s, err := Synthetic(100, 3, 8, 8, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	mean, std := s.Stats()
	aug := Augment{CropPad: 2, Flip: true, Cutout: 3}
	mk := func(seed uint64) *Batcher {
		b, err := NewBatcher(s, s.Indices(), 16, aug, Normalize{mean, std}, seed)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b1, b2, other := mk(5), mk(5), mk(6)
	for epoch := 0; epoch < 2; epoch++ {
		b1.StartEpoch(epoch)
		b2.StartEpoch(epoch)
		x1, l1 := collectEpoch(b1)
		x2, l2 := collectEpoch(b2)
		for k := range x1 {
			if !slices.Equal(x1[k], x2[k]) || !slices.Equal(l1[k], l2[k]) {
				t.Fatalf("epoch %d batch %d differs between two batchers with the same seed", epoch, k)
			}
		}
		other.StartEpoch(epoch)
		xo, _ := collectEpoch(other)
		if slices.Equal(xo[0], x1[0]) {
			t.Fatalf("epoch %d: a different seed gave the same first batch", epoch)
		}
	}

	// Resume mid-epoch: a fresh batcher started at epoch 3 and skipping 2
	// batches continues exactly like an uninterrupted run.
	b1.StartEpoch(3)
	full, fullL := collectEpoch(b1)
	r := mk(5)
	r.StartEpoch(3)
	r.Skip(2)
	if r.Done() != 2 || r.Epoch() != 3 {
		t.Fatalf("after Skip(2): Done %d Epoch %d", r.Done(), r.Epoch())
	}
	rest, restL := collectEpoch(r)
	if len(rest) != len(full)-2 {
		t.Fatalf("resumed run has %d batches, want %d", len(rest), len(full)-2)
	}
	for k := range rest {
		if !slices.Equal(rest[k], full[k+2]) || !slices.Equal(restL[k], fullL[k+2]) {
			t.Fatalf("resumed batch %d differs from batch %d of the uninterrupted epoch", k, k+2)
		}
	}
	r.StartEpoch(3)
	r.Skip(100)
	if _, ok := r.Next(make([]float32, 16*s.SampleSize()), make([]int32, 16)); ok {
		t.Fatal("Next returned a batch after skipping past the end")
	}
}

func TestEvalBatcherValues(t *testing.T) {
	s := &Set{Name: "two", N: 2, C: 2, H: 1, W: 2, Classes: 2,
		Images: []uint8{0, 255, 51, 102, 255, 0, 0, 0}, Labels: []uint8{1, 0}}
	b, err := NewEvalBatcher(s, []int{1, 0}, 4, Normalize{Mean: []float32{0.5, 0.2}, Std: []float32{0.5, 0.4}})
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 4*4)
	labels := make([]int32, 4)
	n, ok := b.Next(x, labels)
	if !ok || n != 2 {
		t.Fatalf("n=%d ok=%v", n, ok)
	}
	// Sample 1 then sample 0; channel 0 is (v/255-0.5)/0.5, channel 1 (v/255-0.2)/0.4.
	want := []float32{1, -1, -0.5, -0.5, -1, 1, -0.5 + 0.5, (0.4 - 0.2) / 0.4}
	if d := maxAbsDiff(x[:8], want); d > 1e-6 {
		t.Fatalf("values %v, want %v", x[:8], want)
	}
	if labels[0] != 0 || labels[1] != 1 {
		t.Fatalf("labels %v", labels[:2])
	}
}

func TestBatcherAllocs(t *testing.T) {
	s, err := Synthetic(70, 1, 28, 28, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	mean, std := s.Stats()
	b, err := NewBatcher(s, s.Indices(), 16, Augment{CropPad: 4, Flip: true, Cutout: 8}, Normalize{mean, std}, 1)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 16*s.SampleSize())
	labels := make([]int32, 16)
	epoch := 0
	allocs := testing.AllocsPerRun(50, func() {
		if _, ok := b.Next(x, labels); !ok {
			epoch++
			b.StartEpoch(epoch)
		}
	})
	if allocs != 0 {
		t.Fatalf("Next/StartEpoch allocate %v times per call, want 0", allocs)
	}
}

func TestBatcherErrors(t *testing.T) {
	s := indexSet(10)
	norm := Normalize{}
	cases := []struct {
		name    string
		indices []int
		batch   int
		aug     Augment
		norm    Normalize
		want    string
	}{
		{"batch 0", s.Indices(), 0, Augment{}, norm, "batch size 0"},
		{"no indices", nil, 4, Augment{}, norm, "no sample indices"},
		{"index out of range", []int{1, 10}, 4, Augment{}, norm, "index 10 (position 1) out of range"},
		{"negative pad", s.Indices(), 4, Augment{CropPad: -1}, norm, "CropPad -1"},
		{"negative cutout", s.Indices(), 4, Augment{Cutout: -2}, norm, "Cutout -2"},
		{"norm length", s.Indices(), 4, Augment{}, Normalize{Mean: []float32{0, 0}, Std: []float32{1, 1}}, "2 means and 2 stds, want 1"},
		{"zero std", s.Indices(), 4, Augment{}, Normalize{Mean: []float32{0}, Std: []float32{0}}, "std > 0"},
	}
	for _, tc := range cases {
		_, err := NewBatcher(s, tc.indices, tc.batch, tc.aug, tc.norm, 1)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "index") {
			t.Errorf("%s: error %v should name the set and say %q", tc.name, err, tc.want)
		}
	}
	bad := indexSet(3)
	bad.Labels = bad.Labels[:2]
	if _, err := NewEvalBatcher(bad, []int{0}, 1, norm); err == nil || !strings.Contains(err.Error(), "len(Labels)") {
		t.Errorf("inconsistent set: %v", err)
	}
}

// BenchmarkBatcherFashionMNIST fills batches of 128 Fashion-MNIST-sized
// images with full augmentation (pad-4 crop, flip, cutout 16).
func BenchmarkBatcherFashionMNIST(b *testing.B) {
	benchBatcher(b, 1, 28, 28, Augment{CropPad: 4, Flip: true, Cutout: 16})
}

// BenchmarkBatcherCIFAR is the same at CIFAR-10's size, for comparison.
func BenchmarkBatcherCIFAR(b *testing.B) {
	benchBatcher(b, 3, 32, 32, Augment{CropPad: 4, Flip: true, Cutout: 16})
}

// BenchmarkBatcherFashionMNISTEval has no augmentation (normalisation only).
func BenchmarkBatcherFashionMNISTEval(b *testing.B) {
	benchBatcher(b, 1, 28, 28, Augment{})
}

func benchBatcher(b *testing.B, c, h, w int, aug Augment) {
	const batch = 128
	s, err := Synthetic(2048, c, h, w, 10, 1)
	if err != nil {
		b.Fatal(err)
	}
	mean, std := s.Stats()
	bt, err := NewBatcher(s, s.Indices(), batch, aug, Normalize{mean, std}, 1)
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float32, batch*s.SampleSize())
	labels := make([]int32, batch)
	epoch := 0
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := bt.Next(x, labels); !ok {
			epoch++
			bt.StartEpoch(epoch)
			bt.Next(x, labels)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
}
