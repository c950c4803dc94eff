package overlaysim

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/timeline"
)

// The storm scenarios. Small by default, for a -race run; PEERLINE_SIM=SUPERNODES,USERS
// runs them at full scale, and PEERLINE_STORM_OUT=DIR keeps each one's figures
// (NAME.tsv), plot (NAME.png) and summary (NAME.txt) there:
//
//	PEERLINE_SIM=1000,100000 PEERLINE_STORM_OUT=storm go test ./e2e/overlaysim \
//	    -run 'TestStorms$' -v -timeout 60m
func stormScale() (sns, users int) {
	if v := getenvScale(); v != nil {
		return v[0], v[1]
	}
	return 20, 400
}

// stormLimits are the supernodes' limits in the storms: they admit three times their
// share of the users (attached), and their listeners take that plus room for their
// connections to each other (conns).
func stormLimits(sns, users int) (attached, conns int) {
	attached = 3 * users / sns
	return attached, attached + min(2*sns, 256)
}

// promoteEvery: one user in 20 has a public address and the capacity to promote.
const promoteEvery = 20

// storm is one scenario's run: the simulation, its timeline and the figures asked for.
type storm struct {
	t     *testing.T
	name  string
	sim   *Sim
	rec   *timeline.Recorder
	stop  func()
	limit int
	out   string             // directory for figures and plot; "" = the test's temporary directory
	start time.Time          // on the test's clock: virtual inside a synctest bubble
	base  map[string]float64 // Figures when the storm began (wall_s: the wall clock)
	lines []string           // the summary
	// virtual: the storm runs inside a synctest bubble, where time moves only when
	// every goroutine waits; its times are then the protocol's alone, and the wall
	// clock's are the CPU's.
	virtual bool
	// wall, on a virtual clock, is the same figures sampled on the wall clock
	// from outside the bubble (wallWatch): a storm that is over in an instant of
	// virtual time, all of it CPU, is then plotted over the minutes the CPU took.
	wall *timeline.Recorder
}

// wallWatch samples a virtual-clock storm's figures on the real clock. Its goroutine
// runs outside the synctest bubble (TestStormsVirtual starts it before the bubble),
// where time.Now and tickers are real; Sim.Figures touches nothing of the bubble's
// but locks and atomics.
type wallWatch struct {
	mu  sync.Mutex // mu protects sim, rec and cpuWant
	sim *Sim
	rec *timeline.Recorder
	// cpuWant is the file a CPU profile of the storm goes to ("" = none). The watch's
	// goroutine starts and stops the profile: pprof's writer goroutine must not be
	// one of the bubble's, whose clock would wait for it.
	cpuWant string
}

// theWallWatch is the running wallWatch, set by TestStormsVirtual (nil otherwise).
var theWallWatch *wallWatch

func startWallWatch(interval time.Duration) (stop func()) {
	w := &wallWatch{}
	var cpu *os.File // touched by the ticks only, and by stop after the last
	profile := func(want string) {
		if cpu != nil && cpu.Name() == want {
			return
		}
		if cpu != nil {
			pprof.StopCPUProfile()
			cpu.Close()
			cpu = nil
		}
		if want == "" {
			return
		}
		f, err := os.Create(want)
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "PEERLINE_STORM_PROFILES:", err)
			return
		}
		cpu = f
	}
	stopTicks := Every(interval, func() {
		w.mu.Lock()
		if w.sim != nil {
			w.rec.Add(time.Now(), w.sim.Figures())
		}
		want := w.cpuWant
		w.mu.Unlock()
		profile(want)
	})
	theWallWatch = w
	return func() { stopTicks(); profile(""); theWallWatch = nil }
}

// follow points the watch at a storm's recording from now on, with a CPU profile of it
// into cpu if that is not ""; a nil s stops both.
func (w *wallWatch) follow(s *Sim, rec *timeline.Recorder, cpu string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.sim, w.rec, w.cpuWant = s, rec, cpu
	w.mu.Unlock()
}

// wallNow is the kernel's wall clock, which a synctest bubble does not fake.
func wallNow() time.Time { return time.Unix(0, int64(wallSeconds()*1e9)) }

