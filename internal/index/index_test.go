package index

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/identity"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

type user struct {
	name string
	key  ed25519.PrivateKey
	cred []byte
}

func newUser(tb testing.TB, login ed25519.PrivateKey, name string) user {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cred, err := identity.Sign(login, identity.Credential{Kind: identity.KindUser, Name: name,
		PubKey: key.Public().(ed25519.PublicKey), Issued: t0.Add(-time.Hour), Expires: t0.Add(24 * time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return user{name, key, cred}
}

func (u user) record(seq uint64) Record {
	return Record{Name: u.name, Credential: u.cred, Supernode: "sn-a", SNAddr: "192.0.2.1:7001", NAT: "full cone",
		Candidates: []string{"udp 198.51.100.7:4000"}, Blocked: []string{"mallory"}, Seq: seq, Expires: t0.Add(time.Minute)}
}

func TestRecordSignVerify(t *testing.T) {
	loginPub, login, _ := ed25519.GenerateKey(rand.Reader)
	alice := newUser(t, login, "alice")
	raw, err := Sign(alice.key, alice.record(7))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Verify(raw, loginPub, t0)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Name != "alice" || rec.Seq != 7 || len(rec.Candidates) != 1 || !rec.HasBlocked("mallory") || rec.HasBlocked("bob") || rec.NAT != "full cone" {
		t.Fatalf("round trip %+v", rec)
	}
	// No byte of a record can change without detection.
	for i := range raw {
		m := append([]byte(nil), raw...)
		m[i] ^= 0x04
		if _, err := Verify(m, loginPub, t0); err == nil {
			t.Fatalf("byte %d flipped and the record still verifies", i)
		}
	}
	// A supernode (or anyone else) cannot publish alice's record: it does not hold her key.
	_, snKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := Sign(snKey, alice.record(8))
	if _, err := Verify(forged, loginPub, t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged record: %v", err)
	}
	// Nor alter where she is while keeping her signature.
	bob := newUser(t, login, "bob")
	r := bob.record(1)
	r.Name = "alice" // bob's key, alice's name
	impostor, _ := Sign(bob.key, r)
	if _, err := Verify(impostor, loginPub, t0); !errors.Is(err, ErrNameMismatch) {
		t.Fatalf("record under another's name: %v", err)
	}
	if _, err := Verify(raw, loginPub, t0.Add(time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	long := alice.record(9)
	long.Expires = t0.Add(MaxTTL + time.Minute)
	lraw, _ := Sign(alice.key, long)
	if _, err := Verify(lraw, loginPub, t0); !errors.Is(err, ErrTooLong) {
		t.Fatalf("long-lived: %v", err)
	}
	otherLogin, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := Verify(raw, otherLogin, t0); !errors.Is(err, identity.ErrBadSignature) {
		t.Fatalf("credential from another login server: %v", err)
	}
}

func TestRingHolders(t *testing.T) {
	var ms []Member
	for i := 0; i < 100; i++ {
		ms = append(ms, Member{ID: fmt.Sprintf("sn%03d", i), Addr: fmt.Sprintf("192.0.2.%d:7000", i)})
	}
	r := NewRing(ms)
	h := r.Holders("alice", 3, nil)
	if len(h) != 3 || h[0].ID == h[1].ID || h[1].ID == h[2].ID || h[0].ID == h[2].ID {
		t.Fatalf("holders %v", h)
	}
	// Same members in another order: same holders.
	rev := make([]Member, len(ms))
	for i := range ms {
		rev[len(ms)-1-i] = ms[i]
	}
	if h2 := NewRing(rev).Holders("alice", 3, nil); fmt.Sprint(h2) != fmt.Sprint(h) {
		t.Fatalf("order dependent: %v vs %v", h, h2)
	}
	// Skipping a dead first holder moves everyone up by one.
	dead := h[0].ID
	h3 := r.Holders("alice", 3, func(id string) bool { return id != dead })
	if h3[0] != h[1] || h3[1] != h[2] {
		t.Fatalf("after skipping %s: %v (was %v)", dead, h3, h)
	}
	// Removing the member from the ring gives the same answer as skipping it.
	var without []Member
	for _, m := range ms {
		if m.ID != dead {
			without = append(without, m)
		}
	}
	if h4 := NewRing(without).Holders("alice", 3, nil); fmt.Sprint(h4) != fmt.Sprint(h3) {
		t.Fatalf("removal %v != skip %v", h4, h3)
	}
	// Load spread: with 100 members and 10,000 names nobody holds more than 3x the mean.
	count := map[string]int{}
	for i := 0; i < 10000; i++ {
		for _, m := range r.Holders(fmt.Sprintf("user%d", i), 3, nil) {
			count[m.ID]++
		}
	}
	for id, n := range count {
		if n > 3*300 {
			t.Errorf("%s holds %d of 30000 replicas (mean 300)", id, n)
		}
	}
	if len(NewRing(nil).Holders("x", 3, nil)) != 0 {
		t.Fatal("empty ring has holders")
	}
	if got := NewRing(ms[:2]).Holders("x", 3, nil); len(got) != 2 {
		t.Fatalf("2-member ring gave %d holders", len(got))
	}
}

func TestStore(t *testing.T) {
	loginPub, login, _ := ed25519.GenerateKey(rand.Reader)
	_ = loginPub
	alice := newUser(t, login, "alice")
	s := NewStore(time.Hour)
	put := func(seq uint64, offline bool) error {
		r := alice.record(seq)
		r.Offline = offline
		raw, _ := Sign(alice.key, r)
		rec, _ := Parse(raw)
		return s.Put(raw, rec, t0)
	}
	if err := put(5, false); err != nil {
		t.Fatal(err)
	}
	if err := put(5, false); !errors.Is(err, ErrStale) {
		t.Fatalf("replay: %v", err)
	}
	if err := put(4, false); !errors.Is(err, ErrStale) {
		t.Fatalf("older: %v", err)
	}
	e, ok := s.Get("alice", t0)
	if !ok || e.Offline || e.Rec.Seq != 5 {
		t.Fatalf("get %+v", e)
	}
	// Only alice's own supernode can report her gone.
	if s.Gone("alice", "sn-evil", 5, t0) {
		t.Fatal("another supernode marked alice gone")
	}
	if !s.Gone("alice", "sn-a", 5, t0.Add(time.Second)) {
		t.Fatal("alice's supernode could not mark her gone")
	}
	if e, _ := s.Get("alice", t0); !e.Offline || !e.LastSeen.Equal(t0.Add(time.Second)) {
		t.Fatalf("after gone %+v", e)
	}
	// She comes back with a newer record.
	if err := put(6, false); err != nil {
		t.Fatal(err)
	}
	// The record expires without keep-alives: offline, last seen at expiry.
	if e, _ := s.Get("alice", t0.Add(2*time.Minute)); !e.Offline || !e.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after expiry %+v", e)
	}
	if off := s.Expire(t0.Add(2 * time.Minute)); len(off) != 1 {
		t.Fatalf("Expire went offline %v", off)
	}
	s.Expire(t0.Add(2 * time.Hour))
	if s.Len() != 0 {
		t.Fatal("offline entry kept past the keep period")
	}
}

func FuzzParse(f *testing.F) {
	_, login, _ := ed25519.GenerateKey(rand.Reader)
	u := newUser(f, login, "alice")
	raw, _ := Sign(u.key, u.record(1))
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := Parse(b)
		if err != nil {
			return
		}
		if rec.Name == "" || len(rec.Candidates) > MaxCandidates || len(rec.Blocked) > MaxBlocked {
			t.Fatalf("accepted %+v", rec)
		}
		Verify(b, login.Public().(ed25519.PublicKey), t0)
	})
}

func BenchmarkVerify(b *testing.B) {
	loginPub, login, _ := ed25519.GenerateKey(rand.Reader)
	u := newUser(b, login, "alice")
	raw, _ := Sign(u.key, u.record(1))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(raw, loginPub, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHolders1000(b *testing.B) {
	var ms []Member
	for i := 0; i < 1000; i++ {
		ms = append(ms, Member{ID: fmt.Sprintf("sn%04d", i)})
	}
	r := NewRing(ms)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r.Holders(fmt.Sprintf("user%d", i), 3, nil)
	}
}

func TestRingWith(t *testing.T) {
	var ms []Member
	for i := 0; i < 50; i++ {
		ms = append(ms, Member{ID: fmt.Sprintf("sn%03d", i), Addr: fmt.Sprintf("192.0.2.%d:7000", i)})
	}
	r := NewRing(ms[:40])
	// Ten join, five leave, one moves address, one leaves and comes back in the same step.
	moved := Member{ID: "sn001", Addr: "198.51.100.1:7000"}
	add := append(append([]Member(nil), ms[40:]...), moved, ms[7])
	remove := []string{"sn002", "sn003", "sn004", "sn005", "sn006", "sn007"}
	got := r.With(add, remove)
	var want []Member
	for _, m := range ms {
		switch m.ID {
		case "sn002", "sn003", "sn004", "sn005", "sn006":
			continue
		case "sn001":
			m = moved
		}
		want = append(want, m)
	}
	ref := NewRing(want)
	if fmt.Sprint(got.points) != fmt.Sprint(ref.points) || fmt.Sprint(got.Members()) != fmt.Sprint(ref.Members()) {
		t.Fatal("incremental ring differs from a rebuilt one")
	}
	if r.Len() != 40 {
		t.Fatal("With changed the original ring")
	}
	// The same changes to the same ring (another supernode following the same list) give
	// the ring already worked out; other changes do not.
	if again := r.With(add, remove); again != got {
		t.Fatal("the same changes to the same ring worked out twice")
	}
	if other := r.With(add, remove[1:]); other == got || !other.Has("sn002") {
		t.Fatal("different changes gave the remembered ring")
	}
	runtime.KeepAlive(got)
}

// TestRingsInterned: two supernodes that reach the same membership, by different steps,
// share one ring; a different membership gets its own.
func TestRingsInterned(t *testing.T) {
	var ms []Member
	for i := range 50 {
		ms = append(ms, Member{ID: fmt.Sprintf("sn%02d", i), Addr: fmt.Sprintf("192.0.2.%d:7100", i)})
	}
	a := NewRing(ms)
	b := NewRing(ms[:40]).With(ms[40:], nil)
	if a != b {
		t.Fatal("the same members built twice: two rings")
	}
	c := a.With(nil, []string{"sn07"})
	if c == a || c.Len() != 49 || c.Has("sn07") {
		t.Fatalf("a removal changed the shared ring or was lost: %d members", c.Len())
	}
	moved := a.With([]Member{{ID: "sn03", Addr: "192.0.2.200:7100"}}, nil)
	if moved == a {
		t.Fatal("an address change gave the old ring")
	}
	if m, _ := a.Member("sn03"); m.Addr != "192.0.2.3:7100" {
		t.Fatal("the shared ring was changed")
	}
	runtime.KeepAlive(b)
}

func TestOldest(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	r := NewRing([]Member{
		{ID: "c", Addr: "192.0.2.3:1", Since: t0.Add(time.Hour)},
		{ID: "a", Addr: "192.0.2.1:1", Since: t0.Add(2 * time.Hour)},
		{ID: "b", Addr: "192.0.2.2:1", Since: t0.Add(time.Hour)},
	})
	var ids []string
	for _, m := range r.Oldest(10) {
		ids = append(ids, m.ID)
	}
	if fmt.Sprint(ids) != "[b c a]" {
		t.Fatalf("oldest first: %v", ids)
	}
	if got := r.Oldest(1); len(got) != 1 || got[0].ID != "b" {
		t.Fatalf("Oldest(1) = %v", got)
	}
	if got := (&Ring{}).Oldest(5); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
}
