package e2e

// The boot storm with real processes: one login server, a few supernodes and N client
// processes of the real binary on loopback, all started at once, then all killed and
// restarted at once.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/proto"
)

// stormConfig is read from the environment: PEERLINE_STORM=N (clients; default 40, the
// CI version), PEERLINE_STORM_SUPERNODES (default 3), PEERLINE_STORM_ARGON=real (the
// login server hashes with the default argon2id parameters, RFC 9106's t=3, 64 MiB, p=2;
// default: the fast test parameters, so CI stays quick).
type stormConfig struct {
	clients, supernodes int
	realArgon           bool
}

func stormFromEnv(t *testing.T) stormConfig {
	c := stormConfig{clients: 40, supernodes: 3}
	for _, v := range []struct {
		name string
		to   *int
	}{{"PEERLINE_STORM", &c.clients}, {"PEERLINE_STORM_SUPERNODES", &c.supernodes}} {
		if s := os.Getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 20000 {
				t.Fatalf("%s=%q: want a count", v.name, s)
			}
			*v.to = n
		}
	}
	c.realArgon = os.Getenv("PEERLINE_STORM_ARGON") == "real"
	return c
}

// stormClient is one client process, started again (same data dir) on restart.
type stormClient struct {
	user, dir, log string
	ip             net.IP
	cmd            *exec.Cmd
	done           chan struct{}
}

// server is a login server or supernode process with the data dir its status is read from.
type server struct {
	name, dir, addr string
	p               *proc
}

func (s server) pid() int { return s.p.cmd.Process.Pid }

// storm is the running set-up.
type storm struct {
	cfg     stormConfig
	root    string
	ls      server
	metrics string
	key     string
	sns     []server
	clients []*stormClient
	byUser  map[string]*stormClient
}

// TestProcessStorm starts N real client processes at once against a login server and a
// few supernodes, all real processes on loopback, and waits until every one is attached;
// then SIGKILLs all of them at once and starts them again at once: every restarted client
// must resume with its saved credential (0 password hashes at the login server) and
// attach again. Each phase reports the time to 50/99/100% attached, password hashes,
// busy answers and retries, attempts per client, and each server's peak RSS and CPU.
// The CI version is 40 clients; PEERLINE_STORM=500 PEERLINE_STORM_ARGON=real is the full
// one (README).
func TestProcessStorm(t *testing.T) {
	cfg := stormFromEnv(t)
	s := startStorm(t, cfg)
	s.registerAll(t)
	limit := 60 * time.Second
	if cfg.clients > 40 {
		limit = 10 * time.Minute
	}

	cold := s.phase(t, "cold start", limit)
	if cold.hashes < uint64(cfg.clients) {
		t.Errorf("cold start: %d password hashes for %d logins", cold.hashes, cfg.clients)
	}
	if cold.passwordLogins != cfg.clients {
		t.Errorf("cold start: %d clients logged in with the password, want all %d", cold.passwordLogins, cfg.clients)
	}

	s.killAll(t)
	restart := s.phase(t, "restart storm", limit)
	if restart.hashes != 0 || restart.passwordLogins != 0 {
		t.Errorf("restart storm: %d password hashes, %d password logins: restarted clients must resume with their saved credentials",
			restart.hashes, restart.passwordLogins)
	}
	// A restarted client with a credential that needs no renewal yet and a saved buddy
	// list does not call the login server before it attaches; it reads its buddy list
	// again at a random moment of the next two minutes, so the restart costs the login
	// server at most one resume per client, spread out (a client once resumed twice,
	// for its credential and beside it for its buddy list). A retried attempt may add
	// one: the server counts a resume before it records the login.
	if got := restart.lsAfter["resumes"] - restart.lsBefore["resumes"]; got > uint64(cfg.clients+restart.loginRetries) {
		t.Errorf("restart storm: the login server served %d resumes for %d clients and %d retried attempts, want at most one per attempt",
			got, cfg.clients, restart.loginRetries)
	} else {
		t.Logf("restart storm: the login server served %d resumes for %d clients while they attached", got, cfg.clients)
	}
}

