package client_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/proto"
)

// callPair starts an overlay whose supernodes serve STUN and TURN, with alice and bob
// attached to different supernodes; bob answers calls on his own and records them.
func callPair(t *testing.T, modA, modB func(*client.Config)) (*overlaytest.Overlay, *overlaytest.Client, *overlaytest.Client, string) {
	t.Helper()
	rec := t.TempDir()
	mA := func(c *client.Config) {
		c.Call.Loopback = true
		c.NATTimeout = 300 * time.Millisecond
		if modA != nil {
			modA(c)
		}
	}
	mB := func(c *client.Config) {
		c.Call.Loopback, c.Call.AutoAnswer, c.Call.RecordDir = true, true, rec
		c.NATTimeout = 300 * time.Millisecond
		if modB != nil {
			modB(c)
		}
	}
	o, a, b := twoUsersWith(t, overlaytest.Options{Supernodes: 3, STUN: true, Relay: true, CacheTTL: -1}, mA, mB)
	o.Eventually("both published, NAT known", func() bool {
		return a.Metrics().Get("publishes") > 1 && b.Metrics().Get("publishes") > 1 &&
			a.Status().NAT != nil && b.Status().NAT != nil
	})
	// The overlay must know where bob is now, not where a stopped instance was.
	o.Eventually("alice finds bob", func() bool {
		sr, err := a.Search(context.Background(), "bob")
		return err == nil && sr.User != nil && sr.User.Online && sr.User.SupernodeAddr == b.Status().Supernode.Addr
	})
	return o, a, b, rec
}

// callInBackground has alice call bob with frames of a tone and delivers the report.
func callInBackground(t *testing.T, ctx context.Context, a *overlaytest.Client, frames int) <-chan client.CallReport {
	done := make(chan client.CallReport, 1)
	go func() {
		rep, err := a.Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: frames}})
		if err != nil {
			t.Errorf("call: %v", err)
		}
		done <- rep
	}()
	return done
}

// waitTalking waits until bob's call in progress has received more than n frames.
func waitTalking(t *testing.T, b *overlaytest.Client, n uint64) {
	t.Helper()
	overlaytest.Eventually(t, 10*time.Second, "audio flowing to bob", talking(b, n))
}

// talking holds when bob's call in progress has received more than n frames.
func talking(b *overlaytest.Client, n uint64) func() bool {
	return func() bool {
		act := b.Active()
		return len(act) == 1 && act[0].Media.FramesReceived > n
	}
}

func TestCallDirectOnLoopback(t *testing.T) {
	_, a, b, _ := callPair(t, nil, nil)
	const frames = 100 // 2 s
	rec := &media.Recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := a.Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: frames}, Sink: rec})
	if err != nil {
		t.Fatalf("call: %v (%+v)", err, rep)
	}
	t.Logf("path %s (predicted %s), setup %.0f ms, sent %d, received %d, loss %.2f%%, rtt %.2f ms, changes %d",
		rep.Path, rep.Predicted, rep.SetupMs, rep.Media.FramesSent, rep.Media.FramesReceived, rep.Media.LossPercent, rep.Media.RTTMs, len(rep.Media.PathChanges))
	if rep.Result != "completed" || rep.Path != client.PathDirect {
		t.Fatalf("report %+v, want a completed direct call", rep)
	}
	if rep.Media.FramesReceived == 0 {
		t.Fatal("alice heard nothing from bob")
	}
	// The set-up, step by step, in the order the steps are taken.
	ph := rep.Phases
	t.Logf("phases %+v", ph)
	steps := []float64{ph.LookupMs, ph.GatherMs, ph.InviteMs, ph.AnswerMs, ph.FirstFrameMs}
	for i, v := range steps {
		if v <= 0 || (i > 0 && v < steps[i-1]) {
			t.Fatalf("phases %+v: lookup, gathering, invitation, answer and first frame must end in that order", ph)
		}
	}
	if ph.FirstFrameMs != rep.SetupMs || ph.PathMs <= 0 || ph.PathMs > rep.DurationMs {
		t.Fatalf("phases %+v against setup %.1f ms and duration %.1f ms", ph, rep.SetupMs, rep.DurationMs)
	}
	// bob's side: his recording holds alice's tone.
	overlaytest.Eventually(t, 10*time.Second, "bob's report", func() bool { return len(b.Reports()) > 0 })
	br := b.Reports()[0]
	if br.Result != "completed" || br.Media.FramesReceived < frames*99/100 {
		t.Fatalf("bob's report: %+v", br)
	}
}

