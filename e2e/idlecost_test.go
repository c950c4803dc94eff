package e2e

// What an attached idle client costs a real supernode process: this test process is the
// load generator, running K real clients (client.New and Run, each with its own data dir,
// key, saved credential and source address on loopback) against one supernode process.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/identity"
)

// TestIdleClientCost attaches K idle clients (PEERLINE_IDLE_CLIENTS, default 100; the
// README measures 4,000) to one supernode and reports what they cost it: RSS, Go heap
// after a GC and goroutines, before and after, per client; and the heap profile's top
// consumers of the difference (profiles kept in PEERLINE_IDLE_PROFILES=DIR if set).
func TestIdleClientCost(t *testing.T) {
	k := 100
	if s := os.Getenv("PEERLINE_IDLE_CLIENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 4500 {
			t.Fatalf("PEERLINE_IDLE_CLIENTS=%q: want 1-4500 (the supernode admits 4,500 new sources under its default 5,000 limit)", s)
		}
		k = n
	}
	profDir := os.Getenv("PEERLINE_IDLE_PROFILES")
	if profDir == "" {
		profDir = t.TempDir()
	} else if err := os.MkdirAll(profDir, 0o755); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	lsDir := filepath.Join(root, "login")
	keyText, _ := loginsrvInit(t, lsDir)
	lsAddr := freeAddr(t)
	startProc(t, "loginsrv", nil, append([]string{"loginsrv", "--data", lsDir, "--listen", lsAddr, "--heartbeat", "1s"}, fastArgon...)...)
	waitListening(t, lsAddr)
	snDir, snAddr, pprofAddr := filepath.Join(root, "sn1"), freeAddr(t), freeAddr(t)
	// A heap sample every 8 KiB on average (not 512 KiB): per-client objects show.
	sn := startProc(t, "sn1", []string{"GODEBUG=memprofilerate=8192"}, "supernode", "--data", snDir, "--listen", snAddr, "--login", lsAddr,
		"--login-key", keyText, "--admit-secret-file", filepath.Join(lsDir, admitSecretFile), "--name", "sn1",
		"--turn-allow-private-peers", "--pprof", pprofAddr)
	waitListening(t, snAddr)
	waitListening(t, pprofAddr)
	key, err := identity.DecodeKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	ls := client.LoginServer{Addr: lsAddr, Key: key}
	users := make([]string, k)
	for i := range users {
		users[i] = fmt.Sprintf("idle%04d", i)
	}
	parallel(t, 8, k, func(i int) error {
		return registerRetrying(ls, sourceIP(20, i), users[i], "password-"+users[i])
	})
	waitListed(t, snDir) // the seed lists the supernode

	pid := sn.cmd.Process.Pid
	before := measureSupernode(t, pid, pprofAddr, filepath.Join(profDir, "heap-before.pb.gz"))

	// K clients in this process, started all at once; the back-off spreads them.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	clients := make([]*client.Client, k)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := time.Now()
	for i, u := range users {
		pw := "password-" + u
		c, err := client.New(client.Config{
			DataDir: filepath.Join(root, u), Login: ls, User: u,
			Password: func(context.Context) (string, error) { return pw, nil },
			Dialer:   &net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceIP(20, i)}},
			Prefer:   snAddr, NoControl: true, Promote: client.PromoteConfig{Disabled: true},
			Logger: discard,
		})
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Errorf("clients still running 60s after their context ended")
		}
	})
	limit := 60*time.Second + time.Duration(k)*50*time.Millisecond
	var st snStatus
	var stErr error
	if err := eventually.Await(limit, fmt.Sprintf("all %d clients attached to the supernode", k), func() bool {
		st, stErr = supernodeStatus(snDir)
		return stErr != nil || len(st.Clients) == k
	}); err != nil {
		var why []string
		for _, c := range clients {
			if s := c.Status(); s.Supernode == nil && len(why) < 5 {
				why = append(why, s.User+": "+s.LastError)
			}
		}
		t.Fatalf("%d/%d attached after %v; not attached: %s", len(st.Clients), k, limit, strings.Join(why, "; "))
	}
	if stErr != nil {
		t.Fatal(stErr)
	}
	attachedIn := time.Since(start)
	// Idle: logged in, NAT known, records published; wait for the records, then let
	// the start-up garbage go.
	eventually.That(t, 60*time.Second, "every client's record stored at the supernode", func() bool {
		st, err := supernodeStatus(snDir)
		return err == nil && st.Records >= k
	})
	// What is measured is the cost of clients at rest, which only time passing reaches:
	// the garbage of the start-up (attachment, NAT detection, publication and its
	// answers) is collected by the GC the measurement forces, but the goroutines and
	// buffers of exchanges still under way go only as they end, on timers of their own,
	// and no state of the supernode says that the last of them has.
	time.Sleep(5 * time.Second)
	after := measureSupernode(t, pid, pprofAddr, filepath.Join(profDir, "heap-after.pb.gz"))
	st, _ = supernodeStatus(snDir)

	per := func(a, b int64) string { return fmt.Sprintf("%.1f KiB", float64(b-a)/float64(k)/1024) }
	var b strings.Builder
	fmt.Fprintf(&b, "%d idle clients attached to one supernode process %v after the first started (%d records)\n", k, attachedIn.Round(time.Millisecond), st.Records)
	fmt.Fprintf(&b, "  VmRSS      %s -> %s: %s per client\n", mib(before.rss), mib(after.rss), per(before.rss, after.rss))
	fmt.Fprintf(&b, "  HeapInuse  %s -> %s: %s per client (after a GC)\n", mib(before.heapInuse), mib(after.heapInuse), per(before.heapInuse, after.heapInuse))
	fmt.Fprintf(&b, "  HeapAlloc  %s -> %s: %s per client\n", mib(before.heapAlloc), mib(after.heapAlloc), per(before.heapAlloc, after.heapAlloc))
	fmt.Fprintf(&b, "  StackInuse %s -> %s: %s per client\n", mib(before.stackInuse), mib(after.stackInuse), per(before.stackInuse, after.stackInuse))
	fmt.Fprintf(&b, "  goroutines %d -> %d: %.2f per client\n", before.goroutines, after.goroutines, float64(after.goroutines-before.goroutines)/float64(k))
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", "-sample_index=inuse_space",
		"-diff_base", filepath.Join(profDir, "heap-before.pb.gz"), filepath.Join(profDir, "heap-after.pb.gz")).CombinedOutput()
	if err != nil {
		t.Logf("go tool pprof: %v\n%s", err, top)
	}
	fmt.Fprintf(&b, "  heap profile, after minus before (profiles in %s):\n%s", profDir, top)
	t.Log(b.String())
}

