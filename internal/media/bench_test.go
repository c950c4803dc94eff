package media

import (
	"bytes"
	"log/slog"
	"testing"
)

// BenchmarkSealOpen seals one 20 ms audio packet and opens it, as one frame costs the
// two ends of a call.
func BenchmarkSealOpen(b *testing.B) {
	caller, callee := mustCipher(b, true), mustCipher(b, false)
	p := Packet{Type: TypeAudio, Timestamp: 160, Payload: bytes.Repeat([]byte{0x55}, FrameSamples)}
	buf := make([]byte, 0, MaxPacketLen)
	b.SetBytes(FrameSamples)
	b.ReportAllocs()
	for b.Loop() {
		p.Seq++
		pkt, err := caller.Seal(buf[:0], &p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := callee.Open(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionFrame is the per-frame cost of a call, both ends: the caller reads a
// frame from its source, encodes, seals and queues it; the callee authenticates it,
// checks the replay window, buffers it and plays a frame out (decode included). Probes
// are off, so this is the steady state.
func BenchmarkSessionFrame(b *testing.B) {
	sm := newSim(b, 1, func(caller bool, c *Config) {
		c.Logger = slog.New(slog.DiscardHandler)
		c.ProbeInterval = 1 << 62
		c.DeadAfter = 1 << 62
		if caller {
			c.Source = &Sine{}
		}
	})
	sm.run(10) // past setup
	b.ReportAllocs()
	for b.Loop() {
		sm.a.step(sm.now)
		for _, pkt := range take(sm.a, 0) {
			sm.b.receive(sm.b.paths[0], pkt, sm.now)
		}
		sm.b.step(sm.now)
		take(sm.b, 0)
		sm.now = sm.now.Add(FrameDuration)
	}
	if st := sm.b.Stats(); st.Concealed != 0 || st.Lost != 0 {
		b.Fatalf("lost %d, concealed %d", st.Lost, st.Concealed)
	}
}
