package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
)

// TestCallThroughCoturn: the client's relay is standard TURN, so it works through any
// RFC 5766 server: here coturn's turnserver with long-term credentials, on loopback, with
// the direct path held back so the call must be relayed by coturn.
func TestCallThroughCoturn(t *testing.T) {
	if _, err := exec.LookPath("turnserver"); err != nil {
		t.Skip("skipping: turnserver missing: apt-get install coturn")
	}
	turnAddr := freeAddr(t)
	_, port, _ := net.SplitHostPort(turnAddr)
	dir := t.TempDir()
	ts := exec.Command("turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "-L", "127.0.0.1", "-p", port,
		"--lt-cred-mech", "--user", "peer:s3cret-pass", "--realm", "coturn.test", "--allow-loopback-peers",
		"--min-port", "52000", "--max-port", "52999", "--log-file", "stdout", "--simple-log",
		"--pidfile", filepath.Join(dir, "turnserver.pid"), "--userdb", filepath.Join(dir, "turndb"))
	var tslog bytes.Buffer
	ts.Stdout, ts.Stderr = &tslog, &tslog
	if err := netlab.StartTied(ts); err != nil { // dies with the test process
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ts.Process.Signal(syscall.SIGKILL)
		ts.Wait()
		if t.Failed() {
			t.Logf("turnserver:\n%s", tslog.String())
		}
	})
	o := startOverlay(t, 2)
	o.register(t, "alice", "bob")
	viaCoturn := []string{"--no-supernode", "--loopback-candidates", "--call-direct-delay", "1h",
		"--turn", "turn:" + turnAddr + "?transport=udp", "--turn-user", "peer", "--turn-password", "s3cret-pass"}
	alice := o.client(t, "alice", viaCoturn...)
	bob := o.client(t, "bob", append(viaCoturn, "--auto-answer")...)
	waitNATKnown(t, alice, bob)
	// bob's record may not have reached the overlay yet: a call that finds him offline
	// is tried again.
	bin := netlab.BuildPeerline(t)
	var rep client.CallReport
	var err error
	if eventually.Await(20*time.Second, "a call that finds bob online", func() bool {
		var out []byte
		out, err = exec.Command(bin, "call", "--data", alice, "--duration", "3s", "--json", "bob").Output()
		rep = client.CallReport{}
		json.Unmarshal(out, &rep)
		return err == nil || !strings.Contains(rep.Error, "offline")
	}) != nil || err != nil {
		t.Fatalf("call: %v %+v", err, rep)
	}
	relayed := false
	for _, p := range rep.Media.Paths {
		if strings.Contains(p.Name, "127.0.0.1:52") && p.PacketsReceived > 0 {
			relayed = true // a path through one of coturn's relayed ports
		}
	}
	t.Logf("path %s %q, %d frames received", rep.Path, rep.Media.ActiveName, rep.Media.FramesReceived)
	if rep.Path != client.PathRelayUDP || !relayed || rep.Media.FramesReceived < 140 {
		t.Fatalf("the call did not go through coturn: %+v", rep)
	}
}
