package client

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestRecordSeqSurvivesRestart: a client restarted at the same instant, or on a clock
// set back, signs above the last record of the run before; the holders would refuse an
// equal or lower number as stale and keep the user's last record, then mark it gone.
func TestRecordSeqSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	pub := loginKey(t)
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	start := func() *Client { t.Helper(); return seqClient(t, dir, pub, at) }
	first := next(start(), at)
	if want := uint64(at.UnixNano()); first != want {
		t.Fatalf("first record: seq %d, want the signing time %d", first, want)
	}
	if again := next(start(), at); again <= first {
		t.Fatalf("restarted at the same instant: seq %d, not above %d", again, first)
	}
	last := next(start(), at.Add(-time.Hour))
	if last <= first+1 {
		t.Fatalf("restarted on a clock an hour back: seq %d, not above %d", last, first+1)
	}
	later := at.Add(time.Minute)
	if got := next(start(), later); got != uint64(later.UnixNano()) {
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
	if got := next(c, at); got != uint64(at.UnixNano()) {
		t.Fatalf("after an unreadable file: seq %d, want the signing time", got)
	}

	// A save that fails is counted, and the numbers still rise.
	path := filepath.Join(dir, SeqFile)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "in the way"), 0o700); err != nil {
		t.Fatal(err)
	}
	c = start()
	a, b := next(c, at), next(c, at)
	if n := c.m.Get("seq_save_errors"); n != 2 || b <= a {
		t.Fatalf("with the file unwritable: seq_save_errors = %d (want 2), seqs %d then %d", n, a, b)
	}
}

// TestRecordSeqConcurrent: publications numbered at once get distinct, rising numbers,
// and the last one is the one saved.
func TestRecordSeqConcurrent(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	c := seqClient(t, dir, loginKey(t), at)
	const n = 16
	seqs := make(chan uint64, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seqs <- next(c, at)
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	var most uint64
	for s := range seqs {
		if seen[s] {
			t.Fatalf("seq %d given twice", s)
		}
		seen[s], most = true, max(most, s)
	}
	b, err := os.ReadFile(filepath.Join(dir, SeqFile))
	if err != nil || string(b) != strconv.FormatUint(most, 10) {
		t.Fatalf("saved %q (%v), want the highest %d", b, err, most)
	}
}

// loginKey is a login server key for clients that never reach one.
func loginKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// seqClient is alice's client on dir, on a clock stopped at at, never run.
func seqClient(t *testing.T, dir string, login ed25519.PublicKey, at time.Time) *Client {
	t.Helper()
	c, err := New(Config{DataDir: dir, User: "alice", Login: LoginServer{Addr: "192.0.2.1:7000", Key: login},
		Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// next numbers a record signed at now, as publish does.
func next(c *Client, now time.Time) uint64 {
	c.seq.mu.Lock()
	defer c.seq.mu.Unlock()
	return c.nextSeqLocked(now)
}
