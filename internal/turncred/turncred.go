// Package turncred makes and checks the short-lived TURN credentials that the login
// server issues and the relays accept, in the form of the TURN REST API
// (draft-uberti-behave-turn-rest): the user name is "<unix expiry>:<user>" and the
// password is base64(HMAC-SHA1(secret, username)), so a relay checks a credential with
// nothing but the secret and a clock, and any TURN client (coturn's among them) can use
// one.
//
// Each supernode's relay has its own secret, derived by the login server from its relay
// secret and the supernode's id (Derive): a supernode learns only its own, so it can mint
// credentials for no relay but itself. Standalone relays share the login server's secret.
package turncred

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors of Check.
var (
	ErrMalformed = errors.New("turncred: user name is not <expiry>:<user>")
	ErrExpired   = errors.New("turncred: credential expired")
	ErrBadMAC    = errors.New("turncred: password does not match")
)

// Username is the TURN user name for user, valid until expires.
func Username(user string, expires time.Time) string {
	return strconv.FormatInt(expires.Unix(), 10) + ":" + user
}

// Password is the TURN password for username under secret.
func Password(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// New returns a credential for user valid for ttl from now.
func New(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string, expires time.Time) {
	expires = now.Add(ttl).Truncate(time.Second)
	username = Username(user, expires)
	return username, Password(secret, username), expires
}

// Parse splits a user name into expiry and user.
func Parse(username string) (user string, expires time.Time, err error) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok || user == "" {
		return "", time.Time{}, ErrMalformed
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return "", time.Time{}, ErrMalformed
	}
	return user, time.Unix(sec, 0), nil
}

// Check verifies a user name and password against secret at now, and returns the user.
func Check(secret []byte, username, password string, now time.Time) (string, error) {
	user, exp, err := Parse(username)
	if err != nil {
		return "", err
	}
	if !now.Before(exp) {
		return "", fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	if subtle.ConstantTimeCompare([]byte(Password(secret, username)), []byte(password)) != 1 {
		return "", ErrBadMAC
	}
	return user, nil
}

// Derive returns the relay secret of the relay with the given id (a supernode's id)
// from the login server's relay secret.
func Derive(master []byte, relayID string) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte("peerline relay secret v1\x00"))
	m.Write([]byte(relayID))
	return m.Sum(nil)
}