func TestCallRelayedSeesOnlyCiphertext(t *testing.T) {
	var mu sync.Mutex
	var relayed [][]byte
	hook := func(b []byte) {
		mu.Lock()
		relayed = append(relayed, bytes.Clone(b))
		mu.Unlock()
	}
	noDirect := func(c *client.Config) { c.Call.TestHookDirectDelay = time.Hour; c.Call.TestHookRelayed = hook }
	_, a, b, _ := callPair(t, noDirect, noDirect)
	const frames = 100
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := a.Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: frames}})
	if err != nil {
		t.Fatalf("call: %v (%+v)", err, rep)
	}
	t.Logf("path %s, setup %.0f ms, received %d frames, %d path changes", rep.Path, rep.SetupMs, rep.Media.FramesReceived, len(rep.Media.PathChanges))
	if rep.Path != client.PathRelayUDP {
		t.Fatalf("path %q, want relayed (direct disabled)", rep.Path)
	}
	overlaytest.Eventually(t, 10*time.Second, "bob's report", func() bool { return len(b.Reports()) > 0 })
	if br := b.Reports()[0]; br.Media.FramesReceived < frames*99/100 {
		t.Fatalf("bob received %d of %d frames", br.Media.FramesReceived, frames)
	}
	// No 16-byte run of any µ-law frame alice sent appears in what the relays received.
	mu.Lock()
	defer mu.Unlock()
	if len(relayed) < frames {
		t.Fatalf("only %d datagrams went through relays", len(relayed))
	}
	src := &media.Sine{Freq: 440, Frames: frames}
	pcm := make([]int16, media.FrameSamples)
	for i := 0; i < frames; i++ {
		src.ReadFrame(pcm)
		u := media.EncodeUlaw(make([]byte, len(pcm)), pcm)
		for off := 0; off+16 <= len(u); off += 16 {
			for _, d := range relayed {
				if bytes.Contains(d, u[off:off+16]) {
					t.Fatalf("frame %d's audio passed a relay in clear", i)
				}
			}
		}
	}
}

func TestCallMovesFromRelayToDirect(t *testing.T) {
	late := func(c *client.Config) { c.Call.TestHookDirectDelay = 1500 * time.Millisecond }
	_, a, b, _ := callPair(t, late, late)
	const frames = 200 // 4 s
	rec := &media.Recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := a.Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: frames}, Sink: rec})
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	kinds := rep.Media.PathChanges
	t.Logf("path changes: %v; max gap %.0f ms", kinds, rep.Media.MaxGapMs)
	if rep.Path != client.PathDirect {
		t.Fatalf("the call ended on %q, want direct", rep.Path)
	}
	movedFromRelay := false
	for _, ch := range rep.Media.PathChanges {
		if len(ch.From) >= 5 && ch.From[:5] == "relay" && len(ch.To) >= 6 && ch.To[:6] == "direct" {
			movedFromRelay = true
		}
	}
	if !movedFromRelay {
		t.Fatalf("no move from the relay to the direct path: %v", kinds)
	}
	overlaytest.Eventually(t, 10*time.Second, "bob's report", func() bool { return len(b.Reports()) > 0 })
	br := b.Reports()[0]
	if br.Media.FramesReceived < frames*99/100 {
		t.Fatalf("bob received %d of %d frames across the move", br.Media.FramesReceived, frames)
	}
}