// parallel runs f(0..n-1) on workers goroutines and fails the test on the first error.
func parallel(t *testing.T, workers, n int, f func(i int) error) {
	t.Helper()
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				errs <- f(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// snMemory is a supernode process's memory at one moment.
type snMemory struct {
	rss, heapInuse, heapAlloc, stackInuse int64
	goroutines                            int
}

// measureSupernode forces a GC in the supernode (through its pprof endpoint), saves its
// heap profile to path and reads its runtime.MemStats, goroutine count and VmRSS.
func measureSupernode(t *testing.T, pid int, pprofAddr, path string) snMemory {
	t.Helper()
	get := func(q string) []byte {
		c := http.Client{Timeout: 60 * time.Second}
		resp, err := c.Get("http://" + pprofAddr + "/debug/pprof/" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("pprof %s: %v %s", q, err, resp.Status)
		}
		return b
	}
	if err := os.WriteFile(path, get("heap?gc=1"), 0o644); err != nil {
		t.Fatal(err)
	}
	var m snMemory
	sc := bufio.NewScanner(strings.NewReader(string(get("heap?gc=1&debug=1"))))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "HeapInuse":
			m.heapInuse = n
		case "HeapAlloc":
			m.heapAlloc = n
		case "Stack": // "Stack = StackInuse / StackSys"
			f, _, _ := strings.Cut(v, " ")
			m.stackInuse, _ = strconv.ParseInt(f, 10, 64)
		}
	}
	g := string(get("goroutine?debug=1"))
	if line, _, _ := strings.Cut(g, "\n"); strings.HasPrefix(line, "goroutine profile: total ") {
		m.goroutines, _ = strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total "))
	}
	u, err := readUsage(pid)
	if err != nil {
		t.Fatal(err)
	}
	m.rss = u.RSS
	return m
}
