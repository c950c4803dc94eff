package client_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/memnet"
)

// TestRunLeavesNoGoroutine: clients that attached, placed and answered a relayed call
// (ICE agents, TURN clients, media sessions) return from Run with none of their
// goroutines, nor pion's, left behind.
func TestRunLeavesNoGoroutine(t *testing.T) {
	n := memnet.New(memnet.Options{})
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, STUN: true, Relay: true, CacheTTL: -1, Net: n})
	symmetric := memnet.NATConfig{Mapping: memnet.AddressAndPortDependent, Filtering: memnet.AddressAndPortDependent}
	var cs []*overlaytest.Client
	for i, name := range []string{"alice", "bob"} {
		o.Register(name, "password "+name)
		h := n.NAT(fmt.Sprintf("198.51.100.%d", 1+i), symmetric).Host("10.0.0.2")
		cs = append(cs, o.StartClient(filepath.Join(t.TempDir(), name), name, "password "+name, func(c *client.Config) {
			overlaytest.Site(h)(c)
			c.Call.AutoAnswer, c.NATTimeout = true, 300*time.Millisecond
		}))
	}
	o.Eventually("both attached with their NATs known", func() bool {
		for _, c := range cs {
			if st := c.Status(); st.NAT == nil || c.Metrics().Get("publishes") == 0 {
				return false
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := cs[0].Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: 25}})
	if err != nil || rep.Path != client.PathRelayUDP {
		t.Fatalf("call: %v, path %q", err, rep.Path)
	}
	pkgs := []string{"github.com/peerline/peerline/client.", "github.com/pion/ice/", "github.com/pion/turn/v4.(*Client)",
		"github.com/pion/turn/v4/internal/client."}
	if running := overlaytest.Leftover(0, pkgs...); len(running) < 2 {
		t.Fatalf("only %d goroutines of the running clients seen: the check would miss a leak", len(running))
	}
	for _, c := range cs {
		c.Stop()
	}
	// Checked the moment Run has returned, without waiting: Run waits for what it started.
	if left := overlaytest.Leftover(0, pkgs...); len(left) > 0 {
		t.Fatalf("%d goroutines left after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