func TestCallFailsOverWhenRelayDies(t *testing.T) {
	noDirect := func(c *client.Config) { c.Call.TestHookDirectDelay = time.Hour }
	o, a, b, _ := callPair(t, noDirect, noDirect)
	const frames = 250 // 5 s
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	done := callInBackground(t, ctx, a, frames)
	// Once audio flows on bob's relay (the best relayed path for alice), kill bob's
	// supernode, which runs that relay.
	waitTalking(t, b, 50)
	sn := o.SupernodeAt(b.Status().Supernode.Addr)
	sn.Stop()
	rep := <-done
	t.Logf("alice: %d frames received, max gap %.0f ms, changes %v", rep.Media.FramesReceived, rep.Media.MaxGapMs, rep.Media.PathChanges)
	if rep.Result != "completed" {
		t.Fatalf("call %+v", rep)
	}
	overlaytest.Eventually(t, 10*time.Second, "bob's report", func() bool { return len(b.Reports()) > 0 })
	br := b.Reports()[0]
	t.Logf("bob: %d frames received, max gap %.0f ms", br.Media.FramesReceived, br.Media.MaxGapMs)
	if br.Media.MaxGapMs > 2000 || rep.Media.MaxGapMs > 2000 {
		t.Fatalf("gap %.0f / %.0f ms, want at most 2000", br.Media.MaxGapMs, rep.Media.MaxGapMs)
	}
	if br.Media.FramesReceived < frames*80/100 {
		t.Fatalf("bob received %d of %d frames", br.Media.FramesReceived, frames)
	}
}

