package media

import (
	"slices"
	"testing"
)

func TestMixer(t *testing.T) {
	var m Mixer
	in := [][]int16{
		{100, 30000, -30000, 1},
		{200, 30000, -30000, 2},
		{300, -30000, 5000, 4},
		nil, // nothing arrived from participant 3 this tick
	}
	out := make([][]int16, len(in))
	for i := range out {
		out[i] = make([]int16, 4)
	}
	m.Mix(out, in)
	want := [][]int16{
		{500, 0, -25000, 6},     // 2 + 3
		{400, 0, -25000, 5},     // 1 + 3
		{300, 32767, -32768, 3}, // 1 + 2, saturated both ways
		{600, 30000, -32768, 7}, // everyone: 30000+30000-30000 sums in 32 bits
	}
	for i := range want {
		if !slices.Equal(out[i], want[i]) {
			t.Errorf("participant %d hears %v, want %v", i, out[i], want[i])
		}
	}
	// Nobody hears themselves: alone in a conference is silence.
	solo := [][]int16{{1234, -5}}
	so := [][]int16{make([]int16, 2)}
	m.Mix(so, solo)
	if !slices.Equal(so[0], []int16{0, 0}) {
		t.Errorf("alone: %v, want silence", so[0])
	}
}

func BenchmarkMixer(b *testing.B) {
	var m Mixer
	const n = 8
	in, out := make([][]int16, n), make([][]int16, n)
	for i := range in {
		in[i], out[i] = expectedFrames(&Sine{Freq: float64(200 + 100*i)}, 1)[0], make([]int16, FrameSamples)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Mix(out, in)
	}
}
