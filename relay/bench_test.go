package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/eventually"
)

// The comparison with coturn runs only when asked:
//
//	PEERLINE_RELAY_BENCH=1 PEERLINE_RELAY_BENCH_SECONDS=20 go test -run TestRelayVsCoturn -v -timeout 40m ./relay/
//
// It starts Peerline's relay and coturn's turnserver side by side on loopback, each in
// its own process, and drives each in turn with coturn's turnutils_uclient in
// client-to-client mode (-y: every client relays to the next client's relayed address, so
// a message crosses the server twice), channels, 160-byte messages, under four loads
// (benchLoads): 1,000 allocations at 50 messages/s each, 100 at 1,000/s, 150 at 500/s and
// 1,500 at 50/s. It prints messages per second delivered, loss, the server's and uclient's
// CPU (from /proc/PID/stat) and the machine's idle time while the load runs, says for a
// run that lost messages whether uclient or the machine ran out of CPU, and fails unless
// ours meets each load's criteria against coturn's figures of the same run (a comparison
// of two servers on the same machine at the same time, not a timing; it stays out of the
// default run).
//
// Knobs: PEERLINE_RELAY_BENCH_SECONDS (default 15) is each run's send time;
// PEERLINE_BIN runs that 'peerline' binary's relay command instead of building one;
// PEERLINE_RELAY_BENCH_LISTENERS sets our --listeners; PEERLINE_RELAY_BENCH_LOADS runs
// only the loads whose names hold it (e.g. "1000 x"); PEERLINE_RELAY_CPUPROFILE=FILE
// runs our relay in the re-executed test binary and writes its CPU profile to FILE.

// Figures of 2026-12-01 on a 2-core machine, coturn 4.6.1, GOMAXPROCS 2, 2 listeners, 20 s
// per run, the command above (the test and peerline compiled at the commit that added
// batched reads, run under the shared measurement lock; the other processes used about
// 1% of a core meanwhile):
//
//	server    load           delivered   loss% |     msgs/s   loss%   CPU% CPU µs/msg uclient% others%  idle%
//	coturn    1000 x 50/s       982482    1.75 |      49531    0.90  139.5       28.2     55.1    -0.6    6.0
//	peerline  1000 x 50/s      1000000    0.00 |      50252   -0.38  140.1       27.9     53.9    -0.3    6.3
//	coturn    100 x 1000/s     1503077   24.85 |      69929   29.34  134.2       19.2     64.1     1.1    0.6
//	peerline  100 x 1000/s     1897392    5.13 |      79147    6.48  142.5       18.0     54.2     1.1    2.3
//	coturn    150 x 500/s      1374857    8.34 |      66896   10.92  140.2       21.0     57.8     0.9    1.0
//	peerline  150 x 500/s      1499460    0.04 |      73543    0.61  139.4       19.0     54.2     0.4    6.0
//	coturn    1500 x 50/s      1123177   25.12 |      52706   29.61  133.9       25.4     64.6     1.2    0.4
//	peerline  1500 x 50/s      1439782    4.01 |      70485    6.57  144.3       20.5     52.5     1.1    2.1
//
// Where both lost (100 x 1,000/s, 1,500 x 50/s), the machine ran out of CPU, not uclient:
// uclient, single-threaded, used 52-65% of its core and the machine was 0-2% idle, so the
// server had what uclient left it, and the server that spends less per message delivers
// more. (A negative others% means nothing else ran: it is the machine's total less the
// server's and uclient's, and /proc's counters are sampled and accounted differently.)
//
// The same run before batched reads, the same day, with other jobs on the machine (others
// 0-135% of a core), so its CPU figures are noisier:
//
//	server    load           delivered   loss% |     msgs/s   loss%   CPU% CPU µs/msg uclient% others%  idle%
//	coturn    1000 x 50/s       996389    0.36 |      49409    1.06  139.8       28.3     55.6    -2.2    6.9
//	peerline  1000 x 50/s       961151    3.88 |      47158    5.81  120.0       25.5     44.8    32.2    2.9
//	coturn    100 x 1000/s     1235279   38.24 |      48635   40.69   82.2       16.9     45.8    71.3    0.7
//	peerline  100 x 1000/s     1873939    6.30 |      56642    9.21  101.7       18.0     38.7    58.4    1.2
//	coturn    150 x 500/s      1337252   10.85 |      64034   16.84  113.3       17.7     49.1    27.9    9.7
//	peerline  150 x 500/s      1480460    1.30 |      72427    1.28  141.7       19.6     53.1     0.1    5.1
//	coturn    1500 x 50/s      1195033   20.33 |      62480   16.69  132.1       21.1     57.5     8.7    1.7
//	peerline  1500 x 50/s      1442566    3.83 |      27823    2.16   47.2       17.0     18.4   134.5   -0.2
//
// System calls of our relay per delivered message at 150 x 500/s (perf stat -e
// 'syscalls:sys_enter_*' on the relay over 8 s of the load): 4.15 before (2.07 recvfrom,
// 2.00 sendto), 2.62 with batched reads (0.55 recvmmsg, 1.97 sendto). Sends were not
// batched then: each datagram left through its own sendto. The CPU the reads saved is
// small beside what sendto costs on loopback, where it also delivers to the receiving
// socket. The fast path's sends are now batched too (sendmmsg, one call per outgoing
// socket per read batch; see the package comment): that is newer than every figure above,
// which were not measured with it.
const benchSecret = "bench-secret"

