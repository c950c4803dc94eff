package overlaysim

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/timeline"
	"github.com/peerline/peerline/supernode"
)

// The storms of Skype's outages, replayed on a running simulation (see DESIGN.md,
// "Lessons from Skype's outages"):
//
//   - RebootUsers: every client process restarts at once (August 2007);
//   - KillSupernodes during it: 30% of the supernodes gone at once (December 2010);
//   - KillLogin: the login server down for the whole storm.
//
// Figures samples what a storm's plot shows, once a second, into a timeline.

// RebootUsers crashes every user's client at once, as a mass reboot does (no log-off),
// waits until all have stopped, and starts them all again at once from their data
// directories. It returns when every client is running again, not attached.
func (s *Sim) RebootUsers(ctx context.Context) error {
	if err := s.CrashUsers(ctx); err != nil {
		return err
	}
	return s.RestartUsers()
}

// CrashUsers is the first half of RebootUsers: every user's client crashes at once and
// CrashUsers waits until all have stopped. Their supernodes see the connections end
// and tell the users' holders (the departures may still be under way when it returns).
func (s *Sim) CrashUsers(ctx context.Context) error {
	dones := make([]<-chan struct{}, len(s.Users))
	for i, u := range s.Users {
		// A promoted user's supernode ends with its client: keep its counts.
		if cl := u.Client(); cl != nil {
			if sn, _ := cl.SupernodeRole().(*supernode.Supernode); sn != nil {
				s.retired.mu.Lock()
				if sn.Registered() {
					s.retired.shed += sumCounters(sn.Metrics(), "shed", "busy", "not_ready")
				}
				s.retired.dials += float64(sn.Metrics().Get("peer_dials"))
				s.retired.mu.Unlock()
			}
		}
		dones[i] = u.crash()
	}
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return fmt.Errorf("overlaysim: waiting for clients to stop: %w", ctx.Err())
		}
	}
	return nil
}

// RestartUsers is the second half of RebootUsers: every user's client starts again at
// once from its data directory.
func (s *Sim) RestartUsers() error {
	for _, u := range s.Users {
		if err := s.runUser(u); err != nil {
			return err
		}
	}
	return nil
}

// KillLogin takes the login server's host off the network: every connection to it
// fails until ReviveLogin.
func (s *Sim) KillLogin() { s.Net.Host(loginIP).Kill() }

// ReviveLogin puts the login server's host back.
func (s *Sim) ReviveLogin() { s.Net.Host(loginIP).Revive() }

// Ready reports whether user u's current client is attached and has published its
// record since it started.
func (u *User) Ready() bool {
	cl := u.Client()
	return cl != nil && cl.Attached() && cl.Metrics().Get("publishes") > 0
}

// attempts is how many times u's current client tried to attach: each round of
// supernodes tried (the preferred one, then the host cache's best, with the
// alternatives a busy supernode named) counts once.
func (u *User) attempts() uint64 {
	cl := u.Client()
	if cl == nil {
		return 0
	}
	return cl.Metrics().Get("attach_rounds")
}

// sumCounters adds up the counters of m whose names contain any of parts.
func sumCounters(m *metrics.Set, parts ...string) float64 {
	var n uint64
	for name, v := range m.Snapshot() {
		for _, p := range parts {
			if strings.Contains(name, p) {
				n += v
				break
			}
		}
	}
	return float64(n)
}

// Figures returns what the storms' timelines plot, at this moment:
//
//	ready            users attached and published since their client started
//	attached         users attached
//	attempts         attach attempts of the current clients, summed
//	sn_live          supernodes alive and running, promoted users' included
//	sn_max, sn_mean  clients attached per live supernode
//	logins           password logins and resumes answered by the login server, summed
//	hashes           password hashes the login server computed
//	sn_shed          connections and attachments the supernodes shed or refused busy
//	login_shed       requests the login server shed or refused busy
//	cpu_s            CPU seconds this process used
//	wall_s           the wall clock's seconds (the kernel's, which a virtual clock
//	                 does not fake), so that CPU use is a share of real time
//	heap_mib         heap in use
//	peer_conns       connections between supernodes, counted at each end that pools one
//	peer_dials       connections supernodes dialled to each other, in all
//
// It takes locks and reads atomics only, no channel, timer or ticker: a goroutine
// outside a synctest bubble may call it while the simulation runs inside.
func (s *Sim) Figures() map[string]float64 {
	f := map[string]float64{}
	for _, u := range s.Users {
		if cl := u.Client(); cl != nil && cl.Attached() {
			f["attached"]++
		}
		if u.Ready() {
			f["ready"]++
		}
		f["attempts"] += float64(u.attempts())
	}
	total, most := 0, 0
	count := func(sn *supernode.Supernode) {
		f["sn_live"]++
		n := sn.ClientCount()
		total += n
		most = max(most, n)
		f["sn_shed"] += sumCounters(sn.Metrics(), "shed", "busy", "not_ready")
		f["peer_conns"] += float64(sn.PeerConns())
	}
	for _, sn := range s.SNs {
		if !sn.Killed() && sn.Running() {
			count(sn.Supernode)
		}
		f["peer_dials"] += float64(sn.Metrics().Get("peer_dials")) // the dead's too: a count of all time
	}
	for _, u := range s.Users {
		// Users promoted to supernode serve under the same limits.
		if cl := u.Client(); cl != nil {
			if sn, _ := cl.SupernodeRole().(*supernode.Supernode); sn != nil {
				if sn.Registered() {
					count(sn)
				}
				f["peer_dials"] += float64(sn.Metrics().Get("peer_dials"))
			}
		}
	}
	s.retired.mu.Lock()
	f["sn_shed"] += s.retired.shed
	f["peer_dials"] += s.retired.dials
	s.retired.mu.Unlock()
	f["sn_max"] = float64(most)
	if f["sn_live"] > 0 {
		f["sn_mean"] = float64(total) / f["sn_live"]
	}
	lm := s.Login.Metrics()
	f["logins"] = float64(lm.Get("logins") + lm.Get("resumes"))
	f["hashes"] = float64(s.Login.Hasher().Count())
	f["login_shed"] = sumCounters(lm, "shed", "busy", "rate_limited")
	f["cpu_s"] = cpuSeconds()
	f["wall_s"] = wallSeconds()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f["heap_mib"] = float64(ms.HeapInuse) / (1 << 20)
	return f
}

