package overlaysim

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/memnet"
)

// TestCallInSimulation places calls between users of the simulation, each behind a NAT
// of its own on the simulated internet: every call must connect on the path their
// detected NATs predict (client.PredictPath) and carry the audio. One pair can punch
// (restricted cone and port-restricted cone), one cannot (symmetric against
// port-restricted: the relays), one has a public side. PEERLINE_SIM=1000,10000 places
// them in the 1,000-supernode overlay; CI runs 50 supernodes and 500 users.
func TestCallInSimulation(t *testing.T) {
	sns, users := scale(t)
	keep, hb := pace(sns, users)
	restricted := &memnet.NATConfig{Filtering: memnet.AddressDependent}
	portRestricted := &memnet.NATConfig{Filtering: memnet.AddressAndPortDependent}
	symmetric := &memnet.NATConfig{Mapping: memnet.AddressAndPortDependent, Filtering: memnet.AddressAndPortDependent}
	nats := []*memnet.NATConfig{restricted, portRestricted, symmetric, portRestricted, nil, symmetric}
	classic := []string{"restricted cone", "port-restricted cone", "symmetric", "port-restricted cone", "open", "symmetric"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := Start(ctx, Options{Supernodes: sns, Users: users, KeepAlive: keep, Heartbeat: hb, CallNATs: nats, Progress: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("%d supernodes and %d users up in %v", sns, users, time.Since(start).Round(time.Millisecond))
	// The client detects its NAT after attaching, and again if a test timed out (under
	// -race a loaded machine answers late).
	var notYet string
	if eventually.Await(time.Minute, "every caller attached, its NAT detected as set up", func() bool {
		for i := range nats {
			st := s.Users[i].Client().Status()
			if st.NAT == nil || st.Supernode == nil || st.NAT.Classic != classic[i] {
				got := "no NAT detected"
				if st.NAT != nil {
					got = fmt.Sprintf("detected %q", st.NAT.Classic)
				}
				notYet = fmt.Sprintf("%s after a minute: %s, attached %v; want %q", s.Users[i].Name, got, st.Supernode != nil, classic[i])
				return false
			}
		}
		return true
	}) != nil {
		t.Fatal(notYet)
	}
	for i := 0; i+1 < len(nats); i += 2 {
		a, b := s.Users[i], s.Users[i+1]
		want := client.PredictPath(callsig.NAT{Classic: classic[i]}, callsig.NAT{Classic: classic[i+1]})
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		rep, err := a.Client().Call(cctx, b.Name, client.CallOptions{Source: &media.Sine{Freq: 440, Frames: 100}})
		ccancel()
		if err != nil {
			t.Fatalf("%s (%s) calls %s (%s): %v", a.Name, classic[i], b.Name, classic[i+1], err)
		}
		t.Logf("%s (%s) -> %s (%s): path %s, predicted %s, setup %.0f ms, frames received %d",
			a.Name, classic[i], b.Name, classic[i+1], rep.Path, want, rep.SetupMs, rep.Media.FramesReceived)
		if rep.Path != want || rep.Media.FramesReceived < 90 {
			t.Errorf("%s -> %s: path %s with %d frames received, want %s and 100", a.Name, b.Name, rep.Path, rep.Media.FramesReceived, want)
		}
	}
}