// startStormSim starts the population of the storms, watched from the cold start's
// first client; started is told of the simulation as soon as it runs (to close it).
func startStormSim(t *testing.T, name string, virtual bool, started func(*Sim), mod func(*Options)) *storm {
	sns, users := stormScale()
	keep, hb := pace(sns, users)
	// A storm loads the machine for a while: records must outlive a republication
	// delayed by it (they live two keep-alive periods).
	keep = max(keep, 10*time.Second)
	attached, conns := stormLimits(sns, users)
	opts := Options{Supernodes: sns, Users: users, KeepAlive: keep, Heartbeat: hb,
		MaxAttached: attached, MaxClients: conns, Progress: t.Logf, PromoteEvery: promoteEvery,
		NoMesh: os.Getenv("PEERLINE_SIM_NOMESH") != ""}
	if v := os.Getenv("PEERLINE_SIM_LOG"); v != "" {
		level := slog.LevelWarn
		if v == "info" {
			level = slog.LevelInfo
		}
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	if mod != nil {
		mod(&opts)
	}
	st := newStorm(t, name, opts.MaxAttached, virtual)
	interval := st.interval(users)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	watch := func(s *Sim) {
		st.sim = s
		st.stop = s.Watch(st.rec, interval)
	}
	if opts.StartWithin > 0 {
		// A cold start is the storm itself: the watch begins before the first client.
		opts.BeforeUsers = func(s *Sim) {
			watch(s)
			st.begin("every user starts within " + opts.StartWithin.String())
		}
	}
	s, err := Start(ctx, opts)
	if err != nil {
		if st.stop != nil {
			st.stop()
		}
		t.Fatal(err)
	}
	started(s) // before st.stop's cleanup, which must run first
	if st.stop == nil {
		watch(s)
	}
	t.Cleanup(st.stop)
	st.logf("%s: %d supernodes (admission limit %d clients each, %d connections), %d users, keep-alive %v, mesh %v", name, sns, st.limit, opts.MaxClients, users, keep, !opts.NoMesh)
	return st
}

func newStorm(t *testing.T, name string, limit int, virtual bool) *storm {
	st := &storm{t: t, name: name, limit: limit, out: os.Getenv("PEERLINE_STORM_OUT"), virtual: virtual}
	if st.out == "" {
		st.out = t.TempDir()
	} else if err := os.MkdirAll(st.out, 0o755); err != nil {
		t.Fatal(err)
	}
	st.rec = timeline.New(time.Now())
	return st
}

// interval is how often a storm samples: every second at scale, five times a second for
// a small population whose storm is over in seconds.
func (st *storm) interval(users int) time.Duration {
	if users < 5000 {
		return 200 * time.Millisecond
	}
	return time.Second
}

// watchStorm watches a running simulation for the next storm.
func watchStorm(t *testing.T, s *Sim, name string, virtual bool) *storm {
	st := newStorm(t, name, s.opts.MaxAttached, virtual)
	st.sim = s
	st.stop = s.Watch(st.rec, st.interval(len(s.Users)))
	t.Cleanup(st.stop)
	return st
}

func (st *storm) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	st.lines = append(st.lines, line)
	st.t.Log(line)
}

// begin marks the storm's start.
func (st *storm) begin(what string) {
	st.base = st.sim.Figures()
	lm := st.sim.Login.Metrics()
	for _, k := range []string{"sn_promotions", "sn_promotions_paced", "sn_promotions_unneeded"} {
		st.base[k] = float64(lm.Get(k))
	}
	st.start = time.Now()
	st.rec.Mark(st.start, what)
	if st.virtual && theWallWatch != nil {
		now := wallNow()
		st.wall = timeline.New(now)
		st.wall.Mark(now, what)
		st.wall.Add(now, st.base)
		cpu := ""
		if dir := os.Getenv("PEERLINE_STORM_PROFILES"); dir != "" {
			cpu = filepath.Join(dir, st.name+".cpu.pb")
		}
		theWallWatch.follow(st.sim, st.wall, cpu)
	}
}

// phase marks the start of a storm's second part (a reboot's restart after its crash):
// the time the first part took is logged, and a CPU profile of the storm goes on in
// NAME.PART.cpu.pb, so that the two parts' costs can be told apart.
func (st *storm) phase(part string) {
	wall := st.sim.Figures()["wall_s"] - st.base["wall_s"]
	st.t.Logf("%s: %s after %.1f s of wall-clock time", st.name, part, wall)
	if !st.virtual || theWallWatch == nil {
		return
	}
	if dir := os.Getenv("PEERLINE_STORM_PROFILES"); dir != "" {
		theWallWatch.follow(st.sim, st.wall, filepath.Join(dir, st.name+"."+part+".cpu.pb"))
	}
}

