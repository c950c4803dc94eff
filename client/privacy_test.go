package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/turncred"
)

// logCapture is an io.Writer that keeps everything the roles log.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(l.buf.String(), "\n")
}

func marker(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// encodings are the forms a secret of raw bytes could take in a log line.
func encodings(b []byte) []string {
	return []string{hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b)}
}

// TestNoSecretsInLogs runs every role in-process (login server, three supernodes with
// their STUN servers and TURN relays, two clients) with every log line captured at the
// lowest level any of them uses, and has the users do what puts secrets in motion:
// register and log in with passwords, log in with a wrong one, exchange messages, message
// a user who is offline and one who does not exist, and call. No log line of any role
// may hold a message's text, a password, the admission or relay secrets, or any key.
func TestNoSecretsInLogs(t *testing.T) {
	capture := &logCapture{}
	log := slog.New(slog.NewTextHandler(capture, &slog.HandlerOptions{Level: slog.LevelDebug - 8}))
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3, STUN: true, Relay: true, Logger: log})
	alicePW, bobPW, wrongPW := marker(t, "pw-alice-"), marker(t, "pw-bob-"), marker(t, "pw-wrong-")
	o.Register("alice", alicePW)
	o.Register("bob", bobPW)
	o.Register("carol", marker(t, "pw-carol-"))
	rec := t.TempDir()
	callCfg := func(c *client.Config) {
		c.Call.Loopback = true
		c.NATTimeout = 300 * time.Millisecond
	}
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", alicePW, callCfg)
	b := o.StartClient(filepath.Join(t.TempDir(), "bob"), "bob", bobPW, func(c *client.Config) {
		callCfg(c)
		c.Call.AutoAnswer, c.Call.RecordDir = true, rec
	})
	o.Eventually("alice and bob attached, published, NAT known", func() bool {
		return attached(a)() && attached(b)() && a.Metrics().Get("publishes") > 1 && b.Metrics().Get("publishes") > 1 &&
			a.Status().NAT != nil && b.Status().NAT != nil
	})
	// A wrong password: the login fails, and the attempt is logged without it.
	wrong := o.StartClient(filepath.Join(t.TempDir(), "alice-wrong"), "alice", wrongPW, nil)
	select {
	case err := <-wrong.Done():
		if err == nil {
			t.Fatal("a wrong password logged in")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the client with a wrong password is still running")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	toBob, toAlice, toNobody, toCarol := marker(t, "text-to-bob-"), marker(t, "text-to-alice-"), marker(t, "text-to-zed-"), marker(t, "text-to-carol-")
	overlaytest.Eventually(t, 10*time.Second, "alice messages bob", func() bool { return a.Message(ctx, "bob", "hi "+toBob) == nil })
	overlaytest.Eventually(t, 10*time.Second, "bob messages alice", func() bool { return b.Message(ctx, "alice", toAlice+" back") == nil })
	overlaytest.Eventually(t, 10*time.Second, "both inboxes", func() bool { return len(a.Inbox()) == 1 && len(b.Inbox()) == 1 })
	if err := a.Message(ctx, "zed", toNobody); err == nil {
		t.Fatal("a message to a user who does not exist was delivered")
	}
	if err := a.Message(ctx, "carol", toCarol); err == nil {
		t.Fatal("a message to offline carol was delivered")
	}
	// A call: signalling with ephemeral keys and ICE passwords, TURN credentials, audio.
	rep, err := a.Call(ctx, "bob", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: 100}})
	if err != nil || rep.Result != "completed" {
		t.Fatalf("call: %v %+v", err, rep)
	}
	overlaytest.Eventually(t, 10*time.Second, "bob's report", func() bool { return len(b.Reports()) > 0 })

	secrets := map[string]string{
		"alice's password": alicePW, "bob's password": bobPW, "the wrong password": wrongPW,
		"a message to bob": toBob, "a message to alice": toAlice, "a message to zed": toNobody, "a message to carol": toCarol,
		"the admission secret": o.Secret, "the relay secret": "test relay secret",
		// Call signalling (inside e2ee envelopes) names these fields: its text never goes
		// to a log either.
		"call signalling": `"eph":`, "call signalling (ICE password)": `"pwd":`, "call signalling (box key)": `"box":`,
	}
	addKey := func(what string, b []byte) {
		for i, e := range encodings(b) {
			secrets[what+" "+string(rune('a'+i))] = e
		}
	}
	addKey("the login server's signing key", o.Key)
	addKey("the login server's signing seed", o.Key.Seed())
	for _, sn := range o.Supernodes() {
		addKey("relay secret of "+sn.ID(), turncred.Derive([]byte("test relay secret"), sn.ID()))
	}
	for _, c := range []*overlaytest.Client{a, b} {
		for _, f := range []string{client.KeyFile, client.BoxKeyFile} {
			raw, err := os.ReadFile(filepath.Join(c.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.TrimSpace(string(raw)); len(s) >= 16 {
				secrets[c.Dir+"/"+f] = s
			}
			addKey(c.Dir+"/"+f, raw)
		}
	}

	lines := capture.lines()
	// The capture must have seen what it claims to check: every role, down to debug.
	for _, want := range []string{"message received", "call ended", "local candidate", "login failed", "registered", "client attached", "relay listening"} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, want) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("no log line says %q: the capture missed a role or a level (%d lines)", want, len(lines))
		}
	}
	leaks := 0
	for what, s := range secrets {
		for _, l := range lines {
			if strings.Contains(l, s) {
				leaks++
				t.Errorf("%s is in the log: %s", what, l)
				break
			}
		}
	}
	t.Logf("%d log lines from every role checked for %d secrets: %d leaked", len(lines), len(secrets), leaks)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the test ran out of time")
	}
}
