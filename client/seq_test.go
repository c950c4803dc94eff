package client

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRecordSeqSurvivesRestart: a client restarted at the same instant, or on a clock
// set back, signs above the last record of the run before; the holders would refuse an
// equal or lower number as stale and keep the user's last record, then mark it gone.
func TestRecordSeqSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	start := func() *Client {
		t.Helper()
		c, err := New(Config{DataDir: dir, User: "alice", Login: LoginServer{Addr: "192.0.2.1:7000", Key: pub},
			Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := start().nextSeq(at)
	if want := uint64(at.UnixNano()); first != want {
		t.Fatalf("first record: seq %d, want the signing time %d", first, want)
	}
	if again := start().nextSeq(at); again <= first {
		t.Fatalf("restarted at the same instant: seq %d, not above %d", again, first)
	}
	last := start().nextSeq(at.Add(-time.Hour))
	if last <= first+1 {
		t.Fatalf("restarted on a clock an hour back: seq %d, not above %d", last, first+1)
	}
	later := at.Add(time.Minute)
	if got := start().nextSeq(later); got != uint64(later.UnixNano()) {
		t.Fatalf("a minute later: seq %d, want the signing time %d", got, later.UnixNano())
	}

	// An unreadable file is counted and the clock used.
	if err := os.WriteFile(filepath.Join(dir, SeqFile), []byte("not a number"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := start()
	if n := c.m.Get("seq_file_unreadable"); n != 1 {
		t.Fatalf("seq_file_unreadable = %d, want 1", n)
	}
	if got := c.nextSeq(at); got != uint64(at.UnixNano()) {
		t.Fatalf("after an unreadable file: seq %d, want the signing time", got)
	}
}
