package e2e

// Exit codes and values of the CLI, with the real binary on loopback: what a command
// prints and returns when the thing asked for is not there, and when the command line
// is wrong.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
)

// runCode runs the binary with args (in dir, with env added) and returns exit code,
// stdout and stderr.
func runCode(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, netlab.BuildPeerline(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("peerline %s did not end within 60 s", strings.Join(args, " "))
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, so.String(), se.String()
}

// TestCLIExitCodes: each item of the "Exit codes and values", against a running
// overlay where one is needed.
func TestCLIExitCodes(t *testing.T) {
	o := startOverlay(t, 2)
	o.register(t, "alice", "bob")
	alice := o.client(t, "alice", "--no-supernode")
	waitNATKnown(t, alice)

	t.Run("search for no such user exits 1", func(t *testing.T) {
		code, out, errOut := runCode(t, "", nil, "search", "--data", alice, "zed")
		if code != 1 || !strings.Contains(errOut, "peerline: no such user zed") || out != "" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		code, out, errOut = runCode(t, "", nil, "search", "zed", "--data", alice, "--json")
		var res struct{ Results []any }
		if code != 1 || json.Unmarshal([]byte(out), &res) != nil || len(res.Results) != 0 || !strings.Contains(errOut, "no such user zed") {
			t.Fatalf("--json: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		// And one that exists still exits 0, flags after the name.
		if code, out, errOut := runCode(t, "", nil, "search", "alice", "--data", alice); code != 0 || !strings.Contains(out, "alice") {
			t.Fatalf("search alice: exit %d, %q %q", code, out, errOut)
		}
	})

	t.Run("nat at a dead port is an error, not a NAT type", func(t *testing.T) {
		dead := freeAddr(t) // nothing listens there, over UDP or TCP
		code, out, errOut := runCode(t, "", nil, "nat", "--stun", dead, "--timeout", "300ms")
		if code != 1 || strings.Contains(out, "udp-blocked") || !strings.Contains(errOut, "no STUN server answered") ||
			!strings.Contains(errOut, "no answer is not a NAT type") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		code, out, _ = runCode(t, "", nil, "nat", "--stun", dead, "--timeout", "300ms", "--json")
		if code != 1 || out != "" {
			t.Fatalf("--json: exit %d, stdout %q", code, out)
		}
		// A live server (a supernode's STUN) still gives a type and exit 0.
		code, out, errOut = runCode(t, "", nil, "nat", "--stun", o.sns[0], "--timeout", "1s")
		if code != 0 || !strings.Contains(out, "NAT type:         open") {
			t.Fatalf("live server: exit %d, %q %q", code, out, errOut)
		}
	})

	t.Run("usage errors: one line, exit 2", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"status", "--data", alice, "--log-level", "loud"}, "status: unknown flag --log-level"},
			{[]string{"client", "--data", t.TempDir(), "--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
			{[]string{"call", "--data", alice, "bob", "--duration", "-5s"}, "--duration -5s: want a duration of 0 or more"},
			{[]string{"call", "bob", "--data", alice, "--duration", "ten"}, `call: --duration "ten": want a duration such as 10s`},
			{[]string{"supernode", "--data", t.TempDir(), "--turn-quota-kbps", "many"}, `supernode: --turn-quota-kbps "many": want a whole number`},
			{[]string{"nat", "--stun", o.sns[0], "--local", "nowhere"}, `--local "nowhere": want IP:PORT`},
			{[]string{"stun", "--primary", "nowhere"}, `--primary "nowhere": want IP:PORT`},
			{[]string{"client", "--data", t.TempDir(), "--login", "127.0.0.1:1", "--login-key", o.key, "--user", "x", "--turn", "turn:h?x"}, `--turn turn:h?x: unknown "x"`},
			{[]string{"relay", "--data", t.TempDir(), "--port-range", "9-1"}, `--port-range "9-1": want MIN-MAX`},
		} {
			code, out, errOut := runCode(t, "", nil, c.args...)
			if code != 2 || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 || out != "" ||
				strings.Contains(errOut, "USAGE") {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", c.args, code, out, errOut, c.want)
			}
		}
	})

	t.Run("version, and in status", func(t *testing.T) {
		code, out, _ := runCode(t, "", nil, "version")
		code2, out2, _ := runCode(t, "", nil, "--version")
		if code != 0 || code2 != 0 || !strings.HasPrefix(out, "peerline ") || !strings.Contains(out2, strings.TrimPrefix(strings.TrimSpace(out), "peerline ")) {
			t.Fatalf("version: %d %q; --version: %d %q", code, out, code2, out2)
		}
		v := strings.TrimPrefix(strings.TrimSpace(out), "peerline ")
		for _, dir := range []string{alice, filepath.Join(o.root, "sn1")} {
			_, text, _ := runCode(t, "", nil, "status", "--data", dir)
			_, js, _ := runCode(t, "", nil, "status", "--data", dir, "--json")
			var st struct{ Version string }
			json.Unmarshal([]byte(js), &st)
			if !strings.Contains(text, "version:    "+v) || st.Version != v {
				t.Errorf("%s: status text %q, JSON version %q; want %q", dir, text, st.Version, v)
			}
		}
	})

	t.Run("supernode status shows clients, ring and records", func(t *testing.T) {
		// alice is attached to one of the two; find which.
		var text string
		var all []string
		if eventually.Await(20*time.Second, "a supernode status showing alice, a ring of 2 and records", func() bool {
			all = all[:0]
			for i := range o.sns {
				_, s, _ := runCode(t, "", nil, "status", "--data", filepath.Join(o.root, fmt.Sprintf("sn%d", i+1)))
				all = append(all, s)
				if strings.Contains(s, "clients:    1: alice") {
					text = s
				}
			}
			return text != "" && strings.Contains(text, "ring:       2 members") && !strings.Contains(text, "records:    0 held")
		}) != nil {
			t.Fatalf("supernode status never showed alice, a ring of 2 and records:\n%s", strings.Join(all, "\n"))
		}
		if !strings.Contains(text, "records:") || !strings.Contains(text, "peer 127.0.0.1:") {
			t.Fatalf("status text:\n%s", text)
		}
	})

	t.Run("a data dir with its role down names the command to start", func(t *testing.T) {
		sn := filepath.Join(t.TempDir(), "sn9")
		addr := freeAddr(t)
		p := startProc(t, "sn9", nil, "supernode", "--data", sn, "--listen", addr, "--login", o.lsAddr,
			"--login-key", o.key, "--admit-secret", o.secret)
		waitListening(t, addr)
		p.kill(9)
		code, _, errOut := runCode(t, "", nil, "status", "--data", sn)
		if code != 1 || !strings.Contains(errOut, "start 'peerline supernode --data "+sn+"' first") {
			t.Fatalf("stopped supernode: exit %d, %q", code, errOut)
		}
		// A client's dir (alice's, copied without its socket) names the client command.
		cdir := filepath.Join(t.TempDir(), "alice")
		os.MkdirAll(cdir, 0o700)
		b, _ := os.ReadFile(filepath.Join(alice, "client.json"))
		os.WriteFile(filepath.Join(cdir, "client.json"), b, 0o600)
		code, _, errOut = runCode(t, "", nil, "status", "--data", cdir)
		if code != 1 || !strings.Contains(errOut, "start 'peerline client --data "+cdir+"' first") {
			t.Fatalf("stopped client: exit %d, %q", code, errOut)
		}
		code, _, errOut = runCode(t, "", nil, "status", "--data", filepath.Join(o.root, "login"))
		if code != 1 || !strings.Contains(errOut, "login server's data dir") {
			t.Fatalf("login server dir: exit %d, %q", code, errOut)
		}
	})

	t.Run("a client without password or terminal exits at once", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "bob")
		start := time.Now()
		// No PEERLINE_PASSWORD, stdin not a terminal (nothing: /dev/null).
		var env []string
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "PEERLINE_") {
				env = append(env, e)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, netlab.BuildPeerline(t), "client", "--data", dir, "--login", o.lsAddr,
			"--login-key", o.key, "--user", "bob", "--no-supernode")
		cmd.Env = env
		outb, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if ctx.Err() != nil || !ok || ee.ExitCode() != 1 ||
			strings.TrimSpace(string(outb)) != "peerline: no password: set PEERLINE_PASSWORD or run in a terminal" {
			t.Fatalf("client without password: %v after %v\n%s", err, time.Since(start), outb)
		}
		// The same with the login server down: still at once, not retrying.
		cmd = exec.CommandContext(ctx, netlab.BuildPeerline(t), "client", "--data", filepath.Join(t.TempDir(), "b2"),
			"--login", freeAddr(t), "--login-key", o.key, "--user", "bob", "--no-supernode")
		cmd.Env = env
		outb, err = cmd.CombinedOutput()
		if ctx.Err() != nil || err == nil || !strings.Contains(string(outb), "no password") {
			t.Fatalf("client without password, login server down: %v\n%s", err, outb)
		}
		t.Logf("both exited in %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("supernode port rules: adjacent listen ports, bind errors name the flag", func(t *testing.T) {
		// Two supernodes on adjacent ports with --stun-alt-ip: the alternate port is a
		// free one, so the second does not collide with the first's.
		base := adjacentFreePorts(t)
		for i := 0; i < 2; i++ {
			addr := fmt.Sprintf("127.0.0.1:%d", base+i)
			startProc(t, fmt.Sprintf("adj%d", i), nil, "supernode", "--data", filepath.Join(t.TempDir(), "adj"), "--listen", addr,
				"--login", o.lsAddr, "--login-key", o.key, "--admit-secret", o.secret, "--stun-alt-ip", "127.0.0.2")
			waitListening(t, addr)
		}
		// A fixed alternate port that is taken: the error names --stun-alt-port.
		taken, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		port := taken.LocalAddr().(*net.UDPAddr).Port
		code, _, errOut := runCode(t, "", nil, "supernode", "--data", t.TempDir(), "--listen", freeAddr(t),
			"--login", o.lsAddr, "--login-key", o.key, "--admit-secret", o.secret, "--stun-alt-ip", "127.0.0.2",
			"--stun-alt-port", fmt.Sprint(port))
		if code != 1 || !strings.Contains(errOut, "--stun-alt-port") || !strings.Contains(errOut, "address already in use") {
			t.Fatalf("taken --stun-alt-port: exit %d, %q", code, errOut)
		}
		// A --listen that is taken names --listen.
		code, _, errOut = runCode(t, "", nil, "supernode", "--data", t.TempDir(), "--listen", o.sns[0],
			"--login", o.lsAddr, "--login-key", o.key, "--admit-secret", o.secret)
		if code != 1 || !strings.Contains(errOut, "--listen "+o.sns[0]) {
			t.Fatalf("taken --listen: exit %d, %q", code, errOut)
		}
	})
}

// adjacentFreePorts finds a port p such that p and p+1 are free over TCP and UDP on
// 127.0.0.1 and over UDP on 127.0.0.2.
func adjacentFreePorts(t *testing.T) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := p < 65535
		for q := p; q <= p+1 && ok; q++ {
			for _, a := range []string{"tcp 127.0.0.1", "udp 127.0.0.1", "udp 127.0.0.2"} {
				nw, ip, _ := strings.Cut(a, " ")
				var c interface{ Close() error }
				if nw == "tcp" {
					c, err = net.Listen(nw, fmt.Sprintf("%s:%d", ip, q))
				} else {
					c, err = net.ListenPacket(nw, fmt.Sprintf("%s:%d", ip, q))
				}
				if err != nil {
					ok = false
					break
				}
				c.Close()
			}
		}
		if ok {
			return p
		}
	}
	t.Fatal("no two adjacent free ports")
	return 0
}
