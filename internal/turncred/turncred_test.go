package turncred

import (
	"errors"
	"testing"
	"time"
)

func TestCredentials(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	secret := []byte("s3cret")
	u, p, exp := New(secret, "alice", 10*time.Minute, now)
	if u != "1800000600:alice" || !exp.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("username %q expires %v", u, exp)
	}
	if user, err := Check(secret, u, p, now); err != nil || user != "alice" {
		t.Fatalf("check: %q %v", user, err)
	}
	if _, err := Check(secret, u, p, exp); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := Check([]byte("other"), u, p, now); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("other secret: %v", err)
	}
	if _, err := Check(secret, "1800000600:mallory", p, now); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("other user: %v", err)
	}
	for _, bad := range []string{"alice", ":alice", "x:alice", "1800000600:", "-5:alice"} {
		if _, err := Check(secret, bad, p, now); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// The value Python's hmac module gives for the same inputs (coturn computes the same
	// HMAC-SHA1 for --use-auth-secret).
	if got := Password([]byte("north"), "1433895918:alice"); got != "RqMvcGPYTJMGThVLSi4amT4zFtI=" {
		t.Fatalf("password %q", got)
	}
	a, b := Derive([]byte("m"), "sn1"), Derive([]byte("m"), "sn2")
	if string(a) == string(b) || len(a) != 32 {
		t.Fatal("derived secrets collide")
	}
}
