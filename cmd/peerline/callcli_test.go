package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
)

// The wording of call control and search as 'peerline' prints it, against clients
// running in-process. Each command runs as a process of its own, as from a shell (the
// test binary re-executed as peerline): its standard output, standard error and exit
// code are what a user sees. (In one process, commands that run at the same time would
// share the package's flag values.)

// cliOut is what one command printed, and its exit code.
type cliOut struct {
	out, stderr string
	code        int
}

// TestPeerlineProcess is not a test: it is the peerline command when the test binary is
// re-executed by peerlineCLI.
func TestPeerlineProcess(t *testing.T) {
	if os.Getenv("PEERLINE_TEST_PROCESS") != "1" {
		t.Skip("runs only as a subprocess of the CLI tests")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Args = append([]string{"peerline"}, args...)
	main()
	os.Exit(0)
}

// peerlineCLI runs 'peerline args...' as a process.
func peerlineCLI(ctx context.Context, args ...string) cliOut {
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestPeerlineProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "PEERLINE_TEST_PROCESS=1")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	r := cliOut{out: out.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.code, r.stderr = -1, err.Error()
	}
	return r
}

// peerlineCLIAsync runs peerlineCLI in the background.
func peerlineCLIAsync(ctx context.Context, args ...string) <-chan cliOut {
	done := make(chan cliOut, 1)
	go func() { done <- peerlineCLI(ctx, args...) }()
	return done
}

func waitCLI(t *testing.T, ch <-chan cliOut, what string) cliOut {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not finish", what)
	}
	return cliOut{}
}

// wantOK checks that a command succeeded and printed want.
func wantOK(t *testing.T, r cliOut, what, want string) {
	t.Helper()
	if r.code != 0 || r.out != want {
		t.Fatalf("%s: exit %d, output %q (stderr %q), want %q", what, r.code, r.out, r.stderr, want)
	}
}

// wantErr checks that a command failed with exactly the one line "peerline: msg" and
// printed nothing else.
func wantErr(t *testing.T, r cliOut, what, msg string) {
	t.Helper()
	if r.code != 1 || r.stderr != "peerline: "+msg+"\n" || r.out != "" {
		t.Fatalf("%s: exit %d, stderr %q, output %q; want exit 1 and %q", what, r.code, r.stderr, r.out, "peerline: "+msg)
	}
}

// cliPair runs alice and bob in-process; bob's phone rings until someone acts.
func cliPair(t *testing.T) (o *overlaytest.Overlay, alice, bob string, b *overlaytest.Client) {
	o = overlaytest.Start(t, overlaytest.Options{Supernodes: 2, STUN: true, Relay: true, CacheTTL: -1})
	o.Register("alice", "alice's password")
	o.Register("bob", "bob's password")
	cfg := func(c *client.Config) {
		c.Call.Loopback = true
		c.Call.RingTimeout = time.Hour
		c.NATTimeout = 300 * time.Millisecond
	}
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "alice's password", cfg)
	b = o.StartClient(filepath.Join(t.TempDir(), "bob"), "bob", "bob's password", cfg)
	o.Eventually("alice and bob attached, published, NAT known", func() bool {
		for _, c := range []*overlaytest.Client{a, b} {
			if st := c.Status(); st.Supernode == nil || st.NAT == nil || c.Metrics().Get("publishes") < 2 {
				return false
			}
		}
		return true
	})
	o.Eventually("alice finds bob", func() bool {
		sr, err := a.Search(context.Background(), "bob")
		return err == nil && sr.User != nil && sr.User.Online && sr.User.SupernodeAddr == b.Status().Supernode.Addr
	})
	return o, a.Dir, b.Dir, b
}

