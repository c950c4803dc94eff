package client

import (
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/callsig"
)

// TestFirstSignalWaitsForWhatItOffers: a call's first signal goes out the moment this
// side has enough to offer (the gathering over, or a candidate and the relay), and
// otherwise when its wait has passed on the client's clock, with what there is by then.
func TestFirstSignalWaitsForWhatItOffers(t *testing.T) {
	clk := clockwork.NewFakeClock()
	l := &leg{p: &phone{clk: clk}, ufrag: "ufrag", pwd: "pwd"}
	const wait = 50 * time.Millisecond
	signal := func() <-chan callsig.Msg {
		out := make(chan callsig.Msg, 1)
		go func() {
			var m callsig.Msg
			l.firstSignal(t.Context(), &m, wait)
			out <- m
		}()
		// Its wait is on the clock before the test goes on.
		if err := clk.BlockUntilContext(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		return out
	}
	sent := func(out <-chan callsig.Msg, what string) callsig.Msg {
		t.Helper()
		select {
		case m := <-out:
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("no first signal: %s", what)
		}
		return callsig.Msg{}
	}
	notYet := func(out <-chan callsig.Msg, what string) {
		t.Helper()
		select {
		case m := <-out:
			t.Fatalf("first signal sent %s: %+v", what, m)
		default:
		}
	}

	// A candidate, with the relay still to come: the signal waits for the relay, up to
	// the wait.
	out := signal()
	l.mu.Lock()
	l.cands = append(l.cands, "host candidate")
	l.grewLocked()
	l.mu.Unlock()
	notYet(out, "without the relay, before its wait passed")
	clk.Advance(wait)
	if m := sent(out, "after its wait"); !slices.Equal(m.Cands, []string{"host candidate"}) || len(m.Relays) != 0 || m.Ufrag != "ufrag" {
		t.Fatalf("first signal after its wait: %+v", m)
	}

	// The relay allocated: the signal goes out at once, no time passing.
	out = signal()
	l.mu.Lock()
	l.relayAddr = "192.0.2.1:3478"
	l.grewLocked()
	l.mu.Unlock()
	if m := sent(out, "once the relay is there"); !slices.Equal(m.Relays, []string{"192.0.2.1:3478"}) {
		t.Fatalf("first signal with the relay: %+v", m)
	}

	// The gathering over, without a relay: at once too.
	l.mu.Lock()
	l.cands, l.relayAddr = nil, ""
	l.mu.Unlock()
	out = signal()
	l.onCandidate(nil)
	if m := sent(out, "once the gathering is over"); len(m.Cands) != 0 || len(m.Relays) != 0 {
		t.Fatalf("first signal after the gathering: %+v", m)
	}
}
