package overlaysim

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/timeline"
)

// The storm scenarios. Small by default, for a -race run; PEERLINE_SIM=SUPERNODES,USERS
// runs them at full scale, and PEERLINE_STORM_OUT=DIR keeps each one's figures
// (NAME.tsv), plot (NAME.png) and summary (NAME.txt) there:
//
//	PEERLINE_SIM=1000,100000 PEERLINE_STORM_OUT=storm go test ./internal/overlaysim \
//	    -run 'TestStorm' -v -timeout 60m
func stormScale() (sns, users int) {
	if v := getenvScale(); v != nil {
		return v[0], v[1]
	}
	return 20, 400
}

// stormLimit is the supernodes' admission limit in the storms: three times their
// share of the users, plus room for their connections to each other.
func stormLimit(sns, users int) int { return 3*users/sns + min(2*sns, 256) }

// storm is one scenario's run: the simulation, its timeline and the figures asked for.
type storm struct {
	t     *testing.T
	name  string
	sim   *Sim
	rec   *timeline.Recorder
	stop  func()
	limit int
	out   string // directory for figures and plot; "" = the test's temporary directory
	start time.Time
	base  map[string]float64 // Figures when the storm began
	lines []string           // the summary
}

func startStormSim(t *testing.T, name string, mod func(*Options)) *storm {
	sns, users := stormScale()
	keep, hb := pace(sns, users)
	opts := Options{Supernodes: sns, Users: users, KeepAlive: keep, Heartbeat: hb,
		MaxClients: stormLimit(sns, users), Progress: t.Logf}
	if mod != nil {
		mod(&opts)
	}
	st := &storm{t: t, name: name, limit: opts.MaxClients, out: os.Getenv("PEERLINE_STORM_OUT")}
	if st.out == "" {
		st.out = t.TempDir()
	} else if err := os.MkdirAll(st.out, 0o755); err != nil {
		t.Fatal(err)
	}
	st.rec = timeline.New(time.Now())
	interval := time.Second
	if users < 5000 {
		interval = 200 * time.Millisecond
	}
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
	t.Cleanup(func() { s.Close() })
	if st.stop == nil {
		watch(s)
	}
	t.Cleanup(st.stop)
	st.logf("%s: %d supernodes (admission limit %d connections each), %d users, keep-alive %v", name, sns, st.limit, users, keep)
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
	st.start = time.Now()
	st.rec.Mark(st.start, what)
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
		time.Sleep(100 * time.Millisecond)
	}
	t100 := time.Since(st.start)
	now := s.Figures()
	cpu := now["cpu_s"] - st.base["cpu_s"]
	attempts := (now["attempts"] - st.base["attempts"]) / float64(n)
	if st.base["attempts"] > 0 {
		// Reboot: the clients are new and count from zero.
		attempts = now["attempts"] / float64(n)
	}
	st.logf("%s: 99%% of users attached and published in %v, 100%% in %v; CPU %.0f s over the storm (%.0f%% of one core; the machine has %d)",
		st.name, t99.Round(time.Millisecond), t100.Round(time.Millisecond), cpu, 100*cpu/t100.Seconds(), runtime.NumCPU())
	st.logf("%s: password hashes %.0f, logins and resumes answered %.0f, login requests shed %.0f, supernode sheds %.0f; attach attempts per client %.2f",
		st.name, now["hashes"]-st.base["hashes"], now["logins"]-st.base["logins"], now["login_shed"]-st.base["login_shed"],
		now["sn_shed"]-st.base["sn_shed"], attempts)
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
	peak := 0.0
	for _, smp := range st.rec.Samples() {
		peak = math.Max(peak, smp.Values["sn_max"])
	}
	st.logf("%s: busiest supernode held %.0f clients at most (limit %d connections)", st.name, peak, st.limit)
	if int(peak) > st.limit {
		st.t.Errorf("%s: a supernode held %.0f clients, above its admission limit %d", st.name, peak, st.limit)
	}
}

