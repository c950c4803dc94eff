package loginsrv

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/proto"
)

// slowStore holds TouchUser while block is set, so that resumes pile up.
type slowStore struct {
	Store
	block   atomic.Bool
	waiting atomic.Int32
	release chan struct{}
}

func (s *slowStore) TouchUser(ctx context.Context, name string, now time.Time) error {
	if s.block.Load() {
		s.waiting.Add(1)
		<-s.release
	}
	return s.Store.TouchUser(ctx, name, now)
}

// TestResumesBounded: with every resume turn taken, one more waits ResumeWait and is
// answered busy with a retry-after; it is not queued without bound. The one served goes
// through once the store answers.
func TestResumesBounded(t *testing.T) {
	var ss *slowStore
	ts := startServer(t, func(c *Config) {
		ss = &slowStore{Store: c.Store, release: make(chan struct{})}
		c.Store, c.MaxResumes, c.ResumeWait = ss, 1, 100*time.Millisecond
	})
	name := mustUser(t, ts)
	k1, k2 := newKey(), newKey()
	_, ok1 := login(t, ts, k1, name, "password-u")
	_, ok2 := login(t, ts, k2, name, "password-u")
	ss.block.Store(true)
	first := make(chan error, 1)
	c1 := ts.dial(t, k1)
	go func() {
		_, err := call(t, c1, &proto.Resume{Credential: ok1.Credential})
		first <- err
	}()
	for i := 0; ss.waiting.Load() == 0; i++ {
		if i > 500 {
			t.Fatal("the first resume never reached the store")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := call(t, ts.dial(t, k2), &proto.Resume{Credential: ok2.Credential})
	pe, ok := proto.AsError(err)
	if !ok || !errors.Is(err, proto.ErrBusy) || pe.RetryAfter() < time.Second {
		t.Fatalf("second resume with the only turn taken: %v", err)
	}
	if got := ts.Metrics().Get("resumes_shed"); got != 1 {
		t.Fatalf("resumes_shed = %d", got)
	}
	ss.block.Store(false)
	close(ss.release)
	if err := <-first; err != nil {
		t.Fatalf("the resume served: %v", err)
	}
}

// TestLayerTargetFromPopulation: the heartbeats' client counts make the population, one
// supernode per ClientsPerSupernode of it is wanted, and heartbeat answers carry the
// layer and the other supernodes' loads. When the clients of a supernode vanish (its
// crash, a storm) the target holds for PopulationWindow: the layer is not thought big
// enough just when clients are between supernodes.
func TestLayerTargetFromPopulation(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.ClientsPerSupernode, c.PopulationWindow, c.HeartbeatInterval = 50, time.Minute, 10*time.Second
	})
	a, b := ts.dial(t, newKey()), ts.dial(t, newKey())
	if _, err := call(t, a, &proto.SNRegister{Name: "a", Addr: "192.0.2.1:7001", AdmitSecret: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, b, &proto.SNRegister{Name: "b", Addr: "192.0.2.2:7001", AdmitSecret: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, a, &proto.SNHeartbeat{Addr: "192.0.2.1:7001", Clients: 150, MaxClients: 500}); err != nil {
		t.Fatal(err)
	}
	ts.clock.Add(2 * time.Second) // past the layer's recomputation interval
	m, err := call(t, b, &proto.SNHeartbeat{Addr: "192.0.2.2:7001", Clients: 50, MaxClients: 500})
	if err != nil {
		t.Fatal(err)
	}
	p := m.(*proto.SNPeers)
	if p.LayerSize != 2 || p.LayerWanted != 4 || !p.Short() {
		t.Fatalf("layer %+v, want 2 of 4 (200 clients, 50 per supernode)", p.Layer)
	}
	if len(p.Supernodes) != 1 || p.Supernodes[0].Addr != "192.0.2.1:7001" || p.Supernodes[0].Clients != 150 || p.Supernodes[0].MaxClients != 500 {
		t.Fatalf("loads %+v, want the other supernode with its load", p.Supernodes)
	}
	// a's clients vanish: within the window the target holds.
	ts.clock.Add(2 * time.Second)
	call(t, a, &proto.SNHeartbeat{Addr: "192.0.2.1:7001", Clients: 0, MaxClients: 500})
	ts.clock.Add(2 * time.Second)
	if l := ts.Layer(); l.LayerWanted != 4 {
		t.Fatalf("layer %+v within the window, want the peak's 4", l)
	}
	// Past the window the population is what is attached now: 50 clients, one supernode.
	ts.clock.Add(2 * time.Minute)
	call(t, a, &proto.SNHeartbeat{Addr: "192.0.2.1:7001", Clients: 0, MaxClients: 500})
	call(t, b, &proto.SNHeartbeat{Addr: "192.0.2.2:7001", Clients: 50, MaxClients: 500})
	ts.clock.Add(2 * time.Second)
	if l := ts.Layer(); l.LayerWanted != 1 || l.LayerSize != 2 || l.Short() {
		t.Fatalf("layer %+v after the window, want 2 of 1", l)
	}
}
