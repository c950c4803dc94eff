package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 987654 1000 10 18446744073709551615\n"
	start, zombie, err := parseStat([]byte(line))
	if err != nil || start != 987654 || zombie {
		t.Fatalf("parseStat = %d %v %v, want 987654 false nil", start, zombie, err)
	}
	z := "4242 (sleep) Z 1 4242 4242 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 55 0 0 0\n"
	if _, zombie, err := parseStat([]byte(z)); err != nil || !zombie {
		t.Fatalf("zombie: %v %v", zombie, err)
	}
	if _, _, err := parseStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Fatal("short stat parsed")
	}
}

// TestCreatorAlive: a creator is alive only with its PID and its start time; a PID held by
// another process (reused) or by no process is dead.
func TestCreatorAlive(t *testing.T) {
	start, _, err := procStart(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if st := (&labState{pid: os.Getpid(), start: start}); !st.creatorAlive() {
		t.Fatal("own process taken for dead")
	}
	if st := (&labState{pid: os.Getpid(), start: start + 1}); st.creatorAlive() {
		t.Fatal("a reused PID (other start time) taken for the creator")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if st := (&labState{pid: cmd.Process.Pid, start: 1}); st.creatorAlive() {
		t.Fatal("an exited process taken for alive")
	}
}

// TestReapLeavesOthersAlone: Reap touches neither a namespace no state file names (one
// with our prefix, as a lab of an older version or anyone else could leave) nor the lab of
// a live test process, nor the processes inside them.
func TestReapLeavesOthersAlone(t *testing.T) {
	if err := Requirements(); err != nil {
		t.Skipf("skipping namespace lab test: %v", err)
	}
	var b [3]byte
	rand.Read(b[:])
	stranger := NSPrefix + hex.EncodeToString(b[:]) + "-x"
	if out, err := exec.Command("ip", "netns", "add", stranger).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	sleeper := exec.Command("ip", "netns", "exec", stranger, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sleeper.Process.Kill()
		sleeper.Wait()
		exec.Command("ip", "netns", "del", stranger).Run()
	})
	l := New(t) // reaps; then a live lab of this process
	h := l.AddPublicHost("h", 1)
	p, err := h.Start("sleep", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	reaped, err := Reap()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reaped {
		if r.ID == l.ID() {
			t.Fatalf("reaped a live lab: %v", r)
		}
	}
	if len(existingNS([]string{stranger})) != 1 || syscall.Kill(sleeper.Process.Pid, 0) != nil {
		t.Fatal("Reap touched a namespace (or its process) no lab state names")
	}
	if len(existingNS(l.Namespaces())) != len(l.Namespaces()) || p.exited() {
		t.Fatal("Reap touched a live lab")
	}
	dir, _ := stateDir()
	if _, err := os.Stat(filepath.Join(dir, l.ID()+stateSuffix)); err != nil {
		t.Fatalf("live lab's state file: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, l.ID()+stateSuffix)); !os.IsNotExist(err) {
		t.Fatalf("state file still there after Close: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lab process survived Close")
	}
}
