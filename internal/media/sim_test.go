package media

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// The tests in this file drive two sessions as state machines, without Run, sockets or
// sleeps: a fake clock advances 20 ms a step, and packets go straight from one
// session's path queues into the other's receive.

// nopPath is a Path for sessions that are never Run.
type nopPath struct {
	once   sync.Once
	closed chan struct{}
}

func newNopPath() *nopPath { return &nopPath{closed: make(chan struct{})} }

func (p *nopPath) Read([]byte) (int, error)    { <-p.closed; return 0, net.ErrClosed }
func (p *nopPath) Write(b []byte) (int, error) { return len(b), nil }
func (p *nopPath) Close() error                { p.once.Do(func() { close(p.closed) }); return nil }

type sim struct {
	t    testing.TB
	now  time.Time
	a, b *Session
	// tap, if set, sees every packet before delivery; returning false drops it.
	tap  func(from *Session, pkt []byte) bool
	done map[*Session]bool // Run would have returned
}

func newSim(t testing.TB, paths int, mod func(caller bool, c *Config)) *sim {
	sm := &sim{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), done: map[*Session]bool{}}
	sm.a, sm.b = newPair(t, func(caller bool, c *Config) {
		c.Now = func() time.Time { return sm.now }
		c.JitterDelay = 60 * time.Millisecond
		if mod != nil {
			mod(caller, c)
		}
	})
	for i := range paths {
		sm.a.AddPath(KindDirect, string(rune('p'+i)), newNopPath(), i)
		sm.b.AddPath(KindDirect, string(rune('p'+i)), newNopPath(), i)
	}
	return sm
}

// take removes and returns the packets s has queued on path i.
func take(s *Session, i int) [][]byte {
	var out [][]byte
	for {
		select {
		case b := <-s.paths[i].out:
			out = append(out, b)
		default:
			return out
		}
	}
}

// deliver moves queued packets both ways until none are left (replies make more).
func (sm *sim) deliver() {
	for moved := true; moved; {
		moved = false
		for i := range sm.a.paths {
			for _, d := range []struct{ from, to *Session }{{sm.a, sm.b}, {sm.b, sm.a}} {
				for _, pkt := range take(d.from, i) {
					moved = true
					if sm.tap == nil || sm.tap(d.from, pkt) {
						d.to.receive(d.to.paths[i], pkt, sm.now)
					}
				}
			}
		}
	}
}

// run steps both sessions n times.
func (sm *sim) run(n int) {
	for range n {
		for _, s := range []*Session{sm.a, sm.b} {
			if sm.done[s] {
				continue
			}
			done, err := s.step(sm.now)
			if err != nil {
				sm.t.Fatal(err)
			}
			sm.done[s] = done
		}
		sm.deliver()
		sm.now = sm.now.Add(FrameDuration)
	}
}

// TestHold: on hold a session sends one hold packet every 3 s and no audio; the peer
// plays silence, counts the time as held, not lost; audio resumes cleanly.
func TestHold(t *testing.T) {
	rec := &Recorder{Max: 1000}
	sm := newSim(t, 1, func(caller bool, c *Config) {
		c.ProbeInterval = time.Hour // count hold packets, not probes
		c.DeadAfter = 5 * time.Second
		if caller {
			c.Source = &Sine{Frames: 100}
		} else {
			c.Sink = rec
		}
	})
	holds, audio := 0, 0
	sm.tap = func(from *Session, pkt []byte) bool {
		if from == sm.a {
			h, _ := ParseHeader(pkt)
			switch h.Type {
			case TypeHold:
				holds++
			case TypeAudio:
				audio++
			}
		}
		return true
	}
	sm.run(50)
	sm.a.Hold(true)
	sm.run(500) // 10 s: hold packets at 0, 3, 6 and 9 s
	if holds != 4 || audio != 50 {
		t.Errorf("during 10 s of hold: %d hold packets and %d audio frames in all, want 4 and 50", holds, audio)
	}
	if st := sm.b.Stats(); !st.PeerHeld || st.PeerHeldMs < 9900 {
		t.Errorf("callee: peer held %v for %vms, want held for about 10 s", st.PeerHeld, st.PeerHeldMs)
	}
	sm.a.Hold(false)
	sm.run(60) // 50 frames, then bye, and the callee drains its buffer

	sa, sb := sm.a.Stats(), sm.b.Stats()
	if sa.FramesSent != 100 || sa.HoldSent != 4 {
		t.Errorf("caller sent %d frames and %d hold packets, want 100 and 4", sa.FramesSent, sa.HoldSent)
	}
	if !sm.done[sm.a] || !sm.done[sm.b] {
		t.Errorf("call not over: caller %v, callee %v", sm.done[sm.a], sm.done[sm.b])
	}
	if sb.FramesReceived != 100 || sb.Lost != 0 || sb.Concealed != 0 || sb.Late != 0 || sb.PeerHeld {
		t.Errorf("callee: received %d, lost %d, concealed %d, late %d, held %v; want 100, 0, 0, 0, false",
			sb.FramesReceived, sb.Lost, sb.Concealed, sb.Late, sb.PeerHeld)
	}
	if sb.PeerHeldMs < 9900 || sb.PeerHeldMs > 10200 {
		t.Errorf("callee counted %vms of hold, want about 10000", sb.PeerHeldMs)
	}
	// What was played: the 100 frames in order, with held silence (not flagged lost)
	// between the two halves.
	frames, lost := rec.Frames()
	want := expectedFrames(&Sine{}, 100)
	var got [][]int16
	silent := 0
	for i, f := range frames {
		if lost[i] {
			t.Fatalf("played frame %d flagged lost", i)
		}
		if slices.ContainsFunc(f, func(s int16) bool { return s != 0 }) {
			got = append(got, f)
		} else {
			silent++
		}
	}
	if len(got) < 100 || !slices.EqualFunc(got[:100], want, slices.Equal) {
		t.Errorf("played %d audio frames; want the 100 sent, in order", len(got))
	}
	if silent < 480 {
		t.Errorf("played %d frames of held silence, want about 500", silent)
	}
}

