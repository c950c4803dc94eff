package netlab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/peerline/peerline/internal/eventually"
)

// Proc is a long-running process inside a host's namespace, with its stdout and stderr in
// a log file. The lab stops it (by PID) when it closes.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	logf    *os.File
	done    chan struct{}
	mu      sync.Mutex // guards err
	err     error
}

// Start runs argv inside h's namespace until Stop (or lab Close). name labels the log file.
func (h *Host) Start(name string, argv ...string) (*Proc, error) {
	l := h.lab
	l.opMu.Lock() // against teardown: a process is either in l.procs or not started
	defer l.opMu.Unlock()
	l.mu.Lock()
	l.logSeq++
	seq := l.logSeq
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("netlab: lab closed")
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%02d-%s-%s.log", seq, h.Name, sanitize(name)))
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "# %s in %s: %s\n", name, h.NS(), strings.Join(argv, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS()}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group, so a Ctrl-C to go test reaches us, not it, and Stop decides; and
	// SIGKILL when the test process dies (StartTied).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := StartTied(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("netlab: start %s on %s: %w", name, h.Name, err)
	}
	p := &Proc{Name: name, LogPath: path, cmd: cmd, logf: f, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		f.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	l.logf("started %s on %s: pid %d, log %s", name, h.Name, cmd.Process.Pid, filepath.Base(path))
	return p, nil
}

func (l *Lab) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// PID returns the process id ("ip netns exec" execs the command, so it is the command's).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error once it has exited.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stop sends SIGTERM, waits up to 3 s, then SIGKILLs. It is idempotent.
func (p *Proc) Stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// Log returns what the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// WaitLog waits until the process's log contains substr, the process exits, or timeout.
func (p *Proc) WaitLog(substr string, timeout time.Duration) error {
	exited := false
	err := eventually.Await(timeout, fmt.Sprintf("%s to log %q", p.Name, substr), func() bool {
		if strings.Contains(p.Log(), substr) {
			return true
		}
		exited = p.exited()
		return exited
	})
	if exited {
		return fmt.Errorf("netlab: %s exited (%v) before logging %q", p.Name, p.Err(), substr)
	}
	if err != nil {
		return fmt.Errorf("netlab: %w", err)
	}
	return nil
}

// Run runs argv inside h's namespace to completion (killed when ctx ends) and returns its
// stdout. Stdout and stderr are also kept in a log file.
func (h *Host) Run(ctx context.Context, argv ...string) ([]byte, error) {
	l := h.lab
	l.mu.Lock()
	l.logSeq++
	seq := l.logSeq
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("netlab: lab closed")
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%02d-%s-%s.log", seq, h.Name, sanitize(filepath.Base(argv[0]))))
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "# in %s: %s\n", h.NS(), strings.Join(argv, " "))
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS()}, argv...)...)
	cmd.Stdout = io.MultiWriter(&out, f)
	cmd.Stderr = f
	cmd.WaitDelay = 2 * time.Second
	t0 := time.Now()
	l.opMu.Lock() // against teardown, as in Start
	if l.isClosed() {
		err = fmt.Errorf("netlab: lab closed")
	} else {
		err = StartTied(cmd)
	}
	l.opMu.Unlock()
	if err == nil {
		err = cmd.Wait()
	}
	fmt.Fprintf(f, "# exit: %v after %v\n", err, time.Since(t0).Round(time.Millisecond))
	l.logf("ran on %s: %s -> %v (%v), log %s", h.Name, strings.Join(argv, " "), err, time.Since(t0).Round(time.Millisecond), filepath.Base(path))
	if err != nil {
		return out.Bytes(), fmt.Errorf("netlab: %s on %s: %w (log %s)", strings.Join(argv, " "), h.Name, err, path)
	}
	return out.Bytes(), nil
}

// Kill kills the process with SIGKILL, as a crash would, and waits for it to exit.
func (p *Proc) Kill() {
	if p.exited() {
		return
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}
