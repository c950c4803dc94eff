package media

// G.711 µ-law, as ITU-T G.711 (11/88) table 2a and the reference implementation in
// ITU-T G.191 (g711.c): a 14-bit linear sample, biased by 33, is coded as a sign bit, a
// 3-bit segment (exponent) and a 4-bit step (mantissa), and the whole byte is inverted.
// Both directions are table lookups: 256 entries to decode, 16384 (one per 14-bit
// sample) to encode, built once from the reference algorithm.

const (
	ulawBias = 0x84 // 33 in 14-bit units, shifted to 16-bit
	ulawClip = 8159 // largest 14-bit magnitude µ-law can code
)

var (
	ulawDecode [256]int16
	ulawEncode [1 << 14]byte // by 14-bit sample + 8192
)

func init() {
	for u := range 256 {
		ulawDecode[u] = ulawToLinearRef(byte(u))
	}
	for i := range ulawEncode {
		ulawEncode[i] = linearToUlawRef(int16(i - 8192))
	}
}

// ulawToLinearRef is G.191's ulaw2linear, giving a 16-bit sample (the 14-bit value
// shifted left by 2).
func ulawToLinearRef(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + ulawBias
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(ulawBias - t)
	}
	return int16(t - ulawBias)
}

// linearToUlawRef is G.191's linear2ulaw for a 14-bit sample in -8192..8191.
func linearToUlawRef(v int16) byte {
	mask := byte(0xff)
	x := int(v)
	if x < 0 {
		x = -x - 1 // one's complement, as G.191: -1 codes like 0
		mask = 0x7f
	}
	x = min(x, ulawClip) + ulawBias>>2
	seg := 0
	for t := x >> 6; t != 0; t >>= 1 {
		seg++
	}
	if seg >= 8 {
		return 0x7f ^ mask
	}
	return byte(seg<<4|(x>>(seg+1))&0x0f) ^ mask
}

// LinearToUlaw returns the µ-law code of a 16-bit linear sample (its top 14 bits count).
func LinearToUlaw(s int16) byte { return ulawEncode[int(s>>2)+8192] }

// UlawToLinear returns the 16-bit linear sample of a µ-law code.
func UlawToLinear(u byte) int16 { return ulawDecode[u] }

// EncodeUlaw codes pcm into dst, which must be at least as long, and returns
// dst[:len(pcm)].
func EncodeUlaw(dst []byte, pcm []int16) []byte {
	dst = dst[:len(pcm)]
	for i, s := range pcm {
		dst[i] = ulawEncode[int(s>>2)+8192]
	}
	return dst
}

// DecodeUlaw decodes ulaw into dst, which must be at least as long, and returns
// dst[:len(ulaw)].
func DecodeUlaw(dst []int16, ulaw []byte) []int16 {
	dst = dst[:len(ulaw)]
	for i, u := range ulaw {
		dst[i] = ulawDecode[u]
	}
	return dst
}
