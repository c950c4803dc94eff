package client_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/supernode"
)

// restartOn stops c and starts its user again from dir, attached to the supernode at
// addr only.
func restartOn(t *testing.T, o *overlaytest.Overlay, c *overlaytest.Client, dir, addr string) *overlaytest.Client {
	t.Helper()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c2 := o.StartClient(dir, "", "", func(cfg *client.Config) { cfg.Prefer, cfg.ParallelAttach = addr, 1 })
	o.Eventually("attached again", attached(c2))
	return c2
}

// TestRestartResumesSession: a client restarted from its data directory attaches again
// with its supernode's session ticket (one X25519 operation a side, no signature), and a
// supernode restarted since, or one that does not resume sessions, makes the full
// handshake on the same connection instead.
func TestRestartResumesSession(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, SupernodeConfig: func(cfg *supernode.Config) {
		cfg.NoTickets = cfg.Name == "sn2" // a version from before tickets
	}})
	sns := o.Supernodes()
	o.Register("alice", "correct horse")
	dir := filepath.Join(t.TempDir(), "alice")
	prefer := func(addr string) func(*client.Config) {
		return func(cfg *client.Config) { cfg.Prefer, cfg.ParallelAttach = addr, 1 }
	}
	c := o.StartClient(dir, "alice", "correct horse", prefer(sns[0].Addr))
	o.Eventually("alice attached", attached(c))
	if got := c.Metrics().Get("attach_resumed"); got != 0 {
		t.Fatalf("a first attachment resumed (%d)", got)
	}
	sessions := filepath.Join(dir, client.SessionsFile)
	o.Eventually("sessions.json written (with the host cache, soon after)", func() bool {
		_, err := os.Stat(sessions)
		return err == nil
	})
	b, err := os.ReadFile(sessions)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, client.SessionsFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600: it holds secrets", client.SessionsFile, fi.Mode().Perm())
	}
	var f struct {
		Sessions []struct {
			Addr   string `json:"addr"`
			Ticket []byte `json:"ticket"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal(b, &f); err != nil || len(f.Sessions) != 1 || f.Sessions[0].Addr != sns[0].Addr {
		t.Fatalf("%s after the first attachment: %s (%v)", client.SessionsFile, b, err)
	}

	resumedAt := sns[0].Metrics().Get("handshakes_resumed")
	c = restartOn(t, o, c, dir, sns[0].Addr)
	if got := c.Metrics().Get("attach_resumed"); got != 1 {
		t.Fatalf("attach_resumed = %d after a restart, want 1", got)
	}
	if got := sns[0].Metrics().Get("handshakes_resumed") - resumedAt; got != 1 {
		t.Fatalf("the supernode resumed %d sessions, want 1", got)
	}
	if c.Status().Supernode == nil || c.Status().Supernode.Addr != sns[0].Addr {
		t.Fatalf("attached to %+v", c.Status().Supernode)
	}
	if err := c.Stop(); err != nil { // writes what is due
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(sessions); string(again) != string(b) {
		t.Fatalf("a resumed session rewrote %s: the saved ticket still resumes", client.SessionsFile)
	}

	// The supernode restarts while alice is down: a new process cannot open the ticket
	// of the last.
	sn0 := o.Restart(sns[0])
	o.Eventually("sn0 back", func() bool { return sn0.Registered() })
	c = o.StartClient(dir, "", "", prefer(sn0.Addr))
	o.Eventually("alice attached to the restarted supernode", attached(c))
	o.Eventually("the restarted supernode's ticket replaces the refused one", func() bool {
		again, _ := os.ReadFile(sessions)
		return len(again) > 0 && string(again) != string(b)
	})
	if c.Metrics().Get("attach_resumed") != 0 || c.Metrics().Get("attach_ticket_refused") != 1 {
		t.Fatalf("after the supernode's restart: resumed %d, refused %d; want 0 and 1",
			c.Metrics().Get("attach_resumed"), c.Metrics().Get("attach_ticket_refused"))
	}
	// and its new ticket resumes the next time.
	c = restartOn(t, o, c, dir, sn0.Addr)
	if got := c.Metrics().Get("attach_resumed"); got != 1 {
		t.Fatalf("attach_resumed = %d with the restarted supernode's ticket, want 1", got)
	}

	// A supernode that does not resume sessions gives no ticket; the one of sn0 stays.
	c = restartOn(t, o, c, dir, sns[1].Addr)
	c = restartOn(t, o, c, dir, sns[1].Addr)
	if c.Metrics().Get("attach_resumed") != 0 || c.Metrics().Get("attach_ticket_refused") != 0 {
		t.Fatal("a session resumed, or a ticket was tried, with a supernode that gives none")
	}
	c = restartOn(t, o, c, dir, sn0.Addr)
	if got := c.Metrics().Get("attach_resumed"); got != 1 {
		t.Fatalf("attach_resumed = %d back at sn0, want 1", got)
	}
}

// TestCheckedCredentialOnlyAsSaved: the credential's signature goes unchecked at start
// only when the credential file holds the very bytes sessions.json says were checked; a
// credential changed on disk is checked (and refused) as before.
func TestCheckedCredentialOnlyAsSaved(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{})
	o.Register("alice", "correct horse")
	dir := filepath.Join(t.TempDir(), "alice")
	c := o.StartClient(dir, "alice", "correct horse", nil)
	o.Eventually("alice attached", attached(c))
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, client.SessionsFile))
	if err != nil || !json.Valid(b) || !strings.Contains(string(b), `"user_credential"`) {
		t.Fatalf("%s holds no checked credential: %s (%v)", client.SessionsFile, b, err)
	}
	c = o.StartClient(dir, "", "", nil)
	o.Eventually("alice attached again", attached(c))
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, client.CredentialFile)
	cred, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cred[len(cred)-1] ^= 1 // the signature's last byte
	if err := os.WriteFile(path, cred, 0o600); err != nil {
		t.Fatal(err)
	}
	c = o.StartClient(dir, "alice", "", nil) // no password: only a valid saved credential attaches
	select {
	case err := <-c.Done():
		if !errors.Is(err, client.ErrNeedPassword) {
			t.Fatalf("a forged credential on disk: Run = %v, want ErrNeedPassword", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a client started on a forged credential")
	}
}
