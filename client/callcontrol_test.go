package client_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/proto"
)

// Call control as a user meets it: the errors and records of calls that do not happen.

// noAutoAnswer keeps bob's phone ringing for far longer than any test runs: what stops
// it must be the caller, not bob's ring timeout.
func noAutoAnswer(c *client.Config) {
	c.Call.AutoAnswer = false
	c.Call.RingTimeout = time.Hour
}

// callAsync places a call from c to name and delivers its outcome.
type callResult struct {
	rep client.CallReport
	err error
}

func callAsync(ctx context.Context, c *overlaytest.Client, name string) <-chan callResult {
	done := make(chan callResult, 1)
	go func() {
		rep, err := c.Call(ctx, name, client.CallOptions{})
		done <- callResult{rep, err}
	}()
	return done
}

func recv(t *testing.T, ch <-chan callResult, limit time.Duration, what string) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(limit):
		t.Fatalf("no outcome after %v: %s", limit, what)
	}
	return callResult{}
}

// audioArgs are the audio arguments of a control-socket call or answer: silence, nothing
// recorded, no duration.
var silentAudio = []string{"", client.AudioNone, "", client.AudioNone, "0"}

// TestCallYourselfRefused: calling yourself fails at once, before anything rings or any
// signalling goes out.
func TestCallYourselfRefused(t *testing.T) {
	_, a, _ := twoUsers(t, overlaytest.Options{})
	sent := a.Metrics().Get("call_signals_sent")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := a.Call(ctx, "alice", client.CallOptions{})
	if !errors.Is(err, client.ErrCallSelf) || rep.Call != "" {
		t.Fatalf("calling yourself: %v %+v, want ErrCallSelf and no call", err, rep)
	}
	err = ask(t, a, client.CmdCall, append([]string{"alice"}, silentAudio...), nil)
	if err == nil || err.Error() != "you cannot call yourself" {
		t.Fatalf("control socket: %v", err)
	}
	if got := a.Metrics().Get("call_signals_sent"); got != sent || len(a.Ringing()) != 0 || len(a.Reports()) != 0 {
		t.Fatalf("a call to yourself went out: %d signals sent, ringing %v, reports %v", got-sent, a.Ringing(), a.Reports())
	}
}

