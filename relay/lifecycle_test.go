package relay_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/relay"
)

// TestRunLeavesNoGoroutine: a relay that served an allocation over UDP and one over TCP
// returns from Run with none of its goroutines, nor pion's server's, left behind (the
// clients' own pion goroutines are theirs, and not counted).
func TestRunLeavesNoGoroutine(t *testing.T) {
	secret := []byte("lifecycle secret")
	s, err := relay.New(relay.Config{Secret: secret, Listen: "127.0.0.1:0", AllowPrivatePeers: true, Listeners: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	eventually.That(t, 5*time.Second, "relay listening", func() bool { return s.Addr().IsValid() })
	addr := s.Addr().String()
	for _, tcp := range []bool{false, true} {
		var conn net.PacketConn
		if tcp {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conn = turn.NewSTUNConn(nc)
		} else if conn, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		user, pw, _ := relay.Credentials(secret, "alice", time.Hour, time.Now())
		c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: addr, Conn: conn, Username: user, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		alloc, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocate (tcp %v): %v", tcp, err)
		}
		// The clients go (and their goroutines with them); their allocations stay, for
		// Run to end.
		defer alloc.Close()
		c.Close()
		conn.Close()
	}
	pkgs := []string{"github.com/peerline/peerline/relay.", "github.com/pion/turn/v4.(*Server)",
		"github.com/pion/turn/v4/internal/server.", "github.com/pion/turn/v4/internal/allocation."}
	if running := eventually.Leftover(0, pkgs...); len(running) < 3 {
		t.Fatalf("only %d goroutines of the running relay seen: the check would miss a leak", len(running))
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	// pion's Server.Close does not wait for the goroutine it runs per TCP connection,
	// which may still be closing its connection when Run returns: a second for those.
	if left := eventually.Leftover(time.Second, pkgs...); len(left) > 0 {
		t.Fatalf("%d goroutines left after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