func startStorm(t *testing.T, cfg stormConfig) *storm {
	t.Helper()
	s := &storm{cfg: cfg, root: t.TempDir(), byUser: map[string]*stormClient{}}
	lsDir := filepath.Join(s.root, "login")
	s.key, _ = loginsrvInit(t, lsDir)
	s.ls = server{name: "loginsrv", dir: lsDir, addr: freeAddr(t)}
	s.metrics = freeAddr(t)
	args := []string{"loginsrv", "--data", lsDir, "--listen", s.ls.addr, "--heartbeat", "1s", "--metrics-listen", s.metrics}
	if !cfg.realArgon {
		args = append(args, fastArgon...)
	}
	s.ls.p = startProc(t, "loginsrv", nil, args...)
	waitListening(t, s.ls.addr)
	for i := 1; i <= cfg.supernodes; i++ {
		name := fmt.Sprintf("sn%d", i)
		sn := server{name: name, dir: filepath.Join(s.root, name), addr: freeAddr(t)}
		sn.p = startProc(t, name, nil, "supernode", "--data", sn.dir, "--listen", sn.addr, "--login", s.ls.addr,
			"--login-key", s.key, "--admit-secret-file", filepath.Join(lsDir, admitSecretFile), "--name", name,
			"--turn-allow-private-peers")
		waitListening(t, sn.addr)
		s.sns = append(s.sns, sn)
	}
	// Every supernode registered and in the others' ring, so the login server's seed
	// names them all.
	var dirs []string
	for _, sn := range s.sns {
		dirs = append(dirs, sn.dir)
	}
	waitListed(t, dirs...)
	for i := 0; i < cfg.clients; i++ {
		c := &stormClient{user: fmt.Sprintf("storm%04d", i), ip: sourceIP(10, i)}
		c.dir = filepath.Join(s.root, c.user)
		c.log = filepath.Join(s.root, c.user+".log")
		s.clients = append(s.clients, c)
		s.byUser[c.user] = c
	}
	t.Cleanup(func() {
		for _, c := range s.clients {
			c.stop(syscall.SIGKILL)
		}
	})
	return s
}

// admitSecretFile is the login server's admission secret in its data dir.
const admitSecretFile = "admit.secret"

// registerAll creates every client's account beforehand, from the client's own source
// address (registrations are rate limited per address), a few at a time.
func (s *storm) registerAll(t *testing.T) {
	t.Helper()
	keyB, err := identity.DecodeKey(s.key)
	if err != nil {
		t.Fatal(err)
	}
	ls := client.LoginServer{Addr: s.ls.addr, Key: keyB}
	start := time.Now()
	parallel(t, 8, len(s.clients), func(i int) error {
		c := s.clients[i]
		return registerRetrying(ls, c.ip, c.user, "password-"+c.user)
	})
	t.Logf("registered %d accounts in %v", len(s.clients), time.Since(start).Round(time.Millisecond))
}

// registerRetrying registers name from ip, waiting out busy answers (bounded).
func registerRetrying(ls client.LoginServer, ip net.IP, name, password string) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	var err error
	for try := 0; try < 30; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = client.Register(ctx, d, ls, name, password)
		cancel()
		if err == nil || errors.Is(err, proto.ErrUserExists) {
			return nil
		}
		wait := time.Second
		if pe, ok := proto.AsError(err); ok && pe.RetryAfter() > 0 {
			wait = pe.RetryAfter()
		}
		// The login server's limits run on its clock and it said when to come back: a
		// retry before then is refused again, and no state of it can be polled instead.
		time.Sleep(wait)
	}
	return fmt.Errorf("register %s: %w", name, err)
}

// start starts the client's process held at a gate: a shell that waits for EOF on gate
// (the read end of a pipe every client shares) and then execs the binary, PID unchanged.
// Closing the pipe's write end releases every client at the same moment, so "all at once"
// does not depend on how fast one process can fork 500 others.
func (c *stormClient) start(bin, lsAddr, key string, gate *os.File) error {
	f, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command("/bin/sh", "-c", `read _; exec "$0" "$@"`, bin, "client", "--data", c.dir, "--login", lsAddr,
		"--login-key", key, "--user", c.user, "--no-supernode", "--source-ip", c.ip.String())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = gate, f, f
	cmd.Env = append(os.Environ(), "PEERLINE_PASSWORD=password-"+c.user)
	if err := netlab.StartTied(cmd); err != nil {
		f.Close()
		return err
	}
	c.cmd, c.done = cmd, make(chan struct{})
	done := c.done
	go func() { cmd.Wait(); f.Close(); close(done) }()
	return nil
}

// stop signals the process (by PID) and waits for it to end; SIGKILL after 10 s.
func (c *stormClient) stop(sig syscall.Signal) {
	if c.cmd == nil {
		return
	}
	signalAndWait(c.cmd, c.done, sig)
}

func (c *stormClient) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// attached counts the storm's clients the supernodes list as attached.
func (s *storm) attached() (n int, err error) {
	seen := map[string]bool{}
	for _, sn := range s.sns {
		st, err := supernodeStatus(sn.dir)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", sn.name, err)
		}
		for _, u := range st.Clients {
			if s.byUser[u] != nil {
				seen[u] = true
			}
		}
	}
	return len(seen), nil
}

