package e2e

// Foundation tests: the real peerline binary on loopback, started and killed as an
// operator would. They need no root.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
)

// proc is a peerline process on loopback with its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc runs the binary with args; the process is killed (by PID) when the test
// ends, and its log is printed if the test failed.
func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	bin := netlab.BuildPeerline(t)
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := netlab.StartTied(cmd); err != nil { // dies with the test process
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- log of %s ----\n%s", name, b)
		}
	})
	return p
}

func (p *proc) kill(sig syscall.Signal) { signalAndWait(p.cmd, p.done, sig) }

// signalAndWait sends sig to the process of cmd (by PID) unless it has ended (done
// closed) and waits for it to end; SIGKILL after 10 s.
func signalAndWait(cmd *exec.Cmd, done <-chan struct{}, sig syscall.Signal) {
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// run runs the binary to completion and returns its stdout.
func run(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, netlab.BuildPeerline(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("peerline %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// handedOut holds every port freePortRun gave out in this test process, so that two
// callers (parallel subtests included) never get the same one.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePortRun finds n consecutive ports below the kernel's ephemeral range
// (portsBelowEphemeral) that are free over TCP and UDP on 127.0.0.1 and over UDP on
// 127.0.0.2, and that it never gave out before. Below that range no socket of another
// process is given the port by the kernel between this probe and the bind of the process
// under test, as happened to a supernode's STUN socket with a port taken from the
// ephemeral range.
func freePortRun(t *testing.T, n int) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	lo, hi := portsBelowEphemeral()
	r := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	for try := 0; try < 200; try++ {
		base := lo + r.IntN(hi-lo-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			if handedOut.ports[p] {
				ok = false
				break
			}
			for _, probe := range []func() (io.Closer, error){
				func() (io.Closer, error) { return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)) },
				func() (io.Closer, error) { return net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p)) },
				func() (io.Closer, error) { return net.ListenPacket("udp", fmt.Sprintf("127.0.0.2:%d", p)) },
			} {
				c, err := probe()
				if err != nil {
					ok = false
					break
				}
				c.Close()
			}
		}
		if ok {
			for p := base; p < base+n; p++ {
				handedOut.ports[p] = true
			}
			return base
		}
	}
	t.Fatal("no run of free ports found")
	return 0
}

// portsBelowEphemeral is the range freePortRun picks from: 20000-32000, below the
// kernel's ephemeral range (32768-60999 by default on Linux), or the 12,000 ports below
// that range where it starts lower. Where it starts below 5024 there is no room: the
// default range is kept, and the race it avoids is back, if rare.
func portsBelowEphemeral() (lo, hi int) {
	lo, hi = 20000, 32000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first >= hi || first < 1024+4000 {
		return lo, hi
	}
	return max(1024, first-12000), first
}