func TestCallControlWording(t *testing.T) {
	_, alice, bob, b := cliPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	wantOK(t, peerlineCLI(ctx, "calls", "--data", bob), "calls with none", "no calls\n")
	wantErr(t, peerlineCLI(ctx, "call", "--data", alice, "alice"), "call yourself", "you cannot call yourself")
	wantErr(t, peerlineCLI(ctx, "call", "--data", alice, "zed"), "call zed", "no such user zed")
	wantErr(t, peerlineCLI(ctx, "msg", "--data", alice, "zed", "hello"), "msg zed", "no such user zed")
	wantErr(t, peerlineCLI(ctx, "answer", "--data", bob), "answer with nothing ringing", "nothing is ringing")
	wantOK(t, peerlineCLI(ctx, "calls", "--data", bob), "calls after answering nothing", "no calls\n")

	// bob rejects: alice's call ends in one sentence, on stderr, with a failing code.
	ring := func() <-chan cliOut {
		t.Helper()
		done := peerlineCLIAsync(ctx, "call", "--data", alice, "bob")
		overlaytest.Eventually(t, 10*time.Second, "bob's phone rings", func() bool { return len(b.Ringing()) == 1 })
		r := peerlineCLI(ctx, "calls", "--data", bob)
		if want := "ringing: call from alice (id " + b.Ringing()[0].Call; r.code != 0 || !strings.Contains(r.out, want) {
			t.Fatalf("calls while ringing: %q %q, want %q", r.out, r.stderr, want)
		}
		return done
	}
	done := ring()
	wantOK(t, peerlineCLI(ctx, "hangup", "--data", bob), "bob's hangup of the ringing call", "rejected\n")
	wantErr(t, waitCLI(t, done, "the rejected call"), "rejected call", "bob rejected the call")

	// alice hangs up while it rings: bob's phone stops, and he has a missed call.
	done = ring()
	wantOK(t, peerlineCLI(ctx, "hangup", "--data", alice), "alice's hangup", "hung up\n")
	wantErr(t, waitCLI(t, done, "the cancelled call"), "cancelled call", "you hung up before bob answered")
	overlaytest.Eventually(t, 10*time.Second, "bob's phone stops ringing", func() bool { return len(b.Ringing()) == 0 })
	r := peerlineCLI(ctx, "calls", "--data", bob)
	if want := "missed call from alice (alice hung up before you answered)\n"; r.code != 0 || !strings.Contains(r.out, want) || strings.Contains(r.out, "ringing") {
		t.Fatalf("bob's calls after alice hung up: %q %q, want %q", r.out, r.stderr, want)
	}

	// A call in progress is in calls, with its statistics so far.
	done = ring()
	answered := peerlineCLIAsync(ctx, "answer", "--data", bob)
	var active string
	overlaytest.Eventually(t, 20*time.Second, "alice's calls show the call in progress", func() bool {
		active = peerlineCLI(ctx, "calls", "--data", alice).out
		return strings.Contains(active, "in progress: call to bob for ") && !strings.Contains(active, " 0 received")
	})
	t.Logf("calls during the call:\n%s", active)
	wantOK(t, peerlineCLI(ctx, "hangup", "--data", alice), "alice's hangup of the call", "hung up\n")
	if r := waitCLI(t, done, "alice's call"); r.code != 0 || !strings.HasPrefix(r.out, "call to bob completed\n") {
		t.Fatalf("alice's completed call: %q %q", r.out, r.stderr)
	}
	if r := waitCLI(t, answered, "bob's answer"); r.code != 0 || !strings.HasPrefix(r.out, "call from alice completed\n") {
		t.Fatalf("bob's answered call: %q %q", r.out, r.stderr)
	}
}

func TestCallOutcomeSentence(t *testing.T) {
	for _, c := range []struct {
		rep  client.CallReport
		want string
	}{
		{client.CallReport{Peer: "bob", Outgoing: true, Result: "busy", Error: "bob is busy"}, "bob is busy"},
		{client.CallReport{Peer: "bob", Outgoing: true, Result: "rejected", Error: "bob rejected the call"}, "bob rejected the call"},
		{client.CallReport{Peer: "bob", Outgoing: true, Result: "no answer"}, "bob did not answer"},
		{client.CallReport{Peer: "bob", Outgoing: true, Result: "failed", Error: "no audio arrived: no path worked"}, "call to bob failed: no audio arrived: no path worked"},
		{client.CallReport{Peer: "bob", Outgoing: true, Result: "hung up", Error: "bob hung up before any audio arrived"}, "call to bob ended: bob hung up before any audio arrived"},
		{client.CallReport{Peer: "bob", Result: "hung up", Error: "you hung up before any audio arrived"}, "call from bob ended: you hung up before any audio arrived"},
		{client.CallReport{Peer: "alice", Result: "missed"}, "missed call from alice"},
	} {
		if got := callOutcome(c.rep); got != c.want {
			t.Errorf("%+v: %q, want %q", c.rep, got, c.want)
		}
	}
}

// TestSearchWording: 'search NAME' and 'search PREFIX*' say the same of bob, and where
// it comes from; a name nobody has fails.
func TestSearchWording(t *testing.T) {
	_, alice, _, b := cliPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := fmt.Sprintf("%-20s online at supernode %s (NAT ", "bob", b.Status().Supernode.Addr)
	exact := peerlineCLI(ctx, "search", "--data", alice, "bob")
	prefix := peerlineCLI(ctx, "search", "--data", alice, "b*")
	for _, r := range []cliOut{exact, prefix} {
		if r.code != 0 || !strings.HasPrefix(r.out, want) || !strings.Contains(r.out, "[overlay, ") {
			t.Fatalf("search: %q %q, want a line %q...[overlay, N hops]", r.out, r.stderr, want)
		}
	}
	wantErr(t, peerlineCLI(ctx, "search", "--data", alice, "zed"), "search zed", "no such user zed")
}