// TestMain lets the test binary run as a relay child process for the benchmark.
func TestMain(m *testing.M) {
	if cfg := os.Getenv("PEERLINE_RELAY_CHILD"); cfg != "" {
		os.Exit(relayChild(cfg))
	}
	os.Exit(m.Run())
}

// childConfig is what the benchmark passes to a relay child.
type childConfig struct {
	Listen    string
	MinPort   uint16
	MaxPort   uint16
	Listeners int
}

// relayChild runs a relay the way 'peerline relay' does, prints its address as a JSON
// line and serves until SIGTERM.
func relayChild(raw string) int {
	var cc childConfig
	if err := json.Unmarshal([]byte(raw), &cc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if path := os.Getenv("PEERLINE_RELAY_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := New(Config{
		Secret: []byte(benchSecret), Realm: "bench", Listen: cc.Listen, Listeners: cc.Listeners,
		MinPort: cc.MinPort, MaxPort: cc.MaxPort, AllowPrivatePeers: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"udp": s.Addr().String(), "pid": os.Getpid()})
	s.Run(ctx)
	return 0
}

// benchServer is a TURN server process under test.
type benchServer struct {
	name string
	port int
	cmd  *exec.Cmd
}

func (b *benchServer) stop() {
	b.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
}

// freePort returns a port free on loopback for both UDP and TCP, at the time of asking.
func freePort(t *testing.T) int {
	for i := 0; i < 20; i++ {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// startOurs starts Peerline's relay in a child process: this test binary re-executed as a
// relay when PEERLINE_RELAY_CPUPROFILE is set, else PEERLINE_BIN's relay command if set,
// else a freshly built peerline, else (the build failed) the re-executed test binary.
func startOurs(t *testing.T, dir string, port int, listeners int) *benchServer {
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	var bin string
	switch {
	case os.Getenv("PEERLINE_RELAY_CPUPROFILE") != "":
		// Only the re-executed test binary profiles itself.
	case os.Getenv("PEERLINE_BIN") != "":
		bin = os.Getenv("PEERLINE_BIN")
	default:
		bin = filepath.Join(dir, "peerline")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/peerline/peerline/cmd/peerline").CombinedOutput()
		if err != nil {
			t.Logf("cannot build peerline (%v), running the relay in this test binary:\n%s", err, out)
			bin = ""
		}
	}
	var cmd *exec.Cmd
	if bin != "" {
		cmd = exec.Command(bin, "relay", "--data", filepath.Join(dir, "ours"), "--listen", listen,
			"--port-range", "50000-54999", "--allow-private-peers", "--realm", "bench",
			"--listeners", strconv.Itoa(listeners), "--json", "--log-level", "warn")
		cmd.Env = append(os.Environ(), "PEERLINE_TURN_SECRET="+benchSecret)
	} else {
		cfg, _ := json.Marshal(childConfig{Listen: listen, MinPort: 50000, MaxPort: 54999, Listeners: listeners})
		cmd = exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PEERLINE_RELAY_CHILD="+string(cfg))
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("our relay did not start: %v", err)
	}
	t.Logf("peerline relay: %s", strings.TrimSpace(line))
	return &benchServer{name: "peerline", port: port, cmd: cmd}
}

// startCoturn starts coturn's turnserver with the same secret, no config file and quiet
// logs.
func startCoturn(t *testing.T, dir string, port int) *benchServer {
	cmd := exec.Command("turnserver", "-n",
		"--listening-ip=127.0.0.1", fmt.Sprintf("--listening-port=%d", port),
		"--relay-ip=127.0.0.1", "--min-port=55000", "--max-port=59999",
		"--use-auth-secret", "--static-auth-secret="+benchSecret, "--realm=bench",
		"--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
		"--log-file=/dev/null", "--no-stdout-log", "--pidfile="+filepath.Join(dir, "turnserver.pid"),
		"--userdb="+filepath.Join(dir, "turndb"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// It opens its UDP listeners, one per thread, after TCP: it is ready once it answers a
	// Binding request over UDP.
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := eventually.Await(10*time.Second, "turnserver to answer over UDP", func() bool { return stunAnswers(addr) }); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("turnserver did not start: %v", err)
	}
	return &benchServer{name: "coturn", port: port, cmd: cmd}
}

// stunAnswers reports whether a STUN Binding request to addr over UDP is answered within
// 100 ms.
func stunAnswers(addr string) bool {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := c.Write(req.Raw); err != nil {
		return false
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return err == nil && stun.IsMessage(buf[:n])
}

// cpuTime is a process's user+system CPU time, all threads.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// threads is the number of threads of process pid (0 if unknown).
func threads(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// load is one turnutils_uclient workload and what our relay must do under it.
type load struct {
	name     string
	clients  int // allocations
	interval int // ms between a client's messages
	want     criteria
}

// benchResult is one run of a load against a server.
type benchResult struct {
	sent, recv  int // totals of the run
	sendDropped int // messages uclient failed to send
	// The steady state: the middle half of the send phase, when every client is sending
	// (uclient starts its clients over a few seconds and they stop as staggered).
	winSent, winRecv int
	winWall          time.Duration
	winCPU           time.Duration // the server's CPU time over the window
	winUclient       time.Duration // turnutils_uclient's CPU time over the window
	winOther         time.Duration // CPU time of everything else on the machine but uclient and the server
	winMachine       time.Duration // CPU time of the whole machine
	uclientThreads   int           // the most threads uclient had at a progress line
}

var (
	reTick   = regexp.MustCompile(`start_mclient: msz=\d+, tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	reTotals = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	reLost   = regexp.MustCompile(`Total lost packets (\d+) \([\d.]+%\), total send dropped (\d+)`)
)

// sample is the state at one of uclient's once-a-second progress lines.
type sample struct {
	at          time.Time
	sent, recv  int
	cpu         time.Duration // the server's
	uclient     time.Duration // uclient's
	machineBusy time.Duration // all CPUs, all processes
}

// machineBusy is the CPU time all processes used, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / 100
}

// runLoad runs turnutils_uclient against srv and measures the send phase.
func runLoad(t *testing.T, srv *benchServer, l load, seconds int) benchResult {
	n := seconds * 1000 / l.interval
	args := []string{"-y", "-c", "-m", strconv.Itoa(l.clients), "-l", "160", "-z", strconv.Itoa(l.interval),
		"-n", strconv.Itoa(n), "-W", benchSecret, "-u", "bench", "-p", strconv.Itoa(srv.port), "127.0.0.1"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+5*time.Minute)
	defer cancel()
	name := "turnutils_uclient"
	cmdArgs := args
	if p, err := exec.LookPath("stdbuf"); err == nil { // line-buffered, so that lines arrive as printed
		name, cmdArgs = p, append([]string{"-oL", "turnutils_uclient"}, args...)
	}
	cmd := exec.CommandContext(ctx, name, cmdArgs...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		res     benchResult
		samples []sample
		pid     = srv.cmd.Process.Pid
		sc      = bufio.NewScanner(out)
		tail    []string
	)
	for sc.Scan() {
		line := sc.Text()
		tail = append(tail, line)
		if len(tail) > 20 {
			tail = tail[1:]
		}
		if m := reTick.FindStringSubmatch(line); m != nil {
			s := sample{at: time.Now(), cpu: cpuTime(pid), uclient: cpuTime(cmd.Process.Pid), machineBusy: machineBusy()}
			s.sent, _ = strconv.Atoi(m[1])
			s.recv, _ = strconv.Atoi(m[2])
			samples = append(samples, s)
			res.uclientThreads = max(res.uclientThreads, threads(cmd.Process.Pid))
		}
		if m := reTotals.FindStringSubmatch(line); m != nil {
			res.sent, _ = strconv.Atoi(m[1])
			res.recv, _ = strconv.Atoi(m[2])
		}
		if m := reLost.FindStringSubmatch(line); m != nil {
			res.sendDropped, _ = strconv.Atoi(m[2])
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	// The send phase runs from the first progress line with messages sent to the first
	// with 99% of them sent; the window is its middle half.
	first, last := -1, len(samples)-1
	for i := len(samples) - 1; i >= 0; i-- {
		if samples[i].sent > 0 {
			first = i
		}
		if float64(samples[i].sent) >= 0.99*float64(res.sent) {
			last = i
		}
	}
	if err != nil || res.sent == 0 || first < 0 || last-first < 4 {
		t.Fatalf("turnutils_uclient %s against %s: %v (%d progress lines)\n%s", strings.Join(args, " "), srv.name, err, len(samples), strings.Join(tail, "\n"))
	}
	a, b := samples[first+(last-first)/4], samples[last-(last-first)/4]
	res.winSent, res.winRecv = b.sent-a.sent, b.recv-a.recv
	res.winWall, res.winCPU, res.winUclient = b.at.Sub(a.at), b.cpu-a.cpu, b.uclient-a.uclient
	res.winMachine = b.machineBusy - a.machineBusy
	res.winOther = res.winMachine - res.winCPU - res.winUclient
	return res
}

func TestRelayVsCoturn(t *testing.T) {
	if os.Getenv("PEERLINE_RELAY_BENCH") == "" {
		t.Skip("set PEERLINE_RELAY_BENCH=1 to compare with coturn")
	}
	for _, tool := range []string{"turnserver", "turnutils_uclient"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: apt-get install coturn)", tool)
		}
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc to read the servers' CPU time")
	}
	seconds := 15
	if v, err := strconv.Atoi(os.Getenv("PEERLINE_RELAY_BENCH_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	listeners := 0
	if v, err := strconv.Atoi(os.Getenv("PEERLINE_RELAY_BENCH_LISTENERS")); err == nil {
		listeners = v
	}
	dir := t.TempDir()
	ours := startOurs(t, dir, freePort(t), listeners)
	defer ours.stop()
	coturn := startCoturn(t, dir, freePort(t))
	defer coturn.stop()

	var b strings.Builder
	fmt.Fprintf(&b, "%-9s %-13s %10s %7s | %10s %7s %6s %10s %8s %7s %6s\n",
		"server", "load", "delivered", "loss%", "msgs/s", "loss%", "CPU%", "CPU µs/msg", "uclient%", "others%", "idle%")
	var failures, verdicts []string
	only := os.Getenv("PEERLINE_RELAY_BENCH_LOADS")
	for _, l := range benchLoads {
		if !strings.Contains(l.name, only) {
			continue
		}
		var figs [2]runFigures
		for i, srv := range []*benchServer{coturn, ours} {
			r := runLoad(t, srv, l, seconds)
			loss := 100 * float64(r.sent-r.recv) / float64(r.sent)
			f := r.figures()
			figs[i] = f
			fmt.Fprintf(&b, "%-9s %-13s %10d %7.2f | %10.0f %7.2f %6.1f %10.1f %8.1f %7.1f %6.1f\n",
				srv.name, l.name, r.recv, loss, f.rate, f.loss, f.cpuPct, f.perMsg, f.uclientPct, f.othersPct, f.idlePct)
			t.Logf("%s %s: sent %d received %d (uclient send dropped %d, %d threads); steady window %v: sent %d received %d, server CPU %v, uclient CPU %v",
				srv.name, l.name, r.sent, r.recv, r.sendDropped, r.uclientThreads, r.winWall.Round(time.Millisecond), r.winSent, r.winRecv, r.winCPU, r.winUclient)
			if f.loss >= 1 {
				verdicts = append(verdicts, fmt.Sprintf("%s %s lost %.1f%%: %s", srv.name, l.name, f.loss, f.bottleneck()))
			}
			// A real-time pause between two measured runs, not a wait for an event: the
			// server that just ran lets its last allocations go and the machine settles,
			// so that neither weighs on the next run's figures.
			time.Sleep(2 * time.Second)
		}
		for _, s := range l.want.shortfalls(figs[1], figs[0]) {
			failures = append(failures, l.name+": "+s)
		}
	}
	t.Logf("turnutils_uclient -y -c -l 160, %d s of sending per run; a message crosses the server twice.\n"+
		"Left: the whole run. Right: the steady middle half of the send phase (msgs/s delivered, loss, the server's CPU\n"+
		"as %% of one core and per delivered message, uclient's CPU, what the machine's other processes used, and\n"+
		"the machine's idle time, as %% of one core of %d).\n%s%s",
		seconds, runtime.NumCPU(), b.String(), strings.Join(verdicts, "\n"))
	if len(failures) > 0 {
		t.Errorf("Peerline's relay falls short of coturn (on a machine busy with other work, others%% above, the comparison is noisy):\n%s",
			strings.Join(failures, "\n"))
	}
}

// The loads TestRelayVsCoturn runs, and what each requires of our relay against coturn in
// the same run:
//
//   - 1,000 x 50/s and 100 x 1,000/s, which neither server lost on an idle machine in
//     November: at least the same delivery (msgs/s at least 0.98 x coturn's, loss at most
//     coturn's + 0.5 points), and CPU per message at most coturn's at the first (issue 9,
//     acceptance 6), at most 1.25 x at the second;
//   - 150 x 500/s and 1,500 x 50/s, where the machine runs out of CPU: delivered msgs/s
//     at least coturn's, less rateNoise (issue 9, acceptance 6).
//
// rateNoise is the error of the measurement, not room for a worse relay: msgs/s is counted
// by uclient and timed by the test when it reads uclient's progress lines, so a window's
// two ends are each late by however long the test waits to be scheduled, tens of ms on a
// saturated machine; two such delays over the ~12 s window are up to 1%. Where neither
// server loses, the two servers' msgs/s agree within 0.02% (November's figures), so 0.98 is
// the older, wider margin, kept where delivery is not the point.
var benchLoads = []load{
	{name: "1000 x 50/s", clients: 1000, interval: 20, want: criteria{minRateRatio: 0.98, maxExtraLoss: 0.5, maxCPURatio: 1}},
	{name: "100 x 1000/s", clients: 100, interval: 1, want: criteria{minRateRatio: 0.98, maxExtraLoss: 0.5, maxCPURatio: 1.25}},
	{name: "150 x 500/s", clients: 150, interval: 2, want: criteria{minRateRatio: 1 - rateNoise, maxExtraLoss: math.Inf(1)}},
	{name: "1500 x 50/s", clients: 1500, interval: 20, want: criteria{minRateRatio: 1 - rateNoise, maxExtraLoss: math.Inf(1)}},
}

const rateNoise = 0.01

// criteria are what our relay must do against coturn under one load.
type criteria struct {
	minRateRatio float64 // delivered msgs/s, at least this times coturn's
	maxExtraLoss float64 // loss %, at most coturn's plus this many points (+Inf: not checked)
	maxCPURatio  float64 // server CPU per delivered message, at most this times coturn's (0: not checked)
}

// runFigures are one run's steady-window figures.
type runFigures struct {
	rate       float64 // delivered msgs/s
	loss       float64 // % of sent
	cpuPct     float64 // server CPU, % of one core
	perMsg     float64 // server CPU µs per delivered message
	uclientPct float64 // turnutils_uclient's CPU, % of one core
	othersPct  float64 // the machine's other processes, % of one core
	idlePct    float64 // the machine's idle CPU, % of one core
	uclientMax float64 // the most uclient can use, % of one core: 100 per thread, at most the machine
}

func (r benchResult) figures() runFigures {
	wall := r.winWall.Seconds()
	return runFigures{
		rate:       float64(r.winRecv) / wall,
		loss:       100 * float64(r.winSent-r.winRecv) / float64(r.winSent),
		cpuPct:     100 * r.winCPU.Seconds() / wall,
		perMsg:     float64(r.winCPU.Microseconds()) / float64(r.winRecv),
		uclientPct: 100 * r.winUclient.Seconds() / wall,
		othersPct:  100 * r.winOther.Seconds() / wall,
		idlePct:    100*float64(runtime.NumCPU()) - 100*r.winMachine.Seconds()/wall,
		uclientMax: 100 * float64(min(max(r.uclientThreads, 1), runtime.NumCPU())),
	}
}

// bottleneck says which process ran out of CPU in a run that lost messages: uclient if it
// used (nearly) all its threads could (it is single-threaded), else the machine if it had
// no idle time left (then the server got what uclient left it), else neither (the loss is
// in queues, not for want of CPU).
func (f runFigures) bottleneck() string {
	switch {
	case f.uclientPct >= 0.95*f.uclientMax:
		return fmt.Sprintf("the load generator ran out of CPU (uclient at %.0f%% of %.0f%%; server at %.0f%%, idle %.0f%%)", f.uclientPct, f.uclientMax, f.cpuPct, f.idlePct)
	case f.idlePct < 5:
		return fmt.Sprintf("the machine ran out of CPU (server at %.0f%%, uclient at %.0f%% of %.0f%%, others %.0f%%, idle %.0f%%): the server had what uclient left it", f.cpuPct, f.uclientPct, f.uclientMax, f.othersPct, f.idlePct)
	default:
		return fmt.Sprintf("neither ran out of CPU (server at %.0f%%, uclient at %.0f%%, idle %.0f%%)", f.cpuPct, f.uclientPct, f.idlePct)
	}
}

// shortfalls says where ours falls short of coturn's figures under c (nil: nowhere).
func (c criteria) shortfalls(ours, coturn runFigures) []string {
	var out []string
	if !(ours.rate >= c.minRateRatio*coturn.rate) {
		out = append(out, fmt.Sprintf("delivered %.0f msgs/s, coturn %.0f (%.3f x, want >= %.2f x)", ours.rate, coturn.rate, ours.rate/coturn.rate, c.minRateRatio))
	}
	if !(ours.loss <= coturn.loss+c.maxExtraLoss) {
		out = append(out, fmt.Sprintf("lost %.2f%%, coturn %.2f%% (want at most %.1f points more)", ours.loss, coturn.loss, c.maxExtraLoss))
	}
	if c.maxCPURatio > 0 && !(ours.perMsg <= c.maxCPURatio*coturn.perMsg) {
		out = append(out, fmt.Sprintf("%.1f µs CPU per message, coturn %.1f (%.2f x, want <= %.2f x)", ours.perMsg, coturn.perMsg, ours.perMsg/coturn.perMsg, c.maxCPURatio))
	}
	return out
}

// TestRelayComparisonThresholds: the recorded figures (bench comment, README) pass
// TestRelayVsCoturn's check, and a relay slower, lossier or costlier than coturn by more
// than the margins fails it, load by load.
func TestRelayComparisonThresholds(t *testing.T) {
	// coturn's and ours, in benchLoads' order.
	coturn := []runFigures{{rate: 49531, loss: 0.90, perMsg: 28.2}, {rate: 69929, loss: 29.34, perMsg: 19.2},
		{rate: 66896, loss: 10.92, perMsg: 21.0}, {rate: 52706, loss: 29.61, perMsg: 25.4}}
	ours := []runFigures{{rate: 50252, loss: -0.38, perMsg: 27.9}, {rate: 79147, loss: 6.48, perMsg: 18.0},
		{rate: 73543, loss: 0.61, perMsg: 19.0}, {rate: 70485, loss: 6.57, perMsg: 20.5}}
	for i, l := range benchLoads {
		if s := l.want.shortfalls(ours[i], coturn[i]); len(s) > 0 {
			t.Errorf("recorded figures, %s: %v", l.name, s)
		}
	}
	for i, l := range benchLoads {
		c := coturn[i]
		bad := map[string]runFigures{
			"slower":            {rate: (l.want.minRateRatio - 0.005) * c.rate, loss: c.loss, perMsg: c.perMsg},
			"nothing delivered": {rate: 0, loss: 100, perMsg: 0},
			"not measured":      {rate: math.NaN(), loss: math.NaN(), perMsg: math.NaN()},
		}
		if !math.IsInf(l.want.maxExtraLoss, 1) {
			bad["lossier"] = runFigures{rate: c.rate, loss: c.loss + l.want.maxExtraLoss + 0.1, perMsg: c.perMsg}
		}
		if l.want.maxCPURatio > 0 {
			bad["costlier"] = runFigures{rate: c.rate, loss: c.loss, perMsg: (l.want.maxCPURatio + 0.01) * c.perMsg}
		}
		for name, f := range bad {
			if s := l.want.shortfalls(f, c); len(s) == 0 {
				t.Errorf("%s: %s relay (%+v) passes against coturn (%+v)", l.name, name, f, c)
			}
		}
	}
	// Acceptance 6 of issue 9: at 1,000 x 50/s, at most coturn's CPU per message; at
	// 150 x 500/s and 1,500 x 50/s, at least coturn's delivery less the noise.
	if benchLoads[0].want.maxCPURatio > 1 || benchLoads[2].want.minRateRatio < 1-rateNoise || benchLoads[3].want.minRateRatio < 1-rateNoise {
		t.Errorf("the criteria are looser than issue 9's acceptance: %+v", benchLoads)
	}
	if len(benchLoads) != 4 || benchLoads[2].clients != 150 || benchLoads[2].interval != 2 || benchLoads[3].clients != 1500 || benchLoads[3].interval != 20 {
		t.Errorf("benchLoads lost a load issue 9 asks for: %+v", benchLoads)
	}
}
