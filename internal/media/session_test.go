package media

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/metrics"
)

var testKey = [32]byte{0: 0x70, 1: 0x65, 2: 0x65, 3: 0x72, 31: 1}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaks := leakedGoroutines(5 * time.Second); leaks != "" {
			os.Stderr.WriteString("leaked goroutines after all tests:\n" + leaks)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for every goroutine started by a Session or a test
// pipe to end, and returns the stacks of those that do not.
func leakedGoroutines(d time.Duration) string {
	return strings.Join(eventually.Leftover(d, "internal/media.(*Session)", "internal/media.(*pipe)"), "\n\n")
}

// testLogger narrates into the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newPair returns a caller and a callee for one call; mod adjusts each side's Config.
func newPair(t testing.TB, mod func(caller bool, c *Config)) (a, b *Session) {
	t.Helper()
	mk := func(caller bool) *Session {
		c := Config{Key: testKey, Caller: caller, JitterDelay: 100 * time.Millisecond, Logger: testLogger(t), Metrics: new(metrics.Set)}
		if mod != nil {
			mod(caller, &c)
		}
		s, err := NewSession(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return mk(true), mk(false)
}

// runCall runs both sessions until both Runs return (the caller's source ends, the
// callee follows its bye), or fails the test after limit.
func runCall(t *testing.T, a, b *Session, limit time.Duration, during func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- a.Run(ctx) }()
	go func() { errs <- b.Run(ctx) }()
	if during != nil {
		during()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("call did not end by itself within %v", limit)
	}
}

// expectedFrames is what a receiver should play for n frames of src: the µ-law round
// trip of each frame.
func expectedFrames(src FrameSource, n int) [][]int16 {
	var out [][]int16
	for range n {
		pcm := make([]int16, FrameSamples)
		src.ReadFrame(pcm)
		var u [FrameSamples]byte
		out = append(out, DecodeUlaw(make([]int16, FrameSamples), EncodeUlaw(u[:], pcm)))
	}
	return out
}

// checkPlayed compares what a recorder played with the expected frames: frame i of
// the call is recorded frame i (the call's first frame arrived); lost frames are
// silence flagged lost, and exactly those in wantLost.
func checkPlayed(t *testing.T, rec *Recorder, want [][]int16, wantLost []int) {
	t.Helper()
	got, lost := rec.Frames()
	if len(got) < len(want) {
		t.Fatalf("played %d frames, want at least %d", len(got), len(want))
	}
	for i := range want {
		switch {
		case slices.Contains(wantLost, i):
			if !lost[i] || slices.ContainsFunc(got[i], func(s int16) bool { return s != 0 }) {
				t.Errorf("frame %d: want concealed silence, got lost=%v", i, lost[i])
			}
		case lost[i]:
			t.Errorf("frame %d: concealed, want received", i)
		case !slices.Equal(got[i], want[i]):
			t.Errorf("frame %d: samples differ from the µ-law round trip of what was sent", i)
		}
	}
}

// TestCall: a short call over a reordering pipe arrives bit-identical, in order, and
// ends by itself when the caller's source ends.
func TestCall(t *testing.T) {
	t.Parallel()
	const frames = 50
	rec := &Recorder{}
	a, b := newPair(t, func(caller bool, c *Config) {
		if caller {
			c.Source = &Sine{Frames: frames}
		} else {
			c.Sink = rec
		}
	})
	p := newPipe(linkOpts{Delay: 5 * time.Millisecond, Jitter: 30 * time.Millisecond, Seed: 1},
		linkOpts{Delay: 5 * time.Millisecond, Jitter: 30 * time.Millisecond, Seed: 2})
	defer p.Close()
	a.AddPath(KindDirect, "lan", p.A, 0)
	b.AddPath(KindDirect, "lan", p.B, 0)
	runCall(t, a, b, 5*time.Second, nil)

	checkPlayed(t, rec, expectedFrames(&Sine{}, frames), nil)
	sa, sb := a.Stats(), b.Stats()
	t.Logf("callee: %+v", sb)
	if sa.FramesSent != frames || sb.FramesReceived != frames || sb.Lost != 0 || sb.Late != 0 || sb.Concealed != 0 {
		t.Errorf("sent %d, received %d, lost %d, late %d, concealed %d; want %d, %d, 0, 0, 0",
			sa.FramesSent, sb.FramesReceived, sb.Lost, sb.Late, sb.Concealed, frames, frames)
	}
	if !sb.PeerHungUp || sb.SetupMs < 0 || sb.JitterMs <= 0 || sa.RTTMs <= 0 || sa.ActiveKind != KindDirect {
		t.Errorf("peer hung up %v, setup %vms, jitter %vms, caller RTT %vms on %q", sb.PeerHungUp, sb.SetupMs, sb.JitterMs, sa.RTTMs, sa.ActiveKind)
	}
	select {
	case <-b.FirstFrame():
	default:
		t.Error("FirstFrame not closed")
	}
}

// TestLossStats drops every tenth audio packet from the fifth on and checks that the
// receiver counts exactly those as lost and concealed, and plays the rest intact.
func TestLossStats(t *testing.T) {
	t.Parallel()
	const frames = 50
	var audio atomic.Int64
	dropEveryTenth := func(b []byte) bool {
		h, err := ParseHeader(b) // what a relay can see
		if err != nil || h.Type != TypeAudio {
			return false
		}
		return (audio.Add(1)-1)%10 == 5
	}
	rec := &Recorder{}
	a, b := newPair(t, func(caller bool, c *Config) {
		if caller {
			c.Source = &Sine{Frames: frames}
		} else {
			c.Sink = rec
		}
	})
	p := newPipe(linkOpts{Delay: 2 * time.Millisecond, Drop: dropEveryTenth}, linkOpts{Delay: 2 * time.Millisecond})
	defer p.Close()
	a.AddPath(KindRelayUDP, "turn", p.A, 0)
	b.AddPath(KindRelayUDP, "turn", p.B, 0)
	runCall(t, a, b, 5*time.Second, nil)

	wantLost := []int{5, 15, 25, 35, 45}
	checkPlayed(t, rec, expectedFrames(&Sine{}, frames), wantLost)
	sb := b.Stats()
	if sb.FramesReceived != 45 || sb.Lost != 5 || sb.LossPercent != 10 || sb.Concealed != 5 || sb.Late != 0 {
		t.Errorf("received %d, lost %d (%v%%), concealed %d, late %d; want 45, 5 (10%%), 5, 0",
			sb.FramesReceived, sb.Lost, sb.LossPercent, sb.Concealed, sb.Late)
	}
	if got := b.cfg.Metrics.Get("media_frames_concealed"); got != 5 {
		t.Errorf("metric media_frames_concealed = %d, want 5", got)
	}
}

// twoPaths connects a and b by a direct path (rank 0) and a relay (rank 1); the
// relay is slower.
func twoPaths(t *testing.T, a, b *Session) (direct, relay *pipe) {
	direct = newPipe(linkOpts{Delay: time.Millisecond}, linkOpts{Delay: time.Millisecond})
	relay = newPipe(linkOpts{Delay: 15 * time.Millisecond}, linkOpts{Delay: 15 * time.Millisecond})
	t.Cleanup(direct.Close)
	t.Cleanup(relay.Close)
	a.AddPath(KindDirect, "host", direct.A, 0)
	a.AddPath(KindRelayUDP, "turn", relay.A, 1)
	b.AddPath(KindDirect, "host", direct.B, 0)
	b.AddPath(KindRelayUDP, "turn", relay.B, 1)
	return direct, relay
}

func fastPaths(caller bool, c *Config) {
	c.ProbeInterval = 50 * time.Millisecond
	c.DeadAfter = 200 * time.Millisecond
}

func lastChange(s *Session) PathChange {
	st := s.Stats()
	if len(st.PathChanges) == 0 {
		return PathChange{}
	}
	return st.PathChanges[len(st.PathChanges)-1]
}

// TestFailover kills the active direct path in mid-call, by blackholing it and by
// closing one end, and checks that both directions move to the relay, that the gap is
// reported, and that it is bounded by DeadAfter plus a margin (a correctness bound:
// detection takes DeadAfter, then a tick and the relay's delay).
func TestFailover(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"blackhole", "close"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			const frames = 60
			recA, recB := &Recorder{}, &Recorder{}
			a, b := newPair(t, func(caller bool, c *Config) {
				fastPaths(caller, c)
				if caller {
					c.Source, c.Sink = &Sine{Frames: frames}, recA
				} else {
					c.Source, c.Sink = &Sine{Freq: 1000}, recB
				}
			})
			direct, _ := twoPaths(t, a, b)
			runCall(t, a, b, 5*time.Second, func() {
				eventually.That(t, 2*time.Second, "the caller to send on the direct path", func() bool {
					return a.Stats().ActiveKind == KindDirect && b.Stats().FramesReceived > 10
				})
				t.Logf("killing the direct path (%s)", how)
				if how == "blackhole" {
					direct.blackhole.Store(true)
				} else {
					direct.A.Close()
				}
			})
			const margin = 150 * time.Millisecond
			dead := 200 * time.Millisecond
			for _, side := range []struct {
				name string
				s    *Session
			}{{"caller", a}, {"callee", b}} {
				st := side.s.Stats()
				var fo *PathChange
				for i, c := range st.PathChanges {
					t.Logf("%s: %s -> %s (%s), gap %.0fms", side.name, c.From, c.To, c.Reason, c.GapMs)
					if c.From == "direct:host" && c.To == "relay-udp:turn" {
						fo = &st.PathChanges[i]
					}
				}
				if fo == nil || !strings.HasPrefix(fo.Reason, "failover") {
					t.Errorf("%s: no failover from direct to relay recorded", side.name)
					continue
				}
				if st.ActiveKind != KindRelayUDP {
					t.Errorf("%s: ends on %q, want relay-udp", side.name, st.ActiveKind)
				}
				if fo.GapMs <= 0 || st.MaxGapMs <= 0 || st.MaxGapMs > ms(dead+margin) || fo.GapMs > st.MaxGapMs {
					t.Errorf("%s: gap at failover %.0fms, max gap %.0fms; want reported and at most %v", side.name, fo.GapMs, st.MaxGapMs, dead+margin)
				}
			}
			sb := b.Stats()
			if sb.FramesReceived+sb.Lost != frames || sb.FramesReceived < uint64(frames-int((dead+margin)/FrameDuration)) {
				t.Errorf("callee received %d and lost %d of %d frames", sb.FramesReceived, sb.Lost, frames)
			}
		})
	}
}

