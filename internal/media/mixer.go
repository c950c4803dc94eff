package media

// Mixer mixes a conference: each participant hears the sum of everyone else. Sums are
// taken in 32 bits and saturated to int16 once, so that loud voices that cancel out
// are not distorted on the way (a chain of saturating 16-bit adds would clip early and
// depend on the order). The zero value is ready; a Mixer is not safe for concurrent use.
type Mixer struct {
	sum []int32 // reused across ticks
}

// Mix mixes one tick. in[i] is participant i's incoming frame, or nil when nothing
// arrived from them (silence); out[i] receives everyone else's sum and must be as long
// as the longest input frame, which is how many samples are written. in and out must
// have the same length; out[i] may not alias any in[j].
func (m *Mixer) Mix(out, in [][]int16) {
	if len(out) != len(in) {
		panic("media: Mixer.Mix: len(out) != len(in)")
	}
	n := 0
	for _, f := range in {
		n = max(n, len(f))
	}
	if cap(m.sum) < n {
		m.sum = make([]int32, n)
	}
	sum := m.sum[:n]
	clear(sum)
	for _, f := range in {
		for j, s := range f {
			sum[j] += int32(s)
		}
	}
	for i, f := range in {
		o := out[i][:n]
		for j := range o {
			v := sum[j]
			if j < len(f) {
				v -= int32(f[j])
			}
			o[j] = saturate(v)
		}
	}
}

func saturate(v int32) int16 {
	return int16(max(-32768, min(32767, v)))
}