// waitReady waits until every user is attached and published again, and reports the
// times to 99% and 100% from the storm's start.
func (st *storm) waitReady(limit time.Duration) {
	s := st.sim
	n := len(s.Users)
	deadline := time.Now().Add(limit)
	var t99 time.Duration
	for {
		ready := 0
		for _, u := range s.Users {
			if u.Ready() {
				ready++
			}
		}
		if t99 == 0 && ready*100 >= n*99 {
			t99 = time.Since(st.start)
		}
		if ready == n {
			break
		}
		if time.Now().After(deadline) {
			st.finish()
			var stuck []string
			for _, u := range s.Users {
				if !u.Ready() && len(stuck) < 5 {
					stuck = append(stuck, s.Describe(u.Name))
				}
			}
			st.t.Fatalf("%s: only %d of %d users attached and published after %v:\n%s", st.name, ready, n, limit,
				strings.Join(stuck, "\n"))
		}
		// A look walks every user (100,000 at full scale), and the storm measures its
		// CPU: a look every 100 ms, not at the 10 ms pace of the shared wait, adds
		// little to what is measured. Inside the bubble this is virtual time.
		time.Sleep(100 * time.Millisecond)
	}
	t100 := time.Since(st.start)
	now := s.Figures()
	cpu := now["cpu_s"] - st.base["cpu_s"]
	wall := now["wall_s"] - st.base["wall_s"]
	attempts := (now["attempts"] - st.base["attempts"]) / float64(n)
	if st.base["attempts"] > 0 {
		// Reboot: the clients are new and count from zero.
		attempts = now["attempts"] / float64(n)
	}
	clock := ""
	if st.virtual {
		clock = fmt.Sprintf(" of virtual time, %.1f s of wall-clock time", wall)
	}
	st.logf("%s: 99%% of users attached and published in %v, 100%% in %v%s; CPU %.0f s over the storm (%.0f%% of one core; the machine has %d)",
		st.name, t99.Round(time.Millisecond), t100.Round(time.Millisecond), clock, cpu, 100*cpu/max(wall, 1e-3), runtime.NumCPU())
	most := uint64(0)
	for _, u := range s.Users {
		most = max(most, u.attempts())
	}
	st.logf("%s: password hashes %.0f, logins and resumes answered %.0f, login requests shed %.0f, supernode sheds %.0f; attach attempts per client %.2f, at most %d",
		st.name, now["hashes"]-st.base["hashes"], now["logins"]-st.base["logins"], now["login_shed"]-st.base["login_shed"],
		now["sn_shed"]-st.base["sn_shed"], attempts, most)
	st.logf("%s: supernode-to-supernode connections %.0f (ends pooled), %.0f dialled over the storm",
		st.name, now["peer_conns"], now["peer_dials"]-st.base["peer_dials"])
	if got := now["hashes"] - st.base["hashes"]; got != 0 {
		st.t.Errorf("%s: %.0f password hashes; users with saved credentials need none", st.name, got)
	}
	if attempts > 3 {
		st.t.Errorf("%s: %.2f attach attempts per client, want at most 3", st.name, attempts)
	}
}

// checkLoad fails if any live supernode held more clients than its admission limit at
// any sample.
func (st *storm) checkLoad() {
	// The samples so far, the wall clock's too, and the moment the storm was over: on
	// the virtual clock a storm may be over before the first tick of its watch.
	peak := st.sim.Figures()["sn_max"]
	samples := st.rec.Samples()
	if st.wall != nil {
		samples = append(samples, st.wall.Samples()...)
	}
	for _, smp := range samples {
		peak = math.Max(peak, smp.Values["sn_max"])
	}
	st.logf("%s: busiest supernode held %.0f clients at most (admission limit %d)", st.name, peak, st.limit)
	if int(peak) > st.limit {
		st.t.Errorf("%s: a supernode held %.0f clients, above its admission limit %d", st.name, peak, st.limit)
	}
}

