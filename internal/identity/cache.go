package identity

import (
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"
)

// Cache remembers the credentials whose signature it checked, so that a server that sees
// one credential over and over (a supernode finds the user's credential inside every
// record the user publishes, every keep-alive period) checks the signature once. The
// expiry is checked on every use. It is safe for concurrent use.
type Cache struct {
	issuer ed25519.PublicKey
	max    int

	mu sync.Mutex // mu protects m
	m  map[string]Credential
}

// NewCache returns a cache of credentials issued by issuer that holds at most max of
// them (0 = 10,000); when full it starts over.
func NewCache(issuer ed25519.PublicKey, max int) *Cache {
	if max <= 0 {
		max = 10_000
	}
	return &Cache{issuer: issuer, max: max, m: make(map[string]Credential)}
}

// Verify is Verify(b, issuer, now), with the signature checked only the first time b is
// seen.
func (c *Cache) Verify(b []byte, now time.Time) (Credential, error) {
	c.mu.Lock()
	cred, ok := c.m[string(b)]
	c.mu.Unlock()
	if !ok {
		var err error
		if cred, err = Verify(b, c.issuer, now); err != nil {
			return Credential{}, err
		}
		c.mu.Lock()
		if len(c.m) >= c.max {
			clear(c.m)
		}
		c.m[string(b)] = cred
		c.mu.Unlock()
		return cred, nil
	}
	if !now.Before(cred.Expires) {
		return Credential{}, fmt.Errorf("%w (expired %s)", ErrExpired, cred.Expires.Format(time.RFC3339))
	}
	return cred, nil
}

// VerifyHolder is VerifyHolder(b, issuer, peerKey, kind, now) with the signature checked
// only the first time b is seen: a supernode checks a user's credential when it attaches
// and again in each record it publishes, and a user restarted (a mass reboot) attaches
// again with the same one.
func (c *Cache) VerifyHolder(b []byte, peerKey ed25519.PublicKey, kind Kind, now time.Time) (Credential, error) {
	cred, err := c.Verify(b, now)
	if err != nil {
		return Credential{}, err
	}
	return checkHolder(cred, peerKey, kind)
}
