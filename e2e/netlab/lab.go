package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NSPrefix starts the name of every namespace a lab creates.
const NSPrefix = "pl-"

// Internet addresses (RFC 5737 TEST-NET-3).
var (
	internetPrefix = netip.MustParsePrefix("203.0.113.0/24")
)

// Lab is one simulated internet. Create it with New; it cleans itself up when the test
// ends.
type Lab struct {
	t     testing.TB
	id    string // random, unique per lab; part of every namespace name
	dir   string // log directory
	start time.Time
	inet  *node
	state *labState // the lab's state file, for Reap after a killed run

	// opMu serializes creating namespaces and starting processes with teardown, so that
	// nothing is created after teardown has listed what to remove.
	opMu     sync.Mutex
	tearOnce sync.Once
	tearErr  error // what teardown returned; set inside tearOnce

	mu         sync.Mutex // guards all following fields
	nodes      []*node    // every namespace, in creation order
	hosts      map[string]*Host
	procs      []*Proc
	impairs    []*impairer
	nextPublic int // next host number on the internet for public hosts (203.0.113.10+)
	nextWAN    int // next router number on the internet (203.0.113.100+)
	nextSite   int // next site number S (LAN 10.S.0.0/24)
	nextPort   int // next bridge port number in the inet namespace
	closed     bool
	logged     bool // Close has kept or removed the logs
	logSeq     int
}

// node is one namespace.
type node struct {
	name string // short name inside the lab
	ns   string // full namespace name
}

// Requirements returns an error naming what this machine lacks to run a lab, or nil.
func Requirements() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("netlab needs root (network namespaces, nftables)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("netlab needs %q: apt-get install iproute2 nftables", tool)
		}
	}
	return nil
}

// New builds an empty internet (a bridge in its own namespace) and registers cleanup. It
// skips the test when Requirements fails. Before building, it reaps what labs of killed
// test processes left behind (see Reap).
func New(t testing.TB) *Lab {
	t.Helper()
	if err := Requirements(); err != nil {
		t.Skipf("skipping namespace lab test: %v", err)
	}
	reaped, err := Reap()
	for _, r := range reaped {
		t.Logf("netlab: reaped %v", r)
	}
	if err != nil {
		// Leftovers of another, dead run do not touch this lab's namespaces; say so and go on.
		t.Logf("netlab: reaping leftovers of killed runs: %v", err)
	}
	l := &Lab{t: t, start: time.Now(), hosts: map[string]*Host{}}
	base := os.Getenv("PEERLINE_LAB_LOGS")
	if base != "" {
		os.MkdirAll(base, 0o755)
	}
	dir, err := os.MkdirTemp(base, "peerline-lab-"+sanitize(t.Name())+"-")
	if err != nil {
		t.Fatalf("netlab: log dir: %v", err)
	}
	l.dir = dir
	// A random id no namespace and no state file has yet.
	err = fmt.Errorf("no free lab id")
	for i := 0; i < 10 && l.state == nil; i++ {
		var b [3]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		if taken, _ := filepath.Glob(filepath.Join(netnsDir, NSPrefix+id+"-*")); len(taken) > 0 {
			continue
		}
		var st *labState
		if st, err = createState(id); err == nil {
			l.id, l.state = id, st
		}
	}
	if l.state == nil {
		os.RemoveAll(dir)
		t.Fatalf("netlab: %v", err)
	}
	if err := register(l); err != nil {
		l.state.remove()
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("netlab: cleanup: %v", err)
		}
	})
	l.inet = l.addNode("inet")
	l.sysctl(l.inet, "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0")
	l.ipBatch(l.inet, "link set lo up", "link add br0 type bridge", "link set br0 up")
	return l
}

// ID returns the lab's random id; every namespace name is "pl-<id>-<node>".
func (l *Lab) ID() string { return l.id }

// LogDir returns the lab's log directory.
func (l *Lab) LogDir() string { return l.dir }

// Host returns the host or router called name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// Namespaces returns the full names of the lab's namespaces.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.nodes))
	for i, n := range l.nodes {
		out[i] = n.ns
	}
	return out
}

func (l *Lab) addNode(name string) *node {
	n := &node{name: name, ns: fmt.Sprintf("%s%s-%s", NSPrefix, l.id, name)}
	l.opMu.Lock()
	defer l.opMu.Unlock()
	l.mu.Lock()
	closed := l.closed
	if !closed {
		l.nodes = append(l.nodes, n)
	}
	l.mu.Unlock()
	if closed {
		l.t.Fatalf("netlab: lab closed")
	}
	// Recorded before it exists, so that a kill at any point leaves it to Reap.
	l.must(l.state.addNS(n.ns))
	l.must(l.run(nil, "ip", "netns", "add", n.ns))
	return n
}

// must fails the test on err.
func (l *Lab) must(err error) {
	if err != nil {
		l.t.Helper()
		l.t.Fatalf("netlab: %v", err)
	}
}

// run runs a command (in the root namespace, or inside n with "ip netns exec"), logs it
// with its output to lab.log and returns an error that includes the output.
func (l *Lab) run(stdin []byte, argv ...string) error {
	_, err := l.output(stdin, argv...)
	return err
}