// waitLayer waits until the layer is back at the login server's target by promotion,
// and reports the time from the storm's start and what the login server admitted.
func (st *storm) waitLayer(limit time.Duration) {
	s := st.sim
	var l proto.Layer
	if eventually.Await(limit, "the layer back at its target", func() bool {
		l = s.Login.Layer()
		return l.LayerWanted > 0 && l.LayerSize >= l.LayerWanted
	}) != nil {
		st.t.Errorf("%s: the layer is at %d of %d supernodes wanted after %v", st.name, l.LayerSize, l.LayerWanted, limit)
		return
	}
	took := time.Since(st.start)
	lm := s.Login.Metrics()
	got := func(k string) float64 { return float64(lm.Get(k)) - st.base[k] }
	promoted := 0
	for _, u := range s.Users {
		if u.Client().Status().Promotion.Admitted {
			promoted++
		}
	}
	l = s.Login.Layer()
	st.logf("%s: layer refilled to %d of %d wanted in %v; promotions admitted %.0f, paced %.0f, refused as unneeded %.0f; %d users serve as supernodes",
		st.name, l.LayerSize, l.LayerWanted, took.Round(time.Millisecond), got("sn_promotions"), got("sn_promotions_paced"),
		got("sn_promotions_unneeded"), promoted)
}

// found looks every user up and fails unless all are found online.
func (st *storm) found() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := st.sim.LookupAll(ctx, 32)
	st.logf("%s: users online %v", st.name, r)
	if !r.FoundAll() {
		describeMissing(st.t, st.sim, r)
		st.t.Errorf("%s: only %d of %d users found", st.name, r.Found+r.FoundOnRetry, r.Users)
	}
	if st.virtual {
		// The check's lookups went from random supernodes straight to holders: at
		// 100,000 users some 50,000 connections that close after two idle seconds
		// (supernode lookupIdle). On the real clock the next storm's own seconds do
		// that; on the virtual one it would begin in the same instant and carry them.
		// Virtual time: it passes as soon as the overlay has nothing else to do.
		time.Sleep(5 * time.Second)
	}
}

// buddiesAndMessages checks, for up to n users, that each sees every buddy online, and
// that a message to its first buddy arrives: the signalling path calls take (a call's
// media needs real sockets, which the simulation's clients do not have).
func (st *storm) buddiesAndMessages(n int) {
	s := st.sim
	n = min(n, len(s.Users))
	step := max(len(s.Users)/n, 1)
	var sample []*User
	for i := 0; i < len(s.Users) && len(sample) < n; i += step {
		sample = append(sample, s.Users[i])
	}
	byName := make(map[string]*User, len(s.Users))
	for _, u := range s.Users {
		byName[u.Name] = u
	}
	var offline [][2]string // the first few (watcher, buddy) pairs seen offline in the last pass
	seen := func() (all int, notOnline []string) {
		offline = offline[:0]
		for _, u := range sample {
			bs := u.Client().Status().Buddies
			if len(bs) == 0 {
				notOnline = append(notOnline, u.Name+" (no buddies known)")
				continue
			}
			ok := true
			for _, b := range bs {
				if !b.Online {
					ok = false
					notOnline = append(notOnline, u.Name+" sees "+b.Name+" offline")
					if len(notOnline) <= 3 {
						offline = append(offline, [2]string{u.Name, b.Name})
					}
				}
			}
			if ok {
				all++
			}
		}
		return all, notOnline
	}
	var all int
	var bad []string
	// A look asks up to 2,000 clients for their status, buddy list and all: looks every
	// 500 ms, not at the 10 ms pace of the shared wait, under which the looks would be
	// most of the work while presence spreads, and on the virtual clock would cost wall
	// time for every 10 ms of virtual time. Inside the bubble the sleep is virtual time.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if all, bad = seen(); all == len(sample) || time.Now().After(deadline) {
			break
		}
	}
	st.logf("%s: %d of %d users sampled see all their buddies online", st.name, all, len(sample))
	if all != len(sample) {
		for _, p := range offline {
			// The watcher too: a watch that no holder has is the watcher's supernode's doing.
			bad = append(bad, st.sim.Describe(p[0])+"; "+st.sim.ViewFrom(p[0], p[1])+"; "+st.sim.Describe(p[1])+"; "+st.sim.Holdings(p[1]))
		}
		st.t.Errorf("%s: buddies not seen online, e.g. %v", st.name, bad[:min(len(bad), 3)])
		st.t.Errorf("%s: of which %v", st.name, bad[len(bad)-len(offline):])
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := map[string]uint64{}
	for _, u := range sample {
		b := byName[u.Client().Status().Buddies[0].Name]
		before[b.Name] = b.Client().Metrics().Get("messages_received")
	}
	sent := 0
	var errs []string
	for _, u := range sample {
		to := u.Client().Status().Buddies[0].Name
		if err := u.Client().Message(ctx, to, "hello from "+u.Name); err != nil {
			errs = append(errs, err.Error()+" ("+st.sim.Describe(to)+"; "+st.sim.Holdings(to)+")")
			continue
		}
		sent++
	}
	// Message returns once the recipient's supernode has handed the message on, as a
	// notification that the recipient reads after: the last few may still be on their
	// way, so the count waits for them (a lost one is still missing at the deadline).
	arrived := func() (got int) {
		for _, u := range sample {
			b := byName[u.Client().Status().Buddies[0].Name]
			if b.Client().Metrics().Get("messages_received") > before[b.Name] {
				got++
			}
		}
		return got
	}
	got := arrived()
	for deadline := time.Now().Add(10 * time.Second); got < sent && time.Now().Before(deadline); got = arrived() {
		time.Sleep(50 * time.Millisecond)
	}
	st.logf("%s: %d messages sent to a buddy, %d recipients got theirs", st.name, sent, got)
	if sent != len(sample) || got != len(sample) {
		st.t.Errorf("%s: %d of %d messages sent, %d arrived; e.g. %v", st.name, sent, len(sample), got, errs[:min(len(errs), 3)])
	}
}

