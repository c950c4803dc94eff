package e2e

// Privacy with the real binary on loopback: what every role writes to its log at debug
// level holds no message text, password or secret.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
)

func privacyMarker(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestNoSecretsInLogsWithBinaries runs a login server, two supernodes (with STUN and
// TURN) and two clients as processes, every one at --log-level debug, registers and logs
// in with marker passwords, tries a wrong one, exchanges marker messages and calls; then
// no line any process wrote holds a marker or the admission secret.
func TestNoSecretsInLogsWithBinaries(t *testing.T) {
	debug := "PEERLINE_LOG_LEVEL=debug"
	root := t.TempDir()
	lsDir := filepath.Join(root, "login")
	key, secret := loginsrvInit(t, lsDir)
	lsAddr := freeAddr(t)
	var procs []*proc
	procs = append(procs, startProc(t, "loginsrv", []string{debug}, append([]string{"loginsrv", "--data", lsDir, "--listen", lsAddr, "--heartbeat", "500ms"}, fastArgon...)...))
	waitListening(t, lsAddr)
	for i := 1; i <= 2; i++ {
		addr := freeAddr(t)
		procs = append(procs, startProc(t, fmt.Sprintf("sn%d", i), []string{debug}, "supernode", "--data", filepath.Join(root, fmt.Sprintf("sn%d", i)),
			"--listen", addr, "--login", lsAddr, "--login-key", key, "--admit-secret", secret,
			"--keepalive", "1s", "--name", fmt.Sprintf("sn%d", i), "--stun-alt-ip", "127.0.0.2", "--turn-allow-private-peers"))
		waitListening(t, addr)
	}
	pw := map[string]string{"alice": privacyMarker("pw-alice-"), "bob": privacyMarker("pw-bob-")}
	for _, u := range []string{"alice", "bob"} {
		cmd := exec.Command(netlab.BuildPeerline(t), "register", "--login", lsAddr, "--login-key", key, u)
		cmd.Env = append(os.Environ(), "PEERLINE_PASSWORD="+pw[u], debug)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("register %s: %v\n%s", u, err, out)
		}
	}
	waitListed(t, filepath.Join(root, "sn1"), filepath.Join(root, "sn2"))
	dirs := map[string]string{}
	for _, u := range []string{"alice", "bob"} {
		dirs[u] = filepath.Join(root, u)
		args := []string{"client", "--data", dirs[u], "--login", lsAddr, "--login-key", key, "--user", u, "--no-supernode", "--loopback-candidates"}
		if u == "bob" {
			args = append(args, "--auto-answer")
		}
		procs = append(procs, startProc(t, "client-"+u, []string{"PEERLINE_PASSWORD=" + pw[u], debug}, args...))
	}
	waitNATKnown(t, dirs["alice"], dirs["bob"])
	// A wrong password is refused and the client exits.
	wrongPW := privacyMarker("pw-wrong-")
	wrong := startProc(t, "client-wrong", []string{"PEERLINE_PASSWORD=" + wrongPW, debug}, "client", "--data", filepath.Join(root, "wrong"),
		"--login", lsAddr, "--login-key", key, "--user", "alice", "--no-supernode")
	procs = append(procs, wrong)
	select {
	case <-wrong.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the client with a wrong password still runs")
	}

	peerline := func(args ...string) (string, error) {
		cmd := exec.Command(netlab.BuildPeerline(t), args...)
		cmd.Env = append(os.Environ(), debug)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	toBob, toAlice := privacyMarker("text-to-bob-"), privacyMarker("text-to-alice-")
	eventually.That(t, 20*time.Second, "alice messages bob", func() bool {
		_, err := peerline("msg", "--data", dirs["alice"], "bob", "hi "+toBob)
		return err == nil
	})
	eventually.That(t, 20*time.Second, "bob messages alice", func() bool {
		_, err := peerline("msg", "--data", dirs["bob"], "alice", toAlice)
		return err == nil
	})
	if out, err := peerline("inbox", "--data", dirs["bob"]); err != nil || !strings.Contains(out, toBob) {
		t.Fatalf("bob's inbox: %v %s", err, out)
	}
	eventually.That(t, 30*time.Second, "alice calls bob", func() bool {
		out, err := peerline("call", "--data", dirs["alice"], "--duration", "2s", "bob")
		if err != nil {
			t.Logf("call: %v %s", err, out)
		}
		return err == nil
	})

	secrets := map[string]string{"alice's password": pw["alice"], "bob's password": pw["bob"], "the wrong password": wrongPW,
		"the message to bob": toBob, "the message to alice": toAlice, "the admission secret": secret}
	lines, debugLines := 0, 0
	for _, p := range procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			lines++
			if strings.Contains(l, "level=DEBUG") {
				debugLines++
			}
			for what, s := range secrets {
				if strings.Contains(l, s) {
					t.Errorf("%s is in the log of %s: %s", what, p.name, l)
				}
			}
		}
	}
	if debugLines == 0 {
		t.Fatalf("no debug line in %d log lines: the roles did not log at debug", lines)
	}
	if b, _ := os.ReadFile(procs[4].log); !strings.Contains(string(b), `msg="message received"`) {
		t.Fatalf("bob's log does not show the message arriving: the check saw nothing to check\n%s", b)
	}
	t.Logf("%d log lines (%d at debug) of %d processes checked for %d secrets", lines, debugLines, len(procs), len(secrets))
}