// TestCallAndMessageNoSuchUser: a name nobody has is "no such user" (the directory says
// so), for calls and messages; a user who exists but is offline is "offline".
func TestCallAndMessageNoSuchUser(t *testing.T) {
	o, a, _ := twoUsers(t, overlaytest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := a.Call(ctx, "zed", client.CallOptions{})
	if !errors.Is(err, proto.ErrNoSuchUser) || rep.Result != "no such user" || err.Error() != "no such user zed" {
		t.Fatalf("call to zed: %v %+v", err, rep)
	}
	var re *ctl.RemoteError
	err = ask(t, a, client.CmdMsg, []string{"zed", "hello"}, nil)
	if !errors.As(err, &re) || re.Code != proto.ErrNoSuchUser.Code || re.Msg != "no such user zed" {
		t.Fatalf("message to zed: %v", err)
	}
	err = ask(t, a, client.CmdCall, append([]string{"zed"}, silentAudio...), nil)
	if !errors.As(err, &re) || re.Msg != "no such user zed" {
		t.Fatalf("control socket call to zed: %v", err)
	}
	// carol exists but never logged in: offline, not "no such user".
	o.Register("carol", "carol's password")
	rep, err = a.Call(ctx, "carol", client.CallOptions{})
	if !errors.Is(err, proto.ErrOffline) || rep.Result != "offline" {
		t.Fatalf("call to offline carol: %v %+v", err, rep)
	}
	err = ask(t, a, client.CmdMsg, []string{"carol", "hello"}, nil)
	if !errors.As(err, &re) || re.Code != proto.ErrOffline.Code {
		t.Fatalf("message to offline carol: %v", err)
	}
	if len(a.Reports()) != 0 {
		t.Fatalf("calls that never started left reports: %+v", a.Reports())
	}
}

// TestCallerHangupWhileRinging: alice hangs up while bob's phone rings; bob's stops
// ringing (his own ring timeout is an hour away) and he has a missed call.
func TestCallerHangupWhileRinging(t *testing.T) {
	_, a, b, _ := callPair(t, nil, noAutoAnswer)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	// alice calls as 'peerline call' does, through her control socket.
	done := make(chan callResult, 1)
	go func() {
		var rep client.CallReport
		err := ctl.Do(ctx, filepath.Join(a.Dir, client.SocketFile), ctl.Request{Cmd: client.CmdCall, Args: append([]string{"bob"}, silentAudio...)}, &rep)
		done <- callResult{rep, err}
	}()
	overlaytest.Eventually(t, 10*time.Second, "bob's phone rings", func() bool { return len(b.Ringing()) == 1 })
	id := b.Ringing()[0].Call
	if err := ask(t, a, client.CmdHangup, []string{""}, nil); err != nil {
		t.Fatalf("hangup: %v", err)
	}
	r := recv(t, done, 10*time.Second, "alice's call after her hangup")
	if r.err != nil || r.rep.Result != "cancelled" || r.rep.Call != id || r.rep.Error != "you hung up before bob answered" {
		t.Fatalf("alice's call: %v %+v", r.err, r.rep)
	}
	overlaytest.Eventually(t, 10*time.Second, "bob's phone stops ringing", func() bool { return len(b.Ringing()) == 0 })
	var calls client.CallsStatus
	if err := ask(t, b, client.CmdCalls, nil, &calls); err != nil {
		t.Fatal(err)
	}
	if len(calls.Ringing) != 0 || len(calls.Reports) != 1 {
		t.Fatalf("bob's calls: %+v", calls)
	}
	if m := calls.Reports[0]; m.Result != "missed" || m.Peer != "alice" || m.Call != id || m.Outgoing {
		t.Fatalf("bob's record of the call: %+v, want a missed call from alice", m)
	}
	if got := b.Metrics().Get("calls_missed"); got != 1 {
		t.Fatalf("calls_missed = %d", got)
	}
	// alice's own record says she cancelled it.
	if err := ask(t, a, client.CmdCalls, nil, &calls); err != nil {
		t.Fatal(err)
	}
	if len(calls.Reports) != 1 || calls.Reports[0].Result != "cancelled" {
		t.Fatalf("alice's calls: %+v", calls)
	}
}

// TestAnswerNothingRinging: answer with nothing ringing fails with a clear message and
// leaves nothing in calls; so does answer of a call id that does not ring.
func TestAnswerNothingRinging(t *testing.T) {
	_, _, b := twoUsers(t, overlaytest.Options{})
	err := ask(t, b, client.CmdAnswer, append([]string{""}, silentAudio...), nil)
	if err == nil || err.Error() != "nothing is ringing" {
		t.Fatalf("answer with nothing ringing: %v", err)
	}
	err = ask(t, b, client.CmdAnswer, append([]string{"00112233445566778899aabbccddeeff"}, silentAudio...), nil)
	if err == nil || !strings.Contains(err.Error(), "is ringing") {
		t.Fatalf("answer of an unknown call: %v", err)
	}
	var calls client.CallsStatus
	if err := ask(t, b, client.CmdCalls, nil, &calls); err != nil {
		t.Fatal(err)
	}
	if len(calls.Reports) != 0 || len(calls.Ringing) != 0 || len(calls.Active) != 0 {
		t.Fatalf("calls after answering nothing: %+v", calls)
	}
	if _, err := b.Answer(context.Background(), "", client.CallOptions{}); !errors.Is(err, client.ErrNothingRinging) {
		t.Fatalf("Answer: %v", err)
	}
}

// TestCallOutcomeSentences: a rejected call and a busy callee each end in one sentence
// that names the callee.
func TestCallOutcomeSentences(t *testing.T) {
	o, a, b, _ := callPair(t, nil, noAutoAnswer)
	o.Register("carol", "carol's password")
	c := o.StartClient(filepath.Join(t.TempDir(), "carol"), "carol", "carol's password", func(cfg *client.Config) {
		cfg.Call.Loopback = true
		cfg.NATTimeout = 300 * time.Millisecond
	})
	o.Eventually("carol attached", attached(c))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	done := callAsync(ctx, a, "bob")
	overlaytest.Eventually(t, 10*time.Second, "bob's phone rings", func() bool { return len(b.Ringing()) == 1 })
	// bob's phone rings: carol hears busy.
	var busy error
	overlaytest.Eventually(t, 10*time.Second, "carol hears busy", func() bool {
		_, busy = c.Call(ctx, "bob", client.CallOptions{})
		return errors.Is(busy, client.ErrCallBusy)
	})
	if busy.Error() != "bob is busy" {
		t.Fatalf("busy: %q", busy)
	}
	if err := b.Reject(ctx, ""); err != nil {
		t.Fatalf("reject: %v", err)
	}
	r := recv(t, done, 10*time.Second, "alice's rejected call")
	if !errors.Is(r.err, client.ErrCallRejected) || r.err.Error() != "bob rejected the call" || r.rep.Error != "bob rejected the call" {
		t.Fatalf("rejected: %v %+v", r.err, r.rep)
	}
	if reps := b.Reports(); len(reps) != 1 || reps[0].Result != "rejected" || reps[0].Peer != "alice" {
		t.Fatalf("bob's record of the call he rejected: %+v", reps)
	}
}

// TestCallsListsActiveCalls: a call in progress is in calls, with its statistics so far.
func TestCallsListsActiveCalls(t *testing.T) {
	_, a, b, _ := callPair(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := callInBackground(t, ctx, a, 3000)
	waitTalking(t, b, 10)
	var calls client.CallsStatus
	if err := ask(t, a, client.CmdCalls, nil, &calls); err != nil {
		t.Fatal(err)
	}
	if len(calls.Active) != 1 {
		t.Fatalf("alice's calls during a call: %+v", calls)
	}
	act := calls.Active[0]
	if act.Peer != "bob" || !act.Outgoing || act.Result != "in progress" || act.Media.FramesSent == 0 || act.DurationMs <= 0 || act.StartedAt.IsZero() {
		t.Fatalf("active call: %+v", act)
	}
	if _, err := a.Hangup(""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the call did not end after hangup")
	}
}

// TestPrefixSearchShowsOverlayPresence: a prefix search shows, for each name the
// directory lists, the overlay's presence where the overlay has a record, and agrees
// with an exact search; each hit says where its presence comes from.
func TestPrefixSearchShowsOverlayPresence(t *testing.T) {
	o, a, b := twoUsers(t, overlaytest.Options{CacheTTL: -1})
	o.Register("bert", "bert's password") // never logs in: only the directory knows him
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	overlaytest.Eventually(t, 10*time.Second, "alice finds bob online", func() bool {
		sr, err := a.Search(ctx, "bob")
		return err == nil && sr.User != nil && sr.User.Online && sr.User.SupernodeAddr == b.Status().Supernode.Addr
	})
	exact, err := a.Search(ctx, "bob")
	if err != nil || len(exact.Results) != 1 {
		t.Fatalf("search bob: %+v %v", exact, err)
	}
	prefix, err := a.Search(ctx, "b*")
	if err != nil || prefix.Source != "directory" || len(prefix.Results) != 2 {
		t.Fatalf("search b*: %+v %v", prefix, err)
	}
	hits := map[string]client.SearchHit{}
	for _, h := range prefix.Results {
		hits[h.Name] = h
	}
	bob, bert := hits["bob"], hits["bert"]
	if !bob.Online || bob.Source != "overlay" || bob.SupernodeAddr != b.Status().Supernode.Addr {
		t.Fatalf("b* shows bob as %+v; bob is online at %s", bob, b.Status().Supernode.Addr)
	}
	if e := exact.Results[0]; e.Online != bob.Online || e.Source != bob.Source || e.SupernodeAddr != bob.SupernodeAddr {
		t.Fatalf("search bob says %+v, search b* says %+v", e, bob)
	}
	if bert.Online || bert.Source != "directory" || !bert.LastSeen.IsZero() {
		t.Fatalf("b* shows bert as %+v, want the directory's never-logged-in entry", bert)
	}
	// bob logs off: both searches say offline.
	b.Stop()
	overlaytest.Eventually(t, 10*time.Second, "both searches see bob offline", func() bool {
		exact, err1 := a.Search(ctx, "bob")
		prefix, err2 := a.Search(ctx, "bo*")
		return err1 == nil && err2 == nil && len(exact.Results) == 1 && len(prefix.Results) == 1 &&
			!exact.Results[0].Online && !prefix.Results[0].Online && exact.Results[0].Source == prefix.Results[0].Source
	})
}

// TestCalleeRingTimeout: bob's phone rings for a second; when it stops, alice hears "no
// answer" at once (her own ring timeout is the default 30 s) and bob has a missed call.
func TestCalleeRingTimeout(t *testing.T) {
	_, a, b, _ := callPair(t, nil, func(c *client.Config) { c.Call.AutoAnswer = false; c.Call.RingTimeout = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	r := recv(t, callAsync(ctx, a, "bob"), 15*time.Second, "alice's unanswered call")
	if !errors.Is(r.err, client.ErrNoAnswer) || r.rep.Result != "no answer" || r.err.Error() != "bob did not answer" {
		t.Fatalf("unanswered call: %v %+v", r.err, r.rep)
	}
	if reps := b.Reports(); len(reps) != 1 || reps[0].Result != "missed" || reps[0].Peer != "alice" {
		t.Fatalf("bob's record: %+v", reps)
	}
}
