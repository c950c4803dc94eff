package media

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpen(t *testing.T) {
	caller, callee := mustCipher(t, true), mustCipher(t, false)
	for _, p := range []Packet{
		{Type: TypeAudio, Seq: 1, Timestamp: 160, SendTime: 5, Payload: bytes.Repeat([]byte{0x55}, FrameSamples)},
		{Type: TypeProbe, Seq: 2, Timestamp: 320, SendTime: 1 << 31},
		{Type: TypeProbeReply, Seq: MaxSeq, EchoSeq: MaxSeq - 1, EchoTime: 42},
		{Type: TypeHold, Seq: 1 << 40, Timestamp: 1<<32 - 160},
		{Type: TypeBye, Seq: 3},
	} {
		b, err := caller.Seal([]byte("prefix"), &p)
		if err != nil {
			t.Fatalf("%s: %v", p.Type, err)
		}
		if string(b[:6]) != "prefix" {
			t.Fatalf("%s: Seal did not append", p.Type)
		}
		b = b[6:]
		if want := MinPacketLen + len(p.Payload) + map[Type]int{TypeProbeReply: replyBodyLen}[p.Type]; len(b) != want {
			t.Errorf("%s: %d bytes, want %d", p.Type, len(b), want)
		}
		if h, err := ParseHeader(b); err != nil || h.Type != p.Type || h.Seq != p.Seq {
			t.Errorf("%s: header %+v, %v", p.Type, h, err)
		}
		if _, err := caller.Open(bytes.Clone(b)); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: opened by its own sender: %v", p.Type, err)
		}
		got, err := callee.Open(b)
		if err != nil {
			t.Fatalf("%s: %v", p.Type, err)
		}
		if got.Type != p.Type || got.Seq != p.Seq || got.Timestamp != p.Timestamp || got.SendTime != p.SendTime ||
			got.EchoSeq != p.EchoSeq || got.EchoTime != p.EchoTime || !bytes.Equal(got.Payload, p.Payload) {
			t.Errorf("%s: opened %+v, sealed %+v", p.Type, got, p)
		}
	}
	if len(mustSeal(t, caller, Packet{Type: TypeAudio, Seq: 1, Payload: make([]byte, FrameSamples)})) != 192 {
		t.Error("an audio packet is not the documented 192 bytes")
	}
}

func TestSealRefuses(t *testing.T) {
	c := mustCipher(t, true)
	for name, tc := range map[string]struct {
		p    Packet
		want error
	}{
		"seq_zero":      {Packet{Type: TypeProbe}, ErrInvalidPacket},
		"seq_exhausted": {Packet{Type: TypeProbe, Seq: MaxSeq + 1}, ErrSeqExhausted},
		"unknown_type":  {Packet{Type: 0, Seq: 1}, ErrInvalidPacket},
		"empty_audio":   {Packet{Type: TypeAudio, Seq: 1}, ErrInvalidPacket},
		"huge_audio":    {Packet{Type: TypeAudio, Seq: 1, Payload: make([]byte, MaxPayload+1)}, ErrInvalidPacket},
		"probe_payload": {Packet{Type: TypeProbe, Seq: 1, Payload: []byte{1}}, ErrInvalidPacket},
		"reply_echo_0":  {Packet{Type: TypeProbeReply, Seq: 1}, ErrInvalidPacket},
	} {
		if b, err := c.Seal(nil, &tc.p); !errors.Is(err, tc.want) || len(b) != 0 {
			t.Errorf("%s: %v (%d bytes), want %v", name, err, len(b), tc.want)
		}
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	accept := func(seq uint64, path int, want verdict) {
		t.Helper()
		if got := w.accept(seq, path); got != want {
			t.Errorf("accept(%d, path %d) = %d, want %d", seq, path, got, want)
		}
	}
	accept(5, 0, fresh)
	accept(3, 0, fresh) // reordered, within the window
	accept(5, 0, replayed)
	accept(5, 1, duplicate)
	accept(3, 1, duplicate)
	accept(2000, 0, fresh) // slides past everything
	if w.check(5) != replayed {
		t.Error("check: 5 should be older than the window")
	}
	accept(5, 0, replayed)
	accept(2000-ReplayWindow+1, 0, fresh) // the oldest number still in the window
	accept(2000-ReplayWindow, 1, replayed)
	// Sliding clears the slots it passes: 977 was accepted, and 2001 shares its slot.
	accept(3000, 0, fresh)
	accept(3000-ReplayWindow, 0, replayed)
	accept(3000-ReplayWindow+1, 0, fresh)
	accept(2001, 0, fresh)
	accept(3000-1, 0, fresh)
	if w.check(3001) != fresh || w.check(3000) != duplicate {
		t.Error("check disagrees with accept")
	}
}