// cpuSeconds is the CPU time (user and system) this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// wallSeconds is the wall clock from the kernel, in seconds since 1970. Inside a
// synctest bubble time.Now is virtual; this is not.
func wallSeconds() float64 {
	var tv syscall.Timeval
	if err := syscall.Gettimeofday(&tv); err != nil {
		return 0
	}
	return time.Duration(tv.Nano()).Seconds()
}

// Watch samples Figures every interval into rec until the returned stop is called.
func (s *Sim) Watch(rec *timeline.Recorder, interval time.Duration) (stop func()) {
	sample := func() { rec.Add(time.Now(), s.Figures()) }
	sample()
	stopTicks := Every(interval, sample)
	var once sync.Once
	return func() { once.Do(func() { stopTicks(); sample() }) }
}

// Every calls f every interval on a goroutine of its own until the returned stop is
// called; stop returns once f has returned for the last time.
func Every(interval time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// StormPanels are the plots of a storm: users, logins, sheds, supernode load, CPU and
// the wall clock.
var StormPanels = []timeline.Panel{
	{Title: "users attached and published", Y: "users", Series: []string{"ready", "attached"}},
	{Title: "login server", Y: "per second", Series: []string{"logins/s", "login_shed/s", "hashes/s"}},
	{Title: "supernodes shedding", Y: "per second", Series: []string{"sn_shed/s"}},
	{Title: "supernode load", Y: "clients", Series: []string{"sn_max", "sn_mean", "sn_limit"}},
	{Title: "machine (CPU over wall-clock time)", Y: "% of one core / supernodes", Series: []string{"cpu%", "sn_live"}},
	{Title: "wall-clock time since the start (on a virtual clock: what the CPU took)", Y: "seconds", Series: []string{"wall"}},
}

// Derive adds the rates the panels plot to samples taken by Watch.
func Derive(samples []timeline.Sample, snLimit int) {
	for _, k := range []string{"logins", "login_shed", "hashes", "sn_shed"} {
		timeline.Rate(samples, k, k+"/s")
	}
	for i := range samples {
		v := samples[i].Values
		v["sn_limit"] = float64(snLimit)
		v["cpu%"], v["wall"] = 0, 0
		if i == 0 {
			continue
		}
		prev := samples[i-1].Values
		if dw := v["wall_s"] - prev["wall_s"]; dw > 0 {
			v["cpu%"] = 100 * (v["cpu_s"] - prev["cpu_s"]) / dw
		}
		v["wall"] = v["wall_s"] - samples[0].Values["wall_s"]
	}
}

// healthCounters are the supernodes' counters that say whether the layer is calm: a
// layer in a repair or dial storm shows it here before it shows it in lookups.
var healthCounters = []string{"peer_dials", "peer_idle_closes", "via_sent", "via_unreachable", "holders_busy", "peers_suspected", "repairs", "records_handed",
	"heartbeats_late", "login_failures", "member_resyncs"}

// Health sums the login server's supernode counters and the supernodes' health
// counters, for progress reports of long runs.
func (s *Sim) Health() string {
	lm := s.Login.Metrics()
	var b strings.Builder
	fmt.Fprintf(&b, "login: sn_registrations %d sn_timeouts %d sn_disconnects %d;", lm.Get("sn_registrations"),
		lm.Get("sn_timeouts"), lm.Get("sn_disconnects"))
	sum := make(map[string]uint64, len(healthCounters))
	conns := 0
	for _, sn := range s.SNs {
		if !sn.Killed() {
			conns += sn.PeerConns()
		}
		m := sn.Metrics()
		for _, k := range healthCounters {
			sum[k] += m.Get(k)
		}
	}
	fmt.Fprintf(&b, " supernodes: peer_conns %d", conns)
	for _, k := range healthCounters {
		fmt.Fprintf(&b, " %s %d", k, sum[k])
	}
	return b.String()
}
