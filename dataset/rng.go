package dataset

import "math/bits"

// rng is splitmix64: a value type with one word of state, so a generator can
// be derived for every (seed, epoch, position) on the stack, without
// allocating, and the random stream of one sample never depends on which
// samples were drawn before it (which is what makes resuming mid-epoch
// reproduce an uninterrupted run).
type rng struct{ state uint64 }

const golden = 0x9e3779b97f4a7c15

func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// derive returns a generator whose stream is a function of the key words
// only; the tag keeps streams for different purposes (shuffle, augmentation,
// synthetic data) apart even when the other words coincide.
func derive(tag uint64, words ...uint64) rng {
	h := mix64(tag*golden + 1)
	for _, w := range words {
		h = mix64(h + golden + w)
	}
	return rng{state: h}
}

func (r *rng) next() uint64 {
	r.state += golden
	return mix64(r.state)
}

// intn returns a uniform integer in [0, n), n > 0, without modulo bias
// (Lemire's multiply-and-reject).
func (r *rng) intn(n int) int {
	un := uint64(n)
	hi, lo := bits.Mul64(r.next(), un)
	if lo < un {
		thresh := -un % un
		for lo < thresh {
			hi, lo = bits.Mul64(r.next(), un)
		}
	}
	return int(hi)
}

// float64 returns a uniform value in [0, 1).
func (r *rng) float64() float64 { return float64(r.next()>>11) / (1 << 53) }

// Stream tags for derive.
const (
	tagShuffle uint64 = iota + 1
	tagAugment
	tagSplit
	tagSynthTemplate
	tagSynthLabels
	tagSynthNoise
)