// killAll SIGKILLs every client at once (a power cut: no goodbye to anyone), waits for
// the processes to end and for the supernodes to drop them.
func (s *storm) killAll(t *testing.T) {
	t.Helper()
	for _, c := range s.clients {
		c.cmd.Process.Signal(syscall.SIGKILL)
	}
	for _, c := range s.clients {
		<-c.done
	}
	eventually.That(t, 60*time.Second, "the supernodes drop every killed client", func() bool {
		n, err := s.attached()
		return err == nil && n == 0
	})
}

// phaseResult is what one storm phase measured.
type phaseResult struct {
	hashes                           uint64
	passwordLogins, resumes          int
	t50, t99, t100                   time.Duration
	loginRetries, attachFailures     int
	maxLoginRetries, maxAttachRounds int
	attaches                         int
	clientCPU                        float64
	clientRSS, clientPSS             int64
	lsBefore, lsAfter                map[string]uint64
	snBefore, snAfter                []map[string]uint64
	serverCPU                        []float64
	serverHWM                        []int64
	spawn                            time.Duration
	seen                             time.Duration // when the supernodes' lists first held every client
	timeline                         string        // CPU of the login server and the machine over the phase
}

// phase starts every client at once and waits (at most limit) until all are attached.
func (s *storm) phase(t *testing.T, name string, limit time.Duration) phaseResult {
	t.Helper()
	bin := netlab.BuildPeerline(t)
	servers := append([]server{s.ls}, s.sns...)
	var r phaseResult
	cpu0 := make([]float64, len(servers))
	for i, sv := range servers {
		resetPeak(sv.pid())
		u, err := readUsage(sv.pid())
		if err != nil {
			t.Fatal(err)
		}
		cpu0[i] = u.CPU
	}
	r.lsBefore = promCounters(t, s.metrics, "peerline_loginsrv_")
	r.snBefore = s.snCounters(t)

	gate, release, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	spawnStart := time.Now()
	for _, c := range s.clients {
		if err := c.start(bin, s.ls.addr, s.key, gate); err != nil {
			t.Fatalf("start %s: %v", c.user, err)
		}
	}
	gate.Close()
	r.spawn = time.Since(spawnStart)
	start := time.Now()
	release.Close() // every client goes now
	n := len(s.clients)
	tl := newCPUTimeline(s.ls.pid(), start)
	for {
		got, err := s.attached()
		if err != nil {
			t.Fatal(err)
		}
		el := time.Since(start)
		tl.sample(el)
		if got == n {
			r.seen = el
			break
		}
		if el > limit {
			s.failUnattached(t, name, got, limit)
		}
		for _, c := range s.clients {
			if c.exited() {
				b, _ := os.ReadFile(c.log)
				t.Fatalf("%s: client %s exited: %v\n%s", name, c.user, c.cmd.ProcessState, tailLines(b, 20))
			}
		}
		// The phase measures the servers' CPU over the storm, and each look asks every
		// supernode for its status, the list of its clients with it: the looks come
		// every 100 ms, not at the 10 ms pace of the shared wait, so as to add little to
		// what is measured.
		time.Sleep(100 * time.Millisecond)
	}

	// Every client agrees it is attached: its own status, with its counters and the
	// moment it attached (exact, where the supernodes' lists are polled and the poll
	// itself waits for CPU in a storm).
	var at []time.Duration
	for _, c := range s.clients {
		var st client.Status
		eventually.That(t, 30*time.Second, c.user+" says it is attached", func() bool {
			var err error
			st, err = clientStatus(c.dir)
			return err == nil && st.Supernode != nil
		})
		at = append(at, st.Supernode.AttachedAt.Sub(start))
		cn := st.Counters
		r.passwordLogins += int(cn["password_logins"])
		r.resumes += int(cn["resumes"])
		r.loginRetries += int(cn["login_retries"])
		r.attachFailures += int(cn["attach_failures"])
		r.attaches += int(cn["attaches"])
		r.maxLoginRetries = max(r.maxLoginRetries, int(cn["login_retries"]))
		r.maxAttachRounds = max(r.maxAttachRounds, int(cn["attach_failures"]+cn["attaches"]))
		if u, err := readUsage(c.cmd.Process.Pid); err == nil {
			r.clientCPU += u.CPU
			r.clientRSS += u.RSS
			r.clientPSS += u.PSS
		}
	}
	for i, sv := range servers {
		u, err := readUsage(sv.pid())
		if err != nil {
			t.Fatal(err)
		}
		r.serverCPU = append(r.serverCPU, u.CPU-cpu0[i])
		r.serverHWM = append(r.serverHWM, u.HWM)
	}
	r.lsAfter = promCounters(t, s.metrics, "peerline_loginsrv_")
	r.snAfter = s.snCounters(t)
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	r.t50, r.t99, r.t100 = at[(n-1)/2], at[(n*99+99)/100-1], at[n-1]
	r.hashes = r.lsAfter["argon2_hashes"] - r.lsBefore["argon2_hashes"]
	r.timeline = tl.String()
	s.report(t, name, r, servers)
	return r
}

