package overlaysim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// scale returns the population of the churn test: PEERLINE_SIM="SUPERNODES,USERS", or a
// small default that fits a -race run.
func scale(t testing.TB) (sns, users int) {
	if v := getenvScale(); v != nil {
		return v[0], v[1]
	}
	return 50, 500
}

// pace returns the keep-alive and heartbeat periods for a population. Records live two
// periods, so 10 s at least: under -race on two cores a republication can be late by
// seconds, and shorter lives expired records of users who were online. At full scale
// the supernodes' default keep-alive (20 s), at which two cores carry 10,000 users'
// publications (three stores each), and a heartbeat every 2 s from 1,000 supernodes
// (the login server drops one after three missed).
func pace(sns, users int) (keep, hb time.Duration) {
	keep = max(10*time.Second, time.Duration(users)*2*time.Millisecond)
	hb = time.Second
	if sns >= 500 {
		hb = 2 * time.Second
	}
	return keep, hb
}

func getenvScale() []int {
	v := os.Getenv("PEERLINE_SIM")
	if v == "" {
		return nil
	}
	a, b, ok := strings.Cut(v, ",")
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || x <= 0 || y < 0 {
		panic(fmt.Sprintf("PEERLINE_SIM=%q: want SUPERNODES,USERS", v))
	}
	return []int{x, y}
}

// TestIndexUnderChurn kills 10% of the supernodes at once; after one keep-alive period
// every online user must be found. PEERLINE_SIM=1000,10000 runs it at full scale.
func TestIndexUnderChurn(t *testing.T) { churn(t, false) }

// TestIndexUnderChurnVirtual is TestIndexUnderChurn on a virtual clock (testing/synctest):
// time moves only when every goroutine of the overlay waits, so the thousands of
// simulated machines never lose a timeout to the two cores they share, and the test's
// waits cost no wall time. PEERLINE_SIM=1000,100000 runs it at full scale.
func TestIndexUnderChurnVirtual(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { churn(t, true) })
}

// churn is the churn test, on the real clock or inside a synctest bubble (virtual).
func churn(t *testing.T, virtual bool) {
	if virtual && os.Getenv("PEERLINE_CHURN_PROFILE") != "" {
		// The CPU profile's writer waits in the kernel, which a bubble counts as busy:
		// virtual time would never move again.
		t.Fatal("PEERLINE_CHURN_PROFILE does not work on the virtual clock; use PEERLINE_CPUPROFILE")
	}
	sns, users := scale(t)
	keep, hb := pace(sns, users)
	// 10 minutes, and 6 more for each 100,000 users: the boot, two lookups of everyone
	// and the keep-alive period after the kill all grow with the population.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute+time.Duration(users)*3600*time.Microsecond)
	defer cancel()
	wall := wallClock(virtual)
	start := time.Now()
	var log *slog.Logger
	if os.Getenv("PEERLINE_SIM_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	mem := WatchMemory(200 * time.Millisecond)
	defer mem.Stop()
	var peerIdle time.Duration
	if v := os.Getenv("PEERLINE_SIM_PEERIDLE"); v != "" {
		var err error
		if peerIdle, err = time.ParseDuration(v); err != nil {
			t.Fatalf("PEERLINE_SIM_PEERIDLE: %v", err)
		}
	}
	progress := func(format string, args ...any) { t.Logf(format+"%s", append(args, wall())...) }
	opts := Options{Supernodes: sns, Users: users, KeepAlive: keep, Heartbeat: hb, PeerIdle: peerIdle, Logger: log, Progress: progress,
		NoMesh: os.Getenv("PEERLINE_SIM_NOMESH") != ""}
	if virtual {
		// A start takes no virtual time: started as fast as they attach, the whole
		// population would keep alive in one burst each period. Real users come up
		// over time; spread their starts over one period, evenly, in groups every
		// 100 ms (so that the two cores have work for both).
		opts.StartWithin, opts.StartTick = keep, 100*time.Millisecond
	}
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	heap, sys := mem.Peak()
	t.Logf("%d supernodes and %d users up in %v%s (peak heap %d MiB, from OS %d MiB)", sns, users,
		time.Since(start).Round(time.Millisecond), wall(), heap, sys)
	before := s.LookupAll(ctx, 32)
	heap, _ = mem.Peak()
	t.Logf("before churn: %v (peak heap %d MiB; %s)", before, heap, s.Health())
	if !before.FoundAll() {
		describeMissing(t, s, before)
		t.Fatalf("before churn only %d of %d users found", before.Found+before.FoundOnRetry, before.Users)
	}
	// The one-hop promise, on the virtual clock, where no holder is slow for want of a
	// core: with the member list known everywhere, a lookup asks one holder at most.
	if virtual && before.MaxHops > 1 {
		t.Errorf("before churn a lookup took %d hops; with the ring known, one is the most", before.MaxHops)
	}
	stopProfile := profileChurn(t)
	killed := s.KillSupernodes(sns / 10)
	t.Logf("%s%s: killed %d supernodes; waiting one keep-alive period (%v)", time.Now().Format("15:04:05.000"), wall(), len(killed), keep)
	// The property is that every online user is found one keep-alive period after the
	// kill, the time the protocol gives the supernodes to notice the dead and place
	// their records again: that period passing is what is tested. Inside the bubble the
	// sleep is virtual time, passed as soon as the overlay has nothing else to do.
	time.Sleep(keep)
	stopProfile()
	heap, _ = mem.Peak()
	t.Logf("during the keep-alive period after the kill: peak heap %d MiB%s", heap, wall())
	after := s.LookupAll(ctx, 32)
	heap, sys = mem.Peak()
	t.Logf("after churn: %v (peak heap %d MiB, from OS %d MiB; %v since start%s; %s)",
		after, heap, sys, time.Since(start).Round(time.Millisecond), wall(), s.Health())
	if !after.FoundAll() {
		describeMissing(t, s, after)
		t.Fatalf("after churn only %d of %d users found", after.Found+after.FoundOnRetry, after.Users)
	}
	// A keep-alive period after the kill the dead are off every ring (their connections
	// to the login server closed) and each user has republished: one hop again, but for
	// the odd lookup that met a holder its supernode had not yet suspected.
	if virtual && after.P99Hops > 1 {
		t.Errorf("after churn the 99th percentile lookup took %d hops, want 1", after.P99Hops)
	}
}

// wallClock returns, on a virtual clock, a function that tells the wall-clock time
// since the call (which synctest's time.Now cannot), and on the real clock one that
// says nothing, since the times logged already are the wall clock's.
func wallClock(virtual bool) func() string {
	if !virtual {
		return func() string { return "" }
	}
	cpu0, w0 := cpuSeconds(), wallSeconds()
	seconds := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)).Round(time.Millisecond) }
	return func() string {
		return fmt.Sprintf(" [virtual; wall %v, CPU %v]", seconds(wallSeconds()-w0), seconds(cpuSeconds()-cpu0))
	}
}