// finish stops the watch and writes the figures, the plot and the summary.
func (st *storm) finish() {
	st.stop()
	samples := st.rec.Samples()
	Derive(samples, st.limit)
	keys := []string{"ready", "attached", "attempts", "sn_live", "sn_max", "sn_mean", "logins/s", "hashes/s",
		"login_shed/s", "sn_shed/s", "cpu%", "wall", "heap_mib"}
	base := filepath.Join(st.out, st.name)
	if err := timeline.WriteTable(base+".tsv", samples, keys); err != nil {
		st.t.Error(err)
	}
	sns, users := len(st.sim.SNs), len(st.sim.Users)
	title := fmt.Sprintf("%s: %d users, %d supernodes", st.name, users, sns)
	if err := timeline.WritePNG(base+".png", title, samples, st.rec.Marks(), StormPanels); err != nil {
		st.t.Error(err)
	}
	if st.wall != nil {
		theWallWatch.follow(nil, nil, "")
		st.wall.Add(wallNow(), st.sim.Figures())
		ws := st.wall.Samples()
		Derive(ws, st.limit)
		if err := timeline.WriteTable(base+".wall.tsv", ws, keys); err != nil {
			st.t.Error(err)
		}
		if err := timeline.WritePNG(base+".wall.png", title+" (seconds of wall-clock time)", ws, st.wall.Marks(), StormPanels[:5]); err != nil {
			st.t.Error(err)
		}
	}
	heap := 0.0
	for _, smp := range samples {
		heap = math.Max(heap, smp.Values["heap_mib"])
	}
	// What the population holds once the storm is over: the peak above counts garbage
	// not yet collected, which GOGC and GOMEMLIMIT trade against CPU.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.logf("%s: peak heap in use %.0f MiB, %.0f MiB live after the storm (%d goroutines, %.0f MiB of stacks); figures and plot in %s.{tsv,png}",
		st.name, heap, float64(ms.HeapAlloc)/(1<<20), runtime.NumGoroutine(), float64(ms.StackInuse)/(1<<20), base)
	if dir := os.Getenv("PEERLINE_STORM_PROFILES"); dir != "" {
		// What holds that memory: the heap and the goroutines at the same moment.
		for _, name := range []string{"heap", "goroutine"} {
			file := filepath.Join(dir, st.name+"."+name+".pb")
			f, err := os.Create(file)
			if err == nil {
				err = pprof.Lookup(name).WriteTo(f, 0)
				f.Close()
			}
			if err != nil {
				st.t.Errorf("PEERLINE_STORM_PROFILES: %v", err)
			}
		}
	}
	os.WriteFile(base+".txt", []byte(strings.Join(st.lines, "\n")+"\n"), 0o644)
}

// TestStorms replays the storms one after another on one population, each a subtest
// with its own figures and plot:
//
//  1. cold-start: every user starts within 10 seconds (the supernodes up, the users'
//     credentials and host caches saved, as after a first login);
//  2. reboot: every running client restarts at once (August 2007);
//  3. collapse: every client restarts at once and 30% of the supernodes die at the same
//     moment (December 2010); no survivor may die, demote itself or exceed its limit;
//  4. login-down: the login server is down for a whole reboot storm; every user
//     attaches on its saved credential and sees its buddies online.
func TestStorms(t *testing.T) {
	storms(t, false, func(name string, f func(*testing.T)) { t.Run(name, f) })
}