func TestCallRefusals(t *testing.T) {
	_, a, b, _ := callPair(t, nil, func(c *client.Config) { c.Call.AutoAnswer = false; c.Call.RingTimeout = 2 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Unanswered: no answer after the ring timeout (the caller's own is 30 s; bob's 2 s
	// ring ends his side, alice gives up after hers).
	rejected := make(chan struct{})
	go func() { // off the test goroutine: Await and t.Error, not Eventually
		defer close(rejected)
		if err := overlaytest.Await(10*time.Second, "ringing", func() bool { return len(b.Ringing()) == 1 }); err != nil {
			t.Error(err)
			return
		}
		if err := b.Reject(ctx, b.Ringing()[0].Call); err != nil {
			t.Errorf("reject: %v", err)
		}
	}()
	rep, err := a.Call(ctx, "bob", client.CallOptions{})
	<-rejected
	if !errors.Is(err, client.ErrCallRejected) || rep.Result != "rejected" {
		t.Fatalf("rejected call: %v %+v", err, rep)
	}
	// Blocked: bob blocks alice; her call is refused before it rings. The overlay hides
	// bob from her (blocked users see no presence), so she learns only that he is not
	// reachable; were a stale record to lead her invite to him, his client refuses it.
	rings := b.Metrics().Get("calls_ringing")
	if err := ask(t, b, client.CmdBuddyBlock, []string{"alice"}, nil); err != nil {
		t.Fatal(err)
	}
	overlaytest.Eventually(t, 10*time.Second, "alice refused", func() bool {
		rep, err = a.Call(ctx, "bob", client.CallOptions{})
		return errors.Is(err, proto.ErrOffline) || errors.Is(err, proto.ErrBlocked)
	})
	if rep.Result != "offline" && rep.Result != "blocked" {
		t.Fatalf("blocked call: %+v", rep)
	}
	if got := b.Metrics().Get("calls_ringing"); got != rings || len(b.Ringing()) != 0 {
		t.Fatalf("bob's phone rang for a blocked caller (%d -> %d)", rings, got)
	}
	// Offline: a user who is not online cannot be called.
	b.Stop()
	overlaytest.Eventually(t, 10*time.Second, "bob offline", func() bool {
		_, err := a.Call(ctx, "bob", client.CallOptions{})
		return errors.Is(err, proto.ErrOffline)
	})
}

// TestCallBusyAndHold: a third caller gets busy while bob is in a call; alice puts the
// call on hold (one packet every 3 s) and resumes it, and bob counts the hold, not loss.
func TestCallBusyAndHold(t *testing.T) {
	o, a, b, _ := callPair(t, nil, nil)
	o.Register("carol", "carol's password")
	c := o.StartClient(filepath.Join(t.TempDir(), "carol"), "carol", "carol's password", func(cfg *client.Config) { cfg.Call.Loopback = true })
	o.Eventually("carol attached", attached(c))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	const frames = 400 // 8 s of audio, of which 3.5 s on hold
	done := callInBackground(t, ctx, a, frames)
	waitTalking(t, b, 25)
	overlaytest.Eventually(t, 10*time.Second, "carol hears busy", func() bool {
		_, err := c.Call(ctx, "bob", client.CallOptions{})
		return errors.Is(err, client.ErrCallBusy)
	})
	if err := a.Hold("", true); err != nil {
		t.Fatal(err)
	}
	// The hold lasts until bob has seen alice on hold for 3.5 s. This is real time, and
	// the property measured: the media sessions pace the hold packets (one every 3 s) in
	// real time, and bob's side measures the hold as it sees it.
	overlaytest.Eventually(t, 10*time.Second, "bob sees alice on hold for 3.5 s", func() bool {
		act := b.Active()
		return len(act) == 1 && act[0].Media.PeerHeldMs >= 3500
	})
	if err := a.Hold("", false); err != nil {
		t.Fatal(err)
	}
	rep := <-done
	overlaytest.Eventually(t, 10*time.Second, "bob's report", func() bool { return len(b.Reports()) > 0 })
	br := b.Reports()[0]
	t.Logf("alice sent %d hold packets; bob: peer held %.0f ms, %d frames, loss %.2f%%", rep.Media.HoldSent, br.Media.PeerHeldMs, br.Media.FramesReceived, br.Media.LossPercent)
	if rep.Media.HoldSent < 1 || rep.Media.HoldSent > 2 {
		t.Fatalf("alice sent %d hold packets in 3.5 s, want 1 or 2 (one every 3 s)", rep.Media.HoldSent)
	}
	if br.Media.PeerHeldMs < 3000 || br.Media.LossPercent > 1 || br.Media.FramesReceived < frames*99/100 {
		t.Fatalf("bob's side of the hold: %+v", br.Media)
	}
}

// TestCallHangupByCallee: bob hangs up; alice's call, with audio that would go on for a
// minute, ends at once.
func TestCallHangupByCallee(t *testing.T) {
	_, a, b, _ := callPair(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hungUp := make(chan struct{})
	go func() { // off the test goroutine: Await and t.Error, not waitTalking
		defer close(hungUp)
		if err := overlaytest.Await(10*time.Second, "audio flowing to bob", talking(b, 10)); err != nil {
			t.Error(err)
			return
		}
		if _, err := b.Hangup(""); err != nil {
			t.Errorf("hangup: %v", err)
		}
	}()
	start := time.Now()
	rep, err := a.Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: 3000}})
	<-hungUp
	if err != nil || rep.Result != "completed" {
		t.Fatalf("call: %v %+v", err, rep)
	}
	if took := time.Since(start); took > 15*time.Second || rep.Media.FramesSent > 1000 {
		t.Fatalf("alice's call went on for %v (%d frames) after bob hung up", took, rep.Media.FramesSent)
	}
}

// TestCallHungUpBeforeAudio: alice hangs up an answered call before any path carried
// audio (no relay, and the ICE checks held back). Both reports say who hung up, not that
// the paths failed, and no call counts as failed.
func TestCallHungUpBeforeAudio(t *testing.T) {
	noPath := func(c *client.Config) {
		c.Call.Loopback, c.Call.TestHookDirectDelay = true, time.Hour
		c.NATTimeout = 300 * time.Millisecond
	}
	_, a, b := twoUsersWith(t, overlaytest.Options{Supernodes: 3, CacheTTL: -1}, noPath, func(c *client.Config) {
		noPath(c)
		c.Call.AutoAnswer = true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		rep client.CallReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := a.Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: 3000}})
		done <- result{rep, err}
	}()
	overlaytest.Eventually(t, 10*time.Second, "the call answered", func() bool { return len(a.Active()) == 1 && len(b.Active()) == 1 })
	if _, err := a.Hangup(""); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err == nil || r.rep.Result != "hung up" || r.rep.Error != "you hung up before any audio arrived" {
		t.Fatalf("alice's call: %v, %+v; want hung up by her", r.err, r.rep)
	}
	overlaytest.Eventually(t, 10*time.Second, "bob's report", func() bool { return len(b.Reports()) > 0 })
	if br := b.Reports()[0]; br.Result != "hung up" || br.Error != "alice hung up before any audio arrived" {
		t.Fatalf("bob's report: %+v; want alice's hangup", br)
	}
	for _, c := range []*overlaytest.Client{a, b} {
		if n := c.Metrics().Get("calls_failed"); n != 0 {
			t.Fatalf("%d calls counted failed", n)
		}
	}
}