// describeMissing logs where the first users a lookup missed are.
func describeMissing(t *testing.T, s *Sim, st LookupStats) {
	for _, name := range st.NotFound[:min(len(st.NotFound), 10)] {
		t.Log(s.Describe(name))
	}
}

// profileChurn, with PEERLINE_CHURN_PROFILE=DIR, profiles the keep-alive period after the
// kill: the CPU over the whole of it (DIR/churn-cpu.pb) and the goroutines five seconds
// into it (DIR/churn-goroutines.pb). The process is then too loaded to answer pprof over
// HTTP in time. It returns the function that ends the CPU profile.
func profileChurn(t *testing.T) func() {
	dir := os.Getenv("PEERLINE_CHURN_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, "churn-cpu.pb"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	g := time.AfterFunc(5*time.Second, func() {
		gf, err := os.Create(filepath.Join(dir, "churn-goroutines.pb"))
		if err == nil {
			pprof.Lookup("goroutine").WriteTo(gf, 0)
			gf.Close()
		}
	})
	return func() {
		g.Stop()
		pprof.StopCPUProfile()
		f.Close()
		t.Logf("churn profiles in %s", dir)
	}
}

// TestStaleStateRemoved: the state directory of a simulation whose process is gone is
// removed when the next one starts; a live process's, and anything else, stays.
func TestStaleStateRemoved(t *testing.T) {
	base := t.TempDir()
	gone := filepath.Join(base, fmt.Sprintf("%s%d-123", simDirPrefix, deadPID(t)))
	live := filepath.Join(base, fmt.Sprintf("%s%d-456", simDirPrefix, os.Getppid()))
	other := filepath.Join(base, "peerline-other-1-1")
	for _, d := range []string{gone, live, other} {
		if err := os.MkdirAll(filepath.Join(d, "user00000"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	removeStale(base)
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Fatalf("a dead simulation's state survived: %v", err)
	}
	for _, d := range []string{live, other} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("%s removed: %v", d, err)
		}
	}
}

// deadPID returns the id of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no process to run:", err)
	}
	return cmd.Process.Pid
}