// TestStormsVirtual is TestStorms on a virtual clock (testing/synctest): its times are
// what the protocols take (back-offs, retry-afters, timeouts), with the CPU's share in
// wall-clock time beside them. In a bubble a test has no subtests: each storm logs its
// name instead, and one that fails fatally ends the storms after it too.
func TestStormsVirtual(t *testing.T) {
	// Figures walks every user: at 100,000 users a sample costs some 0.15 s of CPU,
	// which a sample every second made 9% of a reboot storm's CPU. Every 5 s there.
	_, users := stormScale()
	stop := startWallWatch(max((&storm{}).interval(users), time.Duration(users/20000)*time.Second))
	defer stop()
	synctest.Test(t, func(t *testing.T) {
		storms(t, true, func(name string, f func(*testing.T)) {
			t.Logf("=== storm %s", name)
			f(t)
		})
	})
}

// storms runs the four storms, each through run (t.Run, or in turn in a bubble).
// PEERLINE_STORMS=reboot,collapse runs the cold start and those named only.
func storms(t *testing.T, virtual bool, run0 func(string, func(*testing.T))) {
	only := map[string]bool{}
	if v := os.Getenv("PEERLINE_STORMS"); v != "" {
		for _, n := range strings.Split(v, ",") {
			only[strings.TrimSpace(n)] = true
		}
	}
	run := func(name string, f func(*testing.T)) {
		if len(only) > 0 && name != "cold-start" && !only[name] {
			t.Logf("storm %s not run (PEERLINE_STORMS=%s)", name, os.Getenv("PEERLINE_STORMS"))
			return
		}
		run0(name, f)
	}
	var s *Sim
	closeAtEnd := func(sim *Sim) { t.Cleanup(func() { sim.Close() }) }
	run("cold-start", func(t *testing.T) {
		st := startStormSim(t, "cold-start", virtual, closeAtEnd, func(o *Options) {
			o.StartWithin, o.Buddies = 10*time.Second, 2
			if virtual {
				// Starts in groups every 10 ms: one instant at a time, 100,000 users
				// would start one after another on one core.
				o.StartTick = 10 * time.Millisecond
			}
		})
		s = st.sim
		st.waitReady(20 * time.Minute)
		st.checkLoad()
		st.finish()
		st.found()
	})
	if s == nil {
		t.Fatal("no population to storm")
	}
	reboot := func(t *testing.T, name, what string, during func(st *storm)) *storm {
		st := watchStorm(t, s, name, virtual)
		st.begin(what)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if during != nil {
			during(st)
		}
		if err := s.CrashUsers(ctx); err != nil {
			t.Fatal(err)
		}
		st.phase("restart")
		if err := s.RestartUsers(); err != nil {
			t.Fatal(err)
		}
		st.waitReady(20 * time.Minute)
		st.checkLoad()
		st.finish()
		return st
	}
	run("reboot", func(t *testing.T) {
		st := reboot(t, "reboot", "every client reboots", nil)
		st.found()
	})
	run("collapse", func(t *testing.T) {
		var killed []*SN
		st := reboot(t, "collapse", "every client reboots, 30% of supernodes killed", func(st *storm) {
			killed = s.KillSupernodes(len(s.SNs) * 3 / 10)
		})
		dead, demoted, live := 0, 0, 0
		for _, sn := range s.SNs {
			if sn.Killed() {
				continue
			}
			live++
			if !sn.Running() {
				dead++
			}
			if sn.Metrics().Get("demotions") > 0 {
				demoted++
			}
		}
		st.logf("collapse: %d supernodes killed; of the %d survivors %d stopped and %d demoted themselves",
			len(killed), live, dead, demoted)
		if dead+demoted > 0 {
			t.Errorf("cascade: %d survivors stopped, %d demoted", dead, demoted)
		}
		st.waitLayer(20 * time.Minute)
		st.found()
	})
	run("login-down", func(t *testing.T) {
		s.KillLogin()
		defer s.ReviveLogin()
		st := reboot(t, "login-down", "login server down, every client reboots", nil)
		st.found()
		st.buddiesAndMessages(2000)
	})
}
