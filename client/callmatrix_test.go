package client_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/memnet"
)

// matrixKinds are the NAT kinds of the NAT lab's call matrix (e2e's callKinds), as
// memnet builds them, with the classic name each client must detect.
var matrixKinds = []struct {
	kind, classic string
	site          func(n *memnet.Network, i int) *memnet.Host
}{
	{"public", "open", func(n *memnet.Network, i int) *memnet.Host { return n.Host(fmt.Sprintf("198.51.100.%d", 10+i)) }},
	{"full-cone", "full cone", natSite(memnet.NATConfig{})},
	{"restricted-cone", "restricted cone", natSite(memnet.NATConfig{Filtering: memnet.AddressDependent})},
	{"port-restricted-cone", "port-restricted cone", natSite(memnet.NATConfig{Filtering: memnet.AddressAndPortDependent})},
	{"symmetric", "symmetric", natSite(memnet.NATConfig{Mapping: memnet.AddressAndPortDependent, Filtering: memnet.AddressAndPortDependent})},
	{"udp-blocked", "udp-blocked", natSite(memnet.NATConfig{BlockUDP: true})},
	// As in the lab: a full-cone home router behind a port-restricted carrier NAT.
	{"double-nat", "port-restricted cone", func(n *memnet.Network, i int) *memnet.Host {
		carrier := n.NAT(fmt.Sprintf("198.51.100.%d", 100+i), memnet.NATConfig{Filtering: memnet.AddressAndPortDependent})
		return carrier.NAT("100.64.0.2", memnet.NATConfig{}).Host("192.168.1.2")
	}},
}

func natSite(cfg memnet.NATConfig) func(n *memnet.Network, i int) *memnet.Host {
	return func(n *memnet.Network, i int) *memnet.Host {
		return n.NAT(fmt.Sprintf("198.51.100.%d", 100+i), cfg).Host("10.0.0.2")
	}
}