// TestUpgrade: the call starts on the relay because the direct path does not work yet;
// when it starts working, both sides move to it with nothing lost, and the overlap's
// copies are removed as duplicates.
func TestUpgrade(t *testing.T) {
	t.Parallel()
	const frames = 60
	rec := &Recorder{}
	a, b := newPair(t, func(caller bool, c *Config) {
		fastPaths(caller, c)
		if caller {
			c.Source = &Sine{Frames: frames}
		} else {
			c.Sink = rec
		}
	})
	direct, _ := twoPaths(t, a, b)
	direct.blackhole.Store(true)
	runCall(t, a, b, 5*time.Second, func() {
		eventually.That(t, 2*time.Second, "the call to run on the relay", func() bool {
			return a.Stats().ActiveKind == KindRelayUDP && b.Stats().FramesReceived > 5
		})
		t.Log("direct path starts working")
		direct.blackhole.Store(false)
		eventually.That(t, 2*time.Second, "the upgrade", func() bool {
			return a.Stats().ActiveKind == KindDirect && b.Stats().ActiveKind == KindDirect
		})
	})
	for _, s := range []*Session{a, b} {
		c := lastChange(s)
		if c.From != "relay-udp:turn" || c.To != "direct:host" || !strings.HasPrefix(c.Reason, "upgrade") {
			t.Errorf("last path change %+v, want an upgrade from relay to direct", c)
		}
	}
	checkPlayed(t, rec, expectedFrames(&Sine{}, frames), nil)
	sb := b.Stats()
	if sb.FramesReceived != frames || sb.Lost != 0 || sb.Concealed != 0 || sb.Duplicates == 0 {
		t.Errorf("received %d, lost %d, concealed %d, duplicates %d; want %d, 0, 0, >0", sb.FramesReceived, sb.Lost, sb.Concealed, sb.Duplicates, frames)
	}
}

// TestRunStopsOnCancel: cancelling the context ends Run promptly, sends bye, and leaves
// no goroutine behind (the pipes included).
func TestRunStopsOnCancel(t *testing.T) {
	a, b := newPair(t, fastPaths)
	direct, relay := twoPaths(t, a, b)
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 2)
	go func() { errs <- a.Run(ctx) }()
	go func() { errs <- b.Run(context.Background()) }() // ends on a's bye
	eventually.That(t, 2*time.Second, "audio both ways", func() bool {
		return a.Stats().FramesReceived > 5 && b.Stats().FramesReceived > 5
	})
	cancel()
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Run did not return")
		}
	}
	if !b.Stats().PeerHungUp {
		t.Error("callee did not see the caller's bye")
	}
	if err := a.Run(t.Context()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	direct.Close()
	relay.Close()
	if leaks := leakedGoroutines(2 * time.Second); leaks != "" {
		t.Errorf("leaked goroutines:\n%s", leaks)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"zero key":        {},
		"negative delay":  {Key: testKey, JitterDelay: -1},
		"huge delay":      {Key: testKey, JitterDelay: time.Minute},
		"negative probes": {Key: testKey, ProbeInterval: -time.Second},
	} {
		if _, err := NewSession(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}
