package e2e

// What an interrupted lab test run leaves behind: nothing. A child test process builds a
// lab with a peerline server, a plain process and an orphan (a process whose parent has
// exited, which no parent-death signal reaches), says so, and blocks; the test kills or
// signals it and looks for what is left of its lab, by the lab's id.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
)

const interruptChildEnv = "PEERLINE_LAB_INTERRUPT_CHILD"

// childLab is what the child reports once its lab runs.
type childLab struct {
	ID         string
	Namespaces []string
	Procs      map[string]procID // name -> process
}

// procID names a process across PID reuse: its PID and start time (/proc/PID/stat
// field 22).
type procID struct {
	PID   int
	Start uint64
}

func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, err == nil
}

func (p procID) alive() bool {
	st, ok := procStart(p.PID)
	return ok && st == p.Start
}

// TestLabInterruptChild is the child process of TestLabInterrupted; it does nothing in a
// normal run.
func TestLabInterruptChild(t *testing.T) {
	ready := os.Getenv(interruptChildEnv)
	if ready == "" {
		t.Skip("runs only as the child process of TestLabInterrupted")
	}
	bin := netlab.BuildPeerline(t)
	l := netlab.New(t)
	srv := l.AddPublicHost("srv", 2)
	home := l.AddSite("home", netlab.SiteConfig{Kind: netlab.PortRestrictedCone})
	h := home.AddHost("h")
	a := srv.Addrs()
	stun, err := srv.Start("stun", bin, "stun", "--primary", a[0].String()+":3478", "--alt", a[1].String(), "--alt-port", "3479")
	if err != nil {
		t.Fatal(err)
	}
	if err := stun.WaitLog("stun server listening", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	sleeper, err := h.Start("sleep", "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	// The shell exits at once; its sleep is left to init, out of reach of Pdeathsig.
	out, err := h.Run(t.Context(), "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("orphan pid %q: %v", out, err)
	}
	rep := childLab{ID: l.ID(), Namespaces: l.Namespaces(), Procs: map[string]procID{}}
	for name, pid := range map[string]int{"peerline stun": stun.PID(), "sleep": sleeper.PID(), "orphan sleep": orphan} {
		st, ok := procStart(pid)
		if !ok {
			t.Fatalf("%s (pid %d) is not running", name, pid)
		}
		rep.Procs[name] = procID{pid, st}
	}
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(ready+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ready+".tmp", ready); err != nil {
		t.Fatal(err)
	}
	// The parent's SIGKILL, SIGTERM or SIGINT comes meanwhile: what the parent looks at
	// is how this process ends, so it waits for nothing of its own. The bound is for a
	// parent gone before it stopped the child.
	time.Sleep(3 * time.Minute)
	t.Fatal("the parent test never stopped this child")
}

// child is a running TestLabInterruptChild process.
type child struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer // its output; read only after done
	done chan struct{}
	err  error // Wait's result; set before done closes
}

// wait waits up to limit for the child to exit.
func (c *child) wait(limit time.Duration) (exited bool, err error) {
	select {
	case <-c.done:
		return true, c.err
	case <-time.After(limit):
		return false, nil
	}
}

// startInterruptChild runs TestLabInterruptChild in a new test process and waits until
// its lab runs.
func startInterruptChild(t *testing.T) (*child, childLab) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLabInterruptChild$", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), interruptChildEnv+"="+ready)
	c := &child{cmd: cmd, out: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("---- child output ----\n%s", c.out.String())
		}
	})
	var report []byte
	if eventually.Await(2*time.Minute, "the child's lab running", func() bool {
		if b, err := os.ReadFile(ready); err == nil {
			report = b
			return true
		}
		select {
		case <-c.done:
			return true
		default:
			return false
		}
	}) != nil {
		t.Fatal("child's lab not running after 2 minutes")
	}
	if report == nil {
		t.Fatalf("child exited before its lab ran: %v", c.err)
	}
	var rep childLab
	if err := json.Unmarshal(report, &rep); err != nil {
		t.Fatalf("child's report: %v", err)
	}
	return c, rep
}

// leftovers lists what of the child's lab still exists: namespaces named after its id,
// its processes that still run, and its state file.
func leftovers(rep childLab) []string {
	var left []string
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], netlab.NSPrefix+rep.ID+"-") {
			left = append(left, "namespace "+f[0])
		}
	}
	for name, p := range rep.Procs {
		if p.alive() {
			left = append(left, fmt.Sprintf("process %s (pid %d)", name, p.PID))
		}
	}
	for _, dir := range []string{"/run/peerline-lab", filepath.Join(os.TempDir(), "peerline-lab-state")} {
		if _, err := os.Stat(filepath.Join(dir, rep.ID+".lab")); err == nil {
			left = append(left, "state file "+filepath.Join(dir, rep.ID+".lab"))
		}
	}
	return left
}

// TestLabInterrupted: a lab test process killed with SIGKILL midway leaves namespaces
// (and an orphan) that the next lab start reaps; one stopped by SIGTERM or SIGINT tears
// its lab down itself and dies of the signal.
func TestLabInterrupted(t *testing.T) {
	if err := netlab.Requirements(); err != nil {
		t.Skipf("skipping namespace lab test: %v", err)
	}
	t.Run("SIGKILL", func(t *testing.T) {
		c, rep := startInterruptChild(t)
		t.Logf("child lab %s: %d namespaces, processes %v", rep.ID, len(rep.Namespaces), rep.Procs)
		c.cmd.Process.Signal(syscall.SIGKILL)
		if exited, err := c.wait(10 * time.Second); !exited || err == nil {
			t.Fatalf("child after SIGKILL: exited %v, %v", exited, err)
		}
		// The servers die with the test process (Pdeathsig); the namespaces and the orphan
		// remain, as after a harness's timeout kill.
		if eventually.Await(5*time.Second, "the lab's processes ended with their test process", func() bool {
			return !rep.Procs["peerline stun"].alive() && !rep.Procs["sleep"].alive()
		}) != nil {
			t.Fatalf("the lab's processes outlived their test process: %v", leftovers(rep))
		}
		before := leftovers(rep)
		t.Logf("after SIGKILL: %d left: %v", len(before), before)
		if !rep.Procs["orphan sleep"].alive() || len(before) != len(rep.Namespaces)+2 {
			t.Fatalf("want every namespace, the orphan and the state file left before reaping (else this test proves nothing): %v", before)
		}
		netlab.New(t) // the next lab start
		if left := leftovers(rep); len(left) > 0 {
			t.Fatalf("after the next lab start, left of the killed run: %v", left)
		}
	})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			c, rep := startInterruptChild(t)
			t0 := time.Now()
			c.cmd.Process.Signal(sig)
			exited, err := c.wait(60 * time.Second)
			if !exited {
				t.Fatalf("child still running 60 s after %v", sig)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("child exit: %v", err)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			t.Logf("child after %v: %v in %v; %s", sig, err, time.Since(t0).Round(time.Millisecond),
				strings.TrimSpace(lastLine(c.out.String(), "netlab:")))
			if !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("child did not die of %v: %v", sig, err)
			}
			// No reaping here: the child itself must have left nothing.
			if left := leftovers(rep); len(left) > 0 {
				t.Fatalf("after %v, left of the child's lab: %v", sig, left)
			}
		})
	}
}

func lastLine(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return lines[i]
		}
	}
	return ""
}