// snCounters returns each supernode's counters, in the order of s.sns.
func (s *storm) snCounters(t *testing.T) []map[string]uint64 {
	t.Helper()
	var out []map[string]uint64
	for _, sn := range s.sns {
		st, err := supernodeStatus(sn.dir)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Counters)
	}
	return out
}

func (s *storm) report(t *testing.T, name string, r phaseResult, servers []server) {
	n := len(s.clients)
	delta := func(a, b map[string]uint64, keys ...string) string {
		var parts []string
		for _, k := range keys {
			if d := b[k] - a[k]; d != 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, d))
			}
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d client processes (spawned in %v, released at once), %d supernodes, argon2 %s\n", name, n,
		r.spawn.Round(time.Millisecond), len(s.sns), map[bool]string{true: "real (t=3, 64 MiB, p=2)", false: "fast (test)"}[s.cfg.realArgon])
	fmt.Fprintf(&b, "  CPU per %v (login server / whole machine, %% of one core; the machine has %d): %s\n", timelineStep, runtime.NumCPU(), r.timeline)
	fmt.Fprintf(&b, "  attached (each client's own attach time): 50%% %v, 99%% %v, 100%% %v; every one on the supernodes' lists at %v\n",
		r.t50.Round(time.Millisecond), r.t99.Round(time.Millisecond), r.t100.Round(time.Millisecond), r.seen.Round(time.Millisecond))
	fmt.Fprintf(&b, "  login server: %d password hashes, %d password logins, %d resumes; shed: %s\n", r.hashes,
		r.lsAfter["logins"]-r.lsBefore["logins"], r.lsAfter["resumes"]-r.lsBefore["resumes"],
		delta(r.lsBefore, r.lsAfter, "shed_busy", "login_rate_limited", "conns_shed", "conns_shed_addr", "conns_shed_prefix", "conns_shed_busy", "conns_auth_timeout"))
	fmt.Fprintf(&b, "  clients: login retries %d (max %d per client), attach failures %d, attaches %d; attempts per client: logins %.2f, attach rounds %.2f (max %d)\n",
		r.loginRetries, r.maxLoginRetries, r.attachFailures, r.attaches,
		float64(n+r.loginRetries)/float64(n), float64(r.attaches+r.attachFailures)/float64(n), r.maxAttachRounds)
	fmt.Fprintf(&b, "  clients: %.1f CPU s in all, RSS %s in all (%s each), PSS %s in all (%s each)\n", r.clientCPU,
		mib(r.clientRSS), mib(r.clientRSS/int64(n)), mib(r.clientPSS), mib(r.clientPSS/int64(n)))
	for i, sv := range servers {
		line := fmt.Sprintf("  %-8s peak RSS %s, CPU %.2f s", sv.name, mib(r.serverHWM[i]), r.serverCPU[i])
		if i > 0 {
			line += "; " + delta(r.snBefore[i-1], r.snAfter[i-1], "attaches", "attach_not_ready", "conns_shed", "conns_shed_addr", "conns_shed_prefix", "conns_shed_busy", "conns_auth_timeout")
		}
		fmt.Fprintln(&b, line)
	}
	t.Log(b.String())
}

// failUnattached names the clients not attached after limit, with the tail of the log
// of a few of them, and fails the test.
func (s *storm) failUnattached(t *testing.T, phase string, got int, limit time.Duration) {
	t.Helper()
	seen := map[string]bool{}
	for _, sn := range s.sns {
		st, _ := supernodeStatus(sn.dir)
		for _, u := range st.Clients {
			seen[u] = true
		}
	}
	var missing []string
	for _, c := range s.clients {
		if !seen[c.user] {
			missing = append(missing, c.user)
		}
	}
	sort.Strings(missing)
	var b strings.Builder
	for i, u := range missing {
		if i == 3 {
			break
		}
		lg, _ := os.ReadFile(s.byUser[u].log)
		fmt.Fprintf(&b, "---- %s ----\n%s\n", u, tailLines(lg, 15))
	}
	t.Fatalf("%s: %d/%d attached after %v; missing %d (%s ...)\n%s", phase, got, len(s.clients), limit,
		len(missing), strings.Join(missing[:min(len(missing), 10)], " "), b.String())
}

// tailLines returns the last n lines of b.
func tailLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