func (l *Lab) output(stdin []byte, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	err := cmd.Run()
	l.logf("$ %s (%v)%s\n%s%s", strings.Join(argv, " "), time.Since(t0).Round(time.Millisecond),
		indentStdin(stdin), out.String(), errb.String())
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func indentStdin(stdin []byte) string {
	if len(stdin) == 0 {
		return ""
	}
	return "\n  <<< " + strings.ReplaceAll(strings.TrimSpace(string(stdin)), "\n", "\n  <<< ")
}

func (l *Lab) logf(format string, args ...any) {
	f, err := os.OpenFile(filepath.Join(l.dir, "lab.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "[%7.3fs] ", time.Since(l.start).Seconds())
	fmt.Fprintf(f, format, args...)
	if !strings.HasSuffix(format, "\n") {
		fmt.Fprintln(f)
	}
}

// ipBatch runs ip commands inside n in one exec.
func (l *Lab) ipBatch(n *node, cmds ...string) {
	l.t.Helper()
	l.must(l.run([]byte(strings.Join(cmds, "\n")+"\n"), "ip", "-n", n.ns, "-batch", "-"))
}

// sysctl sets sysctls inside n; unknown keys (such as bridge-nf on a kernel without
// br_netfilter) are ignored.
func (l *Lab) sysctl(n *node, kv ...string) {
	l.t.Helper()
	l.must(l.run(nil, append([]string{"ip", "netns", "exec", n.ns, "sysctl", "-q", "-e", "-w"}, kv...)...))
}

// nft loads a ruleset inside n.
func (l *Lab) nft(n *node, ruleset string) {
	l.t.Helper()
	l.must(l.run([]byte(ruleset), "ip", "netns", "exec", n.ns, "nft", "-f", "-"))
}

// Close stops every process the lab started, kills whatever else still runs inside its
// namespaces, deletes the namespaces, and keeps or removes the logs. It is idempotent
// (every call returns the first one's error); New registers it with t.Cleanup, which
// fails the test on that error, and tests may call it earlier to check Leftovers.
func (l *Lab) Close() error {
	t0 := time.Now()
	err := l.teardown(false)
	unregister(l)
	l.logf("teardown took %v", time.Since(t0))

	l.mu.Lock()
	logged := l.logged
	l.logged = true
	l.mu.Unlock()
	if logged {
		// The same result again: t.Cleanup's call reports it even when a test's own
		// deferred Close dropped it.
		return err
	}
	failed := l.t.Failed() || err != nil
	if failed || os.Getenv("PEERLINE_LAB_KEEP") != "" {
		if failed {
			l.dumpLogs()
		}
		l.t.Logf("netlab: logs kept in %s", l.dir)
	} else {
		os.RemoveAll(l.dir)
	}
	return err
}

// teardown stops the lab's processes, kills whatever else runs in its namespaces and
// deletes them, once; concurrent callers wait for the first. fast (on a signal) stops all
// processes at once with a short grace; otherwise they stop one by one, last started
// first. The state file goes once no namespace of the lab is left.
func (l *Lab) teardown(fast bool) error {
	l.tearOnce.Do(func() { l.tearErr = l.doTeardown(fast) })
	return l.tearErr
}

func (l *Lab) doTeardown(fast bool) error {
	l.opMu.Lock()
	l.mu.Lock()
	l.closed = true
	procs, nodes, impairs := l.procs, l.nodes, l.impairs
	l.mu.Unlock()
	l.opMu.Unlock()

	var errs []string
	if fast {
		stopAll(procs, 2*time.Second)
	} else {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop()
		}
	}
	for _, im := range impairs {
		im.close()
	}
	// Anything else inside our namespaces (children a process left behind) is ours too.
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.ns
	}
	killed, err := killInNamespaces(names, 5*time.Second)
	for _, pid := range killed {
		l.logf("killed stray pid %d in the lab's namespaces", pid)
	}
	if err != nil {
		errs = append(errs, err.Error())
	}
	var batch strings.Builder
	for _, n := range existingNS(names) {
		fmt.Fprintf(&batch, "netns del %s\n", n)
	}
	if batch.Len() > 0 {
		if err := l.run([]byte(batch.String()), "ip", "-force", "-batch", "-"); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if left := l.Leftovers(); len(left) > 0 {
		errs = append(errs, "leftovers: "+strings.Join(left, ", "))
	}
	if len(existingNS(names)) == 0 {
		l.state.remove()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// stopAll sends SIGTERM to every process, waits up to grace for all, then SIGKILLs the
// rest and waits for them.
func stopAll(procs []*Proc, grace time.Duration) {
	for _, p := range procs {
		if !p.exited() {
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-ctx.Done():
		}
	}
	for _, p := range procs {
		p.Kill()
	}
}

// Leftovers lists what of this lab still exists: namespaces named after its id, and
// processes it started that have not exited. The lab's nft tables and conntrack state live
// only inside its namespaces, so they are gone with them.
func (l *Lab) Leftovers() []string {
	var left []string
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], NSPrefix+l.id+"-") {
			left = append(left, "namespace "+f[0])
		}
	}
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			left = append(left, fmt.Sprintf("process %s (pid %d)", p.Name, p.PID()))
		}
	}
	return left
}

// dumpLogs prints the tail of every log file to the test log.
func (l *Lab) dumpLogs() {
	files, _ := filepath.Glob(filepath.Join(l.dir, "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		const max = 4000
		if len(b) > max {
			b = append([]byte("...\n"), b[len(b)-max:]...)
		}
		l.t.Logf("---- %s ----\n%s", filepath.Base(f), b)
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func sanitize(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}
