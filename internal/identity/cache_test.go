package identity

import (
	"errors"
	"testing"
	"time"
)

// TestCache checks that a cached credential is still checked for expiry, and that a
// forged one is refused every time (it never enters the cache).
func TestCache(t *testing.T) {
	issuerPub, issuer := newKey(t)
	userPub, _ := newKey(t)
	_, other := newKey(t)
	now := time.Unix(1_800_000_000, 0)
	b, _ := Sign(issuer, Credential{Kind: KindUser, Name: "alice", PubKey: userPub, Issued: now, Expires: now.Add(time.Hour)})
	forged, _ := Sign(other, Credential{Kind: KindUser, Name: "alice", PubKey: userPub, Issued: now, Expires: now.Add(time.Hour)})
	c := NewCache(issuerPub, 2)
	for i := 0; i < 2; i++ {
		if got, err := c.Verify(b, now); err != nil || got.Name != "alice" {
			t.Fatalf("use %d: %+v, %v", i, got, err)
		}
		if _, err := c.Verify(forged, now); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("forged, use %d: %v", i, err)
		}
	}
	if _, err := c.Verify(b, now.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("cached, at expiry: %v", err)
	}
	// A full cache starts over rather than growing.
	for i := 0; i < 3; i++ {
		k, _ := newKey(t)
		cb, _ := Sign(issuer, Credential{Kind: KindUser, Name: "bob", PubKey: k, Issued: now, Expires: now.Add(time.Hour)})
		if _, err := c.Verify(cb, now); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.m); n > 2 {
		t.Fatalf("cache holds %d, max 2", n)
	}
}