// captureAudio steps a call until the caller has queued an audio packet on path 0 and
// returns a copy, undelivered.
func captureAudio(t *testing.T, sm *sim) []byte {
	var pkt []byte
	sm.tap = func(from *Session, b []byte) bool {
		if h, _ := ParseHeader(b); from == sm.a && h.Type == TypeAudio && pkt == nil {
			pkt = bytes.Clone(b)
			return false
		}
		return true
	}
	for pkt == nil {
		sm.run(1)
	}
	sm.tap = nil
	return pkt
}

// TestReplay: a packet delivered twice on one path is a replay, over another path a
// duplicate; both are dropped and counted, and a packet older than the window is
// rejected before decryption.
func TestReplay(t *testing.T) {
	sm := newSim(t, 2, func(caller bool, c *Config) {
		if caller {
			c.Source = &Sine{}
		}
	})
	sm.run(10)
	pkt := captureAudio(t, sm)
	before := sm.b.Stats()
	if err := sm.b.receive(sm.b.paths[0], bytes.Clone(pkt), sm.now); err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	if err := sm.b.receive(sm.b.paths[0], bytes.Clone(pkt), sm.now); !errors.Is(err, ErrReplay) {
		t.Errorf("same path again: %v, want ErrReplay", err)
	}
	if err := sm.b.receive(sm.b.paths[1], bytes.Clone(pkt), sm.now); !errors.Is(err, ErrReplay) {
		t.Errorf("other path: %v, want ErrReplay", err)
	}
	after := sm.b.Stats()
	if after.FramesReceived != before.FramesReceived+1 || after.Replayed != 1 || after.Duplicates != 1 {
		t.Errorf("frames +%d, replayed %d, duplicates %d; want +1, 1, 1",
			after.FramesReceived-before.FramesReceived, after.Replayed, after.Duplicates)
	}
	sm.run(ReplayWindow/2 + 10) // two packets a tick, plus probes: the window moves on
	if err := sm.b.receive(sm.b.paths[0], bytes.Clone(pkt), sm.now); !errors.Is(err, ErrReplay) {
		t.Errorf("after the window: %v, want ErrReplay", err)
	}
	if got := sm.b.Stats().Replayed; got != 2 {
		t.Errorf("replayed %d, want 2", got)
	}
}

// TestTamper: changing any byte of a packet, sealing under another key, or reflecting a
// side's own packet back to it gets the packet rejected and counted, never accepted.
func TestTamper(t *testing.T) {
	sm := newSim(t, 1, func(caller bool, c *Config) {
		if caller {
			c.Source = &Sine{}
		}
	})
	sm.run(5)
	pkt := captureAudio(t, sm)
	frames := sm.b.Stats().FramesReceived
	bad := 0
	for i := range pkt {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(pkt)
			b[i] ^= bit
			err := sm.b.receive(sm.b.paths[0], b, sm.now)
			if err == nil || !(errors.Is(err, ErrAuth) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrVersion) || errors.Is(err, ErrReplay)) {
				t.Fatalf("byte %d ^ %#x: %v", i, bit, err)
			}
			if !errors.Is(err, ErrReplay) {
				bad++
			}
		}
	}
	if err := sm.b.receive(sm.b.paths[0], bytes.Clone(pkt[:len(pkt)-1]), sm.now); err == nil {
		t.Error("truncated packet accepted")
	}
	bad++
	// Another call's key.
	other, err := NewCipher([32]byte{9}, true)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Seal(nil, &Packet{Type: TypeAudio, Seq: 1 << 40, Payload: make([]byte, FrameSamples)})
	if err := sm.b.receive(sm.b.paths[0], forged, sm.now); !errors.Is(err, ErrAuth) {
		t.Errorf("other key: %v, want ErrAuth", err)
	}
	// The caller's packet reflected back to the caller: the other direction's key.
	if err := sm.a.receive(sm.a.paths[0], bytes.Clone(pkt), sm.now); !errors.Is(err, ErrAuth) {
		t.Errorf("reflected: %v, want ErrAuth", err)
	}
	st := sm.b.Stats()
	if st.FramesReceived != frames || st.BadPackets != uint64(bad+1) {
		t.Errorf("frames %d (want %d unchanged), bad packets %d (want %d)", st.FramesReceived, frames, st.BadPackets, bad+1)
	}
	if got := sm.b.cfg.Metrics.Get("media_packets_bad"); got != st.BadPackets {
		t.Errorf("metric media_packets_bad = %d, want %d", got, st.BadPackets)
	}
	// The untouched packet still opens: nothing above moved the replay window.
	if err := sm.b.receive(sm.b.paths[0], pkt, sm.now); err != nil {
		t.Errorf("original after the forgeries: %v", err)
	}
}