// freeAddr is an address on 127.0.0.1 whose port is free over both TCP and UDP (a
// supernode serves STUN on its own port), taken by freePortRun.
func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePortRun(t, 1))
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	eventually.That(t, 20*time.Second, "something listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// loginsrvInit creates a login server's key material and returns its key.
func loginsrvInit(t *testing.T, dir string) (key, secret string) {
	var st struct {
		LoginKey    string `json:"login_key"`
		AdmitSecret string `json:"admit_secret"`
	}
	if err := json.Unmarshal(run(t, "loginsrv", "--data", dir, "--init", "--json"), &st); err != nil {
		t.Fatal(err)
	}
	return st.LoginKey, st.AdmitSecret
}

// fastArgon keeps the binary's password hashing cheap in tests.
var fastArgon = []string{"--argon2-time", "1", "--argon2-memory", "64", "--argon2-threads", "1"}

// TestLoginServerSIGKILLLosesNoAccount kills the login server with SIGKILL right after a
// registration is acknowledged; after a restart every acknowledged account logs in.
func TestLoginServerSIGKILLLosesNoAccount(t *testing.T) {
	dir := t.TempDir()
	keyText, _ := loginsrvInit(t, dir)
	key, err := identity.DecodeKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	args := append([]string{"loginsrv", "--data", dir, "--listen", addr}, fastArgon...)
	ls := client.LoginServer{Addr: addr, Key: key}
	const rounds = 3
	var acked []string
	for round := 0; round < rounds; round++ {
		p := startProc(t, fmt.Sprintf("loginsrv-%d", round), nil, args...)
		waitListening(t, addr)
		// Accounts acknowledged before earlier kills are all there.
		for _, name := range acked {
			loginOK(t, ls, name)
		}
		for i := 0; i < 5; i++ {
			name := fmt.Sprintf("user%d-%d", round, i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := client.Register(ctx, nil, ls, name, "password-"+name)
			cancel()
			if err != nil {
				t.Fatalf("register %s: %v", name, err)
			}
			acked = append(acked, name)
		}
		p.kill(syscall.SIGKILL) // right after the last acknowledgement
	}
	startProc(t, "loginsrv-final", nil, args...)
	waitListening(t, addr)
	for _, name := range acked {
		loginOK(t, ls, name)
	}
	t.Logf("%d accounts registered across %d SIGKILLs, all present", len(acked), rounds)
}

func loginOK(t *testing.T, ls client.LoginServer, name string) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cfg, _ := secure.ClientConfig(key, secure.PinnedKey(ls.Key))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := secure.Dial(ctx, &net.Dialer{}, ls.Addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := rpc.New(tc, rpc.Options{})
	go c.Run(ctx)
	defer c.Close()
	if _, err := rpc.Call[*proto.LoginOK](ctx, c, &proto.Login{Name: name, Password: "password-" + name}); err != nil {
		t.Fatalf("login %s after restart: %v", name, err)
	}
}

type statusJSON struct {
	User      string `json:"user"`
	LoggedIn  bool   `json:"logged_in"`
	Supernode *struct {
		Name string `json:"name"`
		Addr string `json:"addr"`
	} `json:"supernode"`
}

func status(t *testing.T, dir string) (statusJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, netlab.BuildPeerline(t), "status", "--data", dir, "--json").Output()
	var st statusJSON
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// TestByHandOverlayReattach runs every role as its own process, as the README's by-hand
// section does, kills the supernode a client is attached to with SIGKILL, and checks the
// client reattaches to the other supernode within 10 s.
func TestByHandOverlayReattach(t *testing.T) {
	root := t.TempDir()
	lsDir := filepath.Join(root, "login")
	keyText, secret := loginsrvInit(t, lsDir)
	lsAddr := freeAddr(t)
	startProc(t, "loginsrv", nil, append([]string{"loginsrv", "--data", lsDir, "--listen", lsAddr, "--heartbeat", "1s"}, fastArgon...)...)
	waitListening(t, lsAddr)

	sns := map[string]*proc{}
	for i := 1; i <= 2; i++ {
		addr := freeAddr(t)
		sns[addr] = startProc(t, fmt.Sprintf("sn%d", i), nil, "supernode", "--data", filepath.Join(root, fmt.Sprintf("sn%d", i)),
			"--listen", addr, "--login", lsAddr, "--login-key", keyText, "--admit-secret", secret, "--keepalive", "1s", "--name", fmt.Sprintf("sn%d", i))
		waitListening(t, addr)
	}
	users := []string{"alice", "bob"}
	for _, u := range users {
		cmd := exec.Command(netlab.BuildPeerline(t), "register", "--login", lsAddr, "--login-key", keyText, u)
		cmd.Env = append(os.Environ(), "PEERLINE_PASSWORD=password-"+u)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("register %s: %v\n%s", u, err, out)
		}
	}
	// The login server lists both supernodes once they are admitted; start clients then.
	waitListed(t, filepath.Join(root, "sn1"), filepath.Join(root, "sn2"))
	for _, u := range users {
		startProc(t, "client-"+u, []string{"PEERLINE_PASSWORD=password-" + u}, "client", "--data", filepath.Join(root, u),
			"--login", lsAddr, "--login-key", keyText, "--user", u)
	}
	var st statusJSON
	for _, u := range users {
		eventually.That(t, 20*time.Second, u+" attached", func() bool {
			var err error
			st, err = status(t, filepath.Join(root, u))
			return err == nil && st.Supernode != nil
		})
		t.Logf("%s attached to %s at %s", u, st.Supernode.Name, st.Supernode.Addr)
	}
	aliceDir := filepath.Join(root, "alice")
	st, _ = status(t, aliceDir)
	// Let the client's host cache learn the other supernode before the kill.
	eventually.That(t, 20*time.Second, "alice's host cache holds both supernodes", func() bool {
		b, err := os.ReadFile(filepath.Join(aliceDir, client.HostCacheFile))
		return err == nil && strings.Count(string(b), `"addr"`) == 2
	})
	victim := st.Supernode.Addr
	sns[victim].kill(syscall.SIGKILL)
	killed := time.Now()
	eventually.That(t, 10*time.Second, "alice reattached to the other supernode", func() bool {
		st, err := status(t, aliceDir)
		return err == nil && st.Supernode != nil && st.Supernode.Addr != victim
	})
	took := time.Since(killed)
	st, _ = status(t, aliceDir)
	t.Logf("supernode %s killed; alice reattached to %s in %v", victim, st.Supernode.Addr, took.Round(time.Millisecond))
}

// TestDemo runs 'peerline demo --json' as a newcomer would.
func TestDemo(t *testing.T) {
	var res struct {
		OK    bool `json:"ok"`
		Users []struct {
			Name          string `json:"name"`
			LoggedIn      bool   `json:"logged_in"`
			SupernodeAddr string `json:"supernode_addr"`
		} `json:"users"`
		Supernodes []struct{ Addr string } `json:"supernodes"`
		Call       *client.CallReport      `json:"call"`
	}
	out := run(t, "demo", "--json")
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("demo --json is not JSON: %v\n%s", err, out)
	}
	if !res.OK || len(res.Users) != 2 || len(res.Supernodes) != 3 {
		t.Fatalf("demo result: %s", out)
	}
	for _, u := range res.Users {
		if !u.LoggedIn || u.SupernodeAddr == "" {
			t.Fatalf("user %s not logged in and attached: %s", u.Name, out)
		}
	}
	// The demo ends with a real call: 3 s of audio each way.
	if c := res.Call; c == nil || c.Result != "completed" || c.Path == "" || c.Media.FramesReceived < 140 || c.Media.FramesSent < 140 {
		t.Fatalf("demo call: %+v", res.Call)
	}
	t.Logf("demo call: path %s, setup %.0f ms, %d frames each way", res.Call.Path, res.Call.SetupMs, res.Call.Media.FramesReceived)
}
