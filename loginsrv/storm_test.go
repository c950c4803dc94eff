package loginsrv

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/proto"
)

// hold keeps the callers of a store method waiting until release is closed.
type hold struct {
	waiting atomic.Int32
	release chan struct{}
}

func newHold() hold { return hold{release: make(chan struct{})} }

func (h *hold) wait() {
	h.waiting.Add(1)
	<-h.release
}

// reached waits until a caller is held.
func (h *hold) reached(t *testing.T, what string) {
	t.Helper()
	eventually.That(t, 5*time.Second, what+" to reach the store", func() bool { return h.waiting.Load() > 0 })
}

// slowStore holds User while block is set, so that resumes pile up.
type slowStore struct {
	Store
	hold
	block atomic.Bool
}

func (s *slowStore) User(ctx context.Context, name string) (User, error) {
	if s.block.Load() {
		s.wait()
	}
	return s.Store.User(ctx, name)
}

// TestResumesBounded: with every resume turn taken, one more waits ResumeWait and is
// answered busy with a retry-after; it is not queued without bound. The one served goes
// through once the store answers.
func TestResumesBounded(t *testing.T) {
	var ss *slowStore
	ts := startServer(t, func(c *Config) {
		ss = &slowStore{Store: c.Store, hold: newHold()}
		// No AuthTimeout, so that the only timers on the clock are the write-behind
		// ticker and the second resume's wait for a turn.
		c.Store, c.MaxResumes, c.ResumeWait, c.AuthTimeout = ss, 1, 100*time.Millisecond, -1
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
	ss.reached(t, "the first resume")
	second := make(chan error, 1)
	c2 := ts.dial(t, k2)
	go func() {
		_, err := call(t, c2, &proto.Resume{Credential: ok2.Credential})
		second <- err
	}()
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer bcancel()
	if err := ts.clock.BlockUntilContext(bctx, 2); err != nil {
		t.Fatalf("the second resume never waited for a turn: %v", err)
	}
	select {
	case err := <-second:
		t.Fatalf("the second resume was answered before ResumeWait passed: %v", err)
	default:
	}
	ts.clock.Advance(ts.cfg.ResumeWait)
	err := <-second
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
	ts.clock.Advance(2 * time.Second) // past the layer's recomputation interval
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
	ts.clock.Advance(2 * time.Second)
	call(t, a, &proto.SNHeartbeat{Addr: "192.0.2.1:7001", Clients: 0, MaxClients: 500})
	ts.clock.Advance(2 * time.Second)
	if l := ts.Layer(); l.LayerWanted != 4 {
		t.Fatalf("layer %+v within the window, want the peak's 4", l)
	}
	// Past the window the population is what is attached now: 50 clients, one supernode.
	ts.clock.Advance(2 * time.Minute)
	call(t, a, &proto.SNHeartbeat{Addr: "192.0.2.1:7001", Clients: 0, MaxClients: 500})
	call(t, b, &proto.SNHeartbeat{Addr: "192.0.2.2:7001", Clients: 50, MaxClients: 500})
	ts.clock.Advance(2 * time.Second)
	if l := ts.Layer(); l.LayerWanted != 1 || l.LayerSize != 2 || l.Short() {
		t.Fatalf("layer %+v after the window, want 2 of 1", l)
	}
}

// slowSNStore holds UpsertSupernodes until release is closed.
type slowSNStore struct {
	Store
	hold
}

func (s *slowSNStore) UpsertSupernodes(ctx context.Context, rs []SupernodeRecord) error {
	s.wait()
	return s.Store.UpsertSupernodes(ctx, rs)
}

// TestRegistrationsWrittenBehind: with the database stuck, supernodes still register
// (a layer registering at once must not queue on the writer); their rows are written
// in one batch once it answers.
func TestRegistrationsWrittenBehind(t *testing.T) {
	var ss *slowSNStore
	ts := startServer(t, func(c *Config) {
		ss = &slowSNStore{Store: c.Store, hold: newHold()}
		c.Store = ss
	})
	for i := range 3 {
		c := ts.dial(t, newKey())
		if _, err := call(t, c, &proto.SNRegister{Name: fmt.Sprintf("sn%d", i), Addr: fmt.Sprintf("192.0.2.%d:7001", i+1), AdmitSecret: "s3cret"}); err != nil {
			t.Fatalf("registration %d with the database stuck: %v", i, err)
		}
	}
	ts.clock.Advance(ts.cfg.SeenFlush)
	ss.reached(t, "the rows")
	close(ss.release)
	// The counter is added once the batch is written: waiting for it waits for the rows.
	eventually.That(t, 5*time.Second, "the supernode rows written", func() bool {
		return ts.Metrics().Get("supernode_rows_written") > 0
	})
	if got := ts.Metrics().Get("supernode_rows_written"); got != 3 {
		t.Fatalf("supernode_rows_written = %d, want the 3 rows in one batch", got)
	}
	rows, err := ss.Store.Supernodes(context.Background(), time.Time{}, 10)
	if err != nil || len(rows) != 3 {
		t.Fatalf("%d rows written (%v), want 3", len(rows), err)
	}
}

// TestLastSeenBatched: a login's last-seen time is visible to buddies at once and
// reaches the database in the next batch, not on the login's path.
func TestLastSeenBatched(t *testing.T) {
	var store Store
	ts := startServer(t, func(c *Config) { store = c.Store })
	mustRegister(t, ts, "ann", "password-a")
	mustRegister(t, ts, "ben", "password-b")
	ca, _ := login(t, ts, newKey(), "ann", "password-a")
	if _, err := call(t, ca, &proto.BuddyAdd{Name: "ben"}); err != nil {
		t.Fatal(err)
	}
	login(t, ts, newKey(), "ben", "password-b")
	seen := ts.clock.Now()
	m, err := call(t, ca, &proto.BuddyList{})
	if err != nil {
		t.Fatal(err)
	}
	if bl := m.(*proto.BuddyListOK); len(bl.Buddies) != 1 || !bl.Buddies[0].LastSeen.Equal(seen) {
		t.Fatalf("ben's last-seen as ann sees it: %+v, want %v", bl.Buddies, seen)
	}
	if u, err := store.User(context.Background(), "ben"); err != nil || !u.LastSeen.IsZero() {
		t.Fatalf("ben's last-seen in the database before a flush: %v (%v), want none yet", u.LastSeen, err)
	}
	ts.clock.Advance(ts.cfg.SeenFlush)
	// The counter is added once the batch is written: waiting for it waits for the rows.
	eventually.That(t, 5*time.Second, "a write-behind flush", func() bool {
		return ts.Metrics().Get("write_behind_flushes") > 0
	})
	if u, err := store.User(context.Background(), "ben"); err != nil || !u.LastSeen.Equal(seen) {
		t.Fatalf("ben's last-seen in the database after a flush: %v (%v), want %v", u.LastSeen, err, seen)
	}
	if got := ts.Metrics().Get("last_seen_written"); got != 2 {
		t.Fatalf("last_seen_written = %d, want ann's and ben's in one batch", got)
	}
}

// TestSweepKeepsMembersHeardFrom: a supernode whose heartbeat has arrived but not yet
// been answered (the server busy) is not dropped for it; one heard from by nobody is.
func TestSweepKeepsMembersHeardFrom(t *testing.T) {
	ms := newMembers()
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	busy, gone := &session{}, &session{}
	ms.upsert(proto.SupernodeInfo{ID: "busy", Addr: "192.0.2.1:7001"}, busy, t0)
	ms.upsert(proto.SupernodeInfo{ID: "gone", Addr: "192.0.2.2:7001"}, gone, t0)
	now := t0.Add(time.Minute)
	busy.heard.Store(now.Add(-time.Second).UnixNano()) // a request arrived a second ago
	if n := ms.sweep(now, now.Add(-30*time.Second), time.Second); n != 1 {
		t.Fatalf("sweep dropped %d members, want 1", n)
	}
	if !ms.has("busy") || ms.has("gone") {
		t.Fatalf("after the sweep: busy kept %v, gone kept %v", ms.has("busy"), ms.has("gone"))
	}
}
