package memnet

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/ice/v3"
	"github.com/pion/logging"
	"github.com/pion/stun/v2"
	transportv3 "github.com/pion/transport/v3"
	transportv4 "github.com/pion/transport/v4"

	"github.com/peerline/peerline/internal/stunsrv"
)

var (
	_ transportv3.Net = netV3{}
	_ transportv4.Net = netV4{}
)

// iceAgent is a pion/ice/v3 agent on h that gathers host and server-reflexive
// candidates through the STUN server at stunAddr.
func iceAgent(t *testing.T, h *Host, stunAddr string) *ice.Agent {
	t.Helper()
	u, err := stun.ParseURI("stun:" + stunAddr)
	if err != nil {
		t.Fatal(err)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	check, maxReq, failed := 40*time.Millisecond, uint16(50), 5*time.Second
	a, err := ice.NewAgent(&ice.AgentConfig{
		Net:                h.TransportV3(),
		Urls:               []*stun.URI{u},
		NetworkTypes:       []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:     []ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive},
		MulticastDNSMode:   ice.MulticastDNSModeDisabled,
		CheckInterval:      &check,
		MaxBindingRequests: &maxReq,
		FailedTimeout:      &failed,
		LoggerFactory:      lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// gather runs a's candidate gathering to its end and returns the candidates.
func gather(t *testing.T, a *ice.Agent) []ice.Candidate {
	t.Helper()
	var cands []ice.Candidate
	done := make(chan struct{})
	if err := a.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			close(done)
			return
		}
		cands = append(cands, c)
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	<-done
	return cands
}

// TestICEThroughNATs runs pion/ice/v3 over memnet between hosts behind NATs of each
// kind, with a real STUN server (internal/stunsrv) on the internet: ICE connects where
// the NATs allow it, on the candidate types they allow, and fails where they do not.
func TestICEThroughNATs(t *testing.T) {
	fullCone := NATConfig{}
	restricted := NATConfig{Filtering: AddressDependent}
	portRestricted := NATConfig{Filtering: AddressAndPortDependent}
	symmetric := NATConfig{Mapping: AddressAndPortDependent, Filtering: AddressAndPortDependent}
	for _, tc := range []struct {
		name string
		a, b *NATConfig // nil: a public host
		ok   bool
	}{
		{"public-public", nil, nil, true},
		{"full-cone-port-restricted", &fullCone, &portRestricted, true},
		{"port-restricted-port-restricted", &portRestricted, &portRestricted, true},
		{"symmetric-full-cone", &symmetric, &fullCone, true},
		{"symmetric-restricted", &symmetric, &restricted, true},
		{"symmetric-port-restricted", &symmetric, &portRestricted, false},
		{"symmetric-symmetric", &symmetric, &symmetric, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := New(Options{Latency: 20 * time.Millisecond})
				stunHost := n.Host(serverIP)
				pc, err := stunHost.ListenPacket("udp4", serverIP+":3478")
				if err != nil {
					t.Fatal(err)
				}
				srv, err := stunsrv.New(stunsrv.Config{Conns: [4]net.PacketConn{pc}})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				served := make(chan struct{})
				go func() { defer close(served); srv.Serve(ctx) }()
				defer func() { cancel(); srv.Close(); <-served }()

				site := func(cfg *NATConfig, public, private string) *Host {
					if cfg == nil {
						return n.Host(public)
					}
					return n.NAT(public, *cfg).Host(private)
				}
				ha, hb := site(tc.a, "198.51.100.1", "10.0.0.2"), site(tc.b, "198.51.100.2", "10.0.0.2")
				a, b := iceAgent(t, ha, serverIP+":3478"), iceAgent(t, hb, serverIP+":3478")
				defer a.Close()
				defer b.Close()
				ca, cb := gather(t, a), gather(t, b)
				for _, c := range ca {
					if err := b.AddRemoteCandidate(c); err != nil {
						t.Fatal(err)
					}
				}
				for _, c := range cb {
					if err := a.AddRemoteCandidate(c); err != nil {
						t.Fatal(err)
					}
				}
				bu, bp, err := b.GetLocalUserCredentials()
				if err != nil {
					t.Fatal(err)
				}
				au, ap, err := a.GetLocalUserCredentials()
				if err != nil {
					t.Fatal(err)
				}
				cctx, ccancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer ccancel()
				accepted := make(chan *ice.Conn, 1)
				go func() {
					c, _ := b.Accept(cctx, au, ap)
					accepted <- c
				}()
				conn, err := a.Dial(cctx, bu, bp)
				bc := <-accepted
				if !tc.ok {
					if err == nil && bc != nil {
						t.Fatalf("connected where the NATs allow no path")
					}
					return
				}
				if err != nil || bc == nil {
					t.Fatalf("no connection: %v", err)
				}
				if _, err := conn.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 8)
				m, err := bc.Read(buf)
				if err != nil || string(buf[:m]) != "ping" {
					t.Fatalf("read %q, %v", buf[:m], err)
				}
				pair, err := a.GetSelectedCandidatePair()
				if err != nil || pair == nil {
					t.Fatalf("no selected pair: %v", err)
				}
				// The remote address on the wire is the peer's public one: a NAT's address
				// for a peer behind one.
				want := "198.51.100.2"
				if got := netip.MustParseAddr(pair.Remote.Address()).String(); got != want {
					t.Errorf("selected pair's remote %s (%s), want an address of %s", got, pair.Remote.Type(), want)
				}
				t.Logf("selected %s -> %s", pair.Local.Type(), pair.Remote.Type())
			})
		})
	}
}