// TestCallMatrixInProcess is the NAT lab's call matrix (e2e TestCallMatrix) on an
// in-process network: every pair of NAT kinds, and two hosts behind one NAT with and
// without hairpinning, with real supernodes (RFC 5780 STUN on two addresses, TURN
// relays over UDP and TCP), clients detecting their NATs, ICE and end-to-end encrypted
// audio, without root. Each call must take the path client.PredictPath gives for the
// NATs the two clients detected, and carry the audio both ways.
//
// What only kernels show stays in the lab: a UDP-blocked client there reaches a public
// or cone peer over TCP (a direct connection, or a simultaneous open through two kernel
// NATs, with SO_REUSEPORT), which memnet does not model, so here every UDP-blocked pair
// takes the relay over TCP; kernel NAT port allocation, and killed processes.
func TestCallMatrixInProcess(t *testing.T) {
	began := time.Now()
	n := memnet.New(memnet.Options{Latency: 2 * time.Millisecond})
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, STUN: true, Relay: true, CacheTTL: -1, Net: n})
	type user struct {
		name, classic string
		c             *overlaytest.Client
	}
	var users []*user
	start := func(name, classic string, h *memnet.Host) *user {
		o.Register(name, "pw-"+name)
		c := o.StartClient(filepath.Join(t.TempDir(), name), name, "pw-"+name, func(c *client.Config) {
			overlaytest.Site(h)(c)
			c.Call.AutoAnswer = true
			c.NATTimeout = 300 * time.Millisecond
		})
		u := &user{name, classic, c}
		users = append(users, u)
		return u
	}
	type pair struct{ a, b *user }
	var pairs []pair
	byKind := map[string][2]*user{}
	for i, k := range matrixKinds {
		a := start(strings.ReplaceAll(k.kind, "-", "")+"a", k.classic, k.site(n, 2*i))
		b := start(strings.ReplaceAll(k.kind, "-", "")+"b", k.classic, k.site(n, 2*i+1))
		byKind[k.kind] = [2]*user{a, b}
	}
	for i, ka := range matrixKinds {
		for _, kb := range matrixKinds[i:] {
			pairs = append(pairs, pair{byKind[ka.kind][0], byKind[kb.kind][1]})
		}
	}
	if only := os.Getenv("PEERLINE_CALL_PAIRS"); only != "" {
		// Debugging: only the pairs with a client whose name contains this.
		var some []pair
		for _, p := range pairs {
			if strings.Contains(p.a.name+" "+p.b.name, only) {
				some = append(some, p)
			}
		}
		pairs = some
	}
	for i, hairpin := range []bool{true, false} {
		nat := n.NAT(fmt.Sprintf("198.51.100.%d", 200+i), memnet.NATConfig{Filtering: memnet.AddressAndPortDependent, Hairpin: hairpin})
		a := start(fmt.Sprintf("lan%va", hairpin), "port-restricted cone", nat.Host("10.0.0.2"))
		b := start(fmt.Sprintf("lan%vb", hairpin), "port-restricted cone", nat.Host("10.0.0.3"))
		pairs = append(pairs, pair{a, b})
	}
	for _, u := range users {
		o.Eventually(u.name+" attached and its NAT detected", func() bool {
			st := u.c.Status()
			return st.NAT != nil && st.Supernode != nil && u.c.Metrics().Get("publishes") > 0
		})
		if got := u.c.Status().NAT.Classic; got != u.classic {
			t.Errorf("%s detected %q, want %q", u.name, got, u.classic)
		}
	}

	t.Logf("%d clients attached with their NATs detected in %v", len(users), time.Since(began).Round(time.Millisecond))
	began = time.Now()
	const frames = 100 // two seconds each way
	type result struct {
		rep  client.CallReport
		want string
		err  error
	}
	results := make([]result, len(pairs))
	// A few calls at a time, never two on one client: whenever a call ends, start every
	// waiting pair whose two clients are free.
	busy := map[*user]bool{}
	done := make(chan int)
	started, running := make([]bool, len(pairs)), 0
	for finished := 0; finished < len(pairs); finished++ {
		for i, p := range pairs {
			if running >= 4 || started[i] || busy[p.a] || busy[p.b] {
				continue
			}
			started[i], busy[p.a], busy[p.b] = true, true, true
			running++
			go func() {
				want := client.PredictPath(callsig.NAT{Classic: p.a.classic}, callsig.NAT{Classic: p.b.classic})
				switch {
				case strings.HasPrefix(p.a.name, "lan"):
					want = client.PathDirect // behind one NAT the host candidates meet on the LAN
				case p.a.classic == "udp-blocked" || p.b.classic == "udp-blocked":
					want = client.PathRelayTCP // no TCP punch or direct TCP in memnet: the lab's
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				rep, err := p.a.c.Call(ctx, p.b.name, client.CallOptions{Source: &media.Sine{Freq: 440, Frames: frames}})
				results[i] = result{rep, want, err}
				done <- i
			}()
		}
		i := <-done
		busy[pairs[i].a], busy[pairs[i].b] = false, false
		running--
	}
	t.Logf("%d calls in %v", len(pairs), time.Since(began).Round(time.Millisecond))
	var tb strings.Builder
	fmt.Fprintf(&tb, "\n%-24s %-24s %-10s %-10s %7s %8s\n", "caller", "callee", "expected", "path", "frames", "setup ms")
	for i, r := range results {
		p := pairs[i]
		fmt.Fprintf(&tb, "%-24s %-24s %-10s %-10s %7d %8.0f\n", p.a.name, p.b.name, r.want, r.rep.Path, r.rep.Media.FramesReceived, r.rep.SetupMs)
		switch {
		case r.err != nil:
			t.Errorf("%s -> %s: %v", p.a.name, p.b.name, r.err)
		case r.rep.Path != r.want:
			t.Errorf("%s -> %s: path %q, want %s (%+v)", p.a.name, p.b.name, r.rep.Path, r.want, r.rep)
		case r.rep.Media.FramesReceived < frames*9/10:
			t.Errorf("%s -> %s: the caller heard %d of %d frames", p.a.name, p.b.name, r.rep.Media.FramesReceived, frames)
		}
	}
	t.Log(tb.String())
}
