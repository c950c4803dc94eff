package client_test

import (
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
)

// TestLastErrorAgesOut: the error status shows is dropped once an attachment succeeds
// (it named supernodes that failed), and in any case once it is five minutes old.
func TestLastErrorAgesOut(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: -1})
	o.Register("alice", "correct horse")
	o.Register("bob", "correct horse")

	// bob retries only once an hour: his one attach error stays, and ages out.
	var skew atomic.Int64
	bob := o.StartClient(filepath.Join(t.TempDir(), "bob"), "bob", "correct horse", func(cfg *client.Config) {
		cfg.RetryBase, cfg.RetryMax = time.Hour, time.Hour
		cfg.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	o.Eventually("bob's attach error shown", func() bool { return bob.Status().LastError != "" })
	st := bob.Status()
	if !strings.Contains(st.LastError, "no supernode") || st.LastErrorAt.IsZero() {
		t.Fatalf("bob's status: error %q at %v", st.LastError, st.LastErrorAt)
	}
	skew.Store(int64(4 * time.Minute))
	if bob.Status().LastError == "" {
		t.Fatal("a 4-minute-old error is hidden already")
	}
	skew.Store(int64(5*time.Minute + time.Second))
	if st := bob.Status(); st.LastError != "" || !st.LastErrorAt.IsZero() {
		t.Fatalf("a 5-minute-old error is still shown: %q at %v", st.LastError, st.LastErrorAt)
	}

	// alice retries fast: her attach error goes once a supernode appears and she attaches.
	alice := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice's attach error shown", func() bool { return alice.Status().LastError != "" })
	o.AddSupernode(time.Second)
	o.Eventually("alice attached", attached(alice))
	if st := alice.Status(); st.LastError != "" {
		t.Fatalf("attached, yet status shows %q", st.LastError)
	}
	if v := alice.Status().Version; v == "" {
		t.Fatal("status has no version")
	}
}
