package media

import (
	"testing"
)

// g191Expand is ITU-T G.191's ulaw_expand, transcribed, to check the tables against.
func g191Expand(u byte) int16 {
	sign := 1
	if u < 0x80 {
		sign = -1
	}
	m := int(^u)
	exponent := (m >> 4) & 7
	segment := exponent + 1
	mantissa := m & 0x0f
	step := 4 << segment
	return int16(sign * ((0x80 << exponent) + step*mantissa + step/2 - 4*33))
}

func TestUlawKnownValues(t *testing.T) {
	// From G.711 table 2a and the G.191 reference: the extremes, both zeros, and the
	// first steps either side of zero.
	dec := map[byte]int16{0x00: -32124, 0x80: 32124, 0x7f: 0, 0xff: 0, 0xfe: 8, 0x7e: -8, 0xf0: 120, 0xef: 132, 0x70: -120}
	for u, want := range dec {
		if got := UlawToLinear(u); got != want {
			t.Errorf("decode %#02x = %d, want %d", u, got, want)
		}
	}
	enc := map[int16]byte{0: 0xff, -1: 0x7f, 32767: 0x80, -32768: 0x00, 32124: 0x80, -32124: 0x00, 8: 0xfe, -12: 0x7e, 120: 0xf0, 127: 0xef}
	for s, want := range enc {
		if got := LinearToUlaw(s); got != want {
			t.Errorf("encode %d = %#02x, want %#02x", s, got, want)
		}
	}
}

func TestUlawTables(t *testing.T) {
	for u := range 256 {
		if got, want := UlawToLinear(byte(u)), g191Expand(byte(u)); got != want {
			t.Errorf("decode %#02x = %d, G.191 gives %d", u, got, want)
		}
		// Every code but negative zero survives a round trip.
		if u != 0x7f {
			if got := LinearToUlaw(UlawToLinear(byte(u))); got != byte(u) {
				t.Errorf("encode(decode(%#02x)) = %#02x", u, got)
			}
		}
	}
	// Encoding picks the nearest level within the segment's step, and is monotonic.
	prev := UlawToLinear(LinearToUlaw(-32768))
	for s := -32768; s <= 32767; s++ {
		d := UlawToLinear(LinearToUlaw(int16(s)))
		if d < prev {
			t.Fatalf("not monotonic at %d", s)
		}
		prev = d
		mag := s
		if mag < 0 {
			mag = -mag
		}
		// Step size at this magnitude: 8 << segment (16-bit units); clip beyond 32124.
		step := 8
		for lim := 132 * 2; mag+132 >= lim && step < 1024; lim *= 2 {
			step *= 2
		}
		if mag <= 32124 {
			if diff := s - int(d); diff > step || diff < -step {
				t.Fatalf("%d decodes back as %d, more than a step (%d) away", s, d, step)
			}
		}
	}
}

func TestUlawSlices(t *testing.T) {
	pcm := []int16{0, 1000, -1000, 32767, -32768}
	u := EncodeUlaw(make([]byte, 8), pcm)
	if len(u) != len(pcm) {
		t.Fatalf("len %d", len(u))
	}
	back := DecodeUlaw(make([]int16, 8), u)
	for i := range pcm {
		if back[i] != UlawToLinear(LinearToUlaw(pcm[i])) {
			t.Errorf("sample %d", i)
		}
	}
}