// found looks every user up and fails unless all are found online.
func (st *storm) found() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := st.sim.LookupAll(ctx, 32)
	st.logf("%s: found %d/%d users online, hops mean %.2f p99 %d", st.name, r.Found, r.Users, r.MeanHops, r.P99Hops)
	if r.Found != r.Users {
		st.t.Errorf("%s: only %d of %d users found; e.g. %v", st.name, r.Found, r.Users, st.sim.Missing(ctx, 5))
	}
}

// finish stops the watch and writes the figures, the plot and the summary.
func (st *storm) finish() {
	st.stop()
	samples := st.rec.Samples()
	Derive(samples, st.limit)
	keys := []string{"ready", "attached", "attempts", "sn_live", "sn_max", "sn_mean", "logins/s", "hashes/s",
		"login_shed/s", "sn_shed/s", "cpu%", "heap_mib"}
	base := filepath.Join(st.out, st.name)
	if err := timeline.WriteTable(base+".tsv", samples, keys); err != nil {
		st.t.Error(err)
	}
	sns, users := len(st.sim.SNs), len(st.sim.Users)
	title := fmt.Sprintf("%s: %d users, %d supernodes", st.name, users, sns)
	if err := timeline.WritePNG(base+".png", title, samples, st.rec.Marks(), StormPanels); err != nil {
		st.t.Error(err)
	}
	heap := 0.0
	for _, smp := range samples {
		heap = math.Max(heap, smp.Values["heap_mib"])
	}
	st.logf("%s: peak heap in use %.0f MiB; figures and plot in %s.{tsv,png}", st.name, heap, base)
	os.WriteFile(base+".txt", []byte(strings.Join(st.lines, "\n")+"\n"), 0o644)
}

// TestStormColdStart: every user starts within 10 seconds (the overlay is up, their
// credentials saved).
func TestStormColdStart(t *testing.T) {
	st := startStormSim(t, "cold-start", func(o *Options) { o.StartWithin = 10 * time.Second })
	st.waitReady(20 * time.Minute)
	st.checkLoad()
	st.finish()
	st.found()
}

// TestStormReboot: every running client restarts at once (August 2007).
func TestStormReboot(t *testing.T) {
	st := startStormSim(t, "reboot", nil)
	st.begin("every client reboots")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := st.sim.RebootUsers(ctx); err != nil {
		t.Fatal(err)
	}
	st.waitReady(20 * time.Minute)
	st.checkLoad()
	st.finish()
	st.found()
}

// TestStormCollapse: 30% of the supernodes die at once during the reboot storm
// (December 2010); no survivor may die, demote itself or exceed its limit.
func TestStormCollapse(t *testing.T) {
	st := startStormSim(t, "collapse", nil)
	st.begin("every client reboots, 30% of supernodes killed")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	killed := st.sim.KillSupernodes(len(st.sim.SNs) * 3 / 10)
	if err := st.sim.RebootUsers(ctx); err != nil {
		t.Fatal(err)
	}
	st.waitReady(20 * time.Minute)
	st.checkLoad()
	st.finish()
	dead, demoted := 0, 0
	for _, sn := range st.sim.SNs {
		if sn.Killed {
			continue
		}
		if !sn.Running() {
			dead++
		}
		if sn.Metrics().Get("demotions") > 0 {
			demoted++
		}
	}
	st.logf("collapse: %d supernodes killed; of the %d survivors %d stopped and %d demoted themselves",
		len(killed), len(st.sim.SNs)-len(killed), dead, demoted)
	if dead+demoted > 0 {
		t.Errorf("cascade: %d survivors stopped, %d demoted", dead, demoted)
	}
	st.found()
}

// TestStormLoginDown: the login server is down for the whole reboot storm; every user
// with a valid credential attaches and sees its buddies online.
func TestStormLoginDown(t *testing.T) {
	st := startStormSim(t, "login-down", func(o *Options) { o.Buddies = 2 })
	st.begin("login server down, every client reboots")
	st.sim.KillLogin()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := st.sim.RebootUsers(ctx); err != nil {
		t.Fatal(err)
	}
	st.waitReady(20 * time.Minute)
	st.checkLoad()
	st.finish()
	st.found()
}
