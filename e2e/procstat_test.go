package e2e

// Helpers of the storm and idle-cost measurements: a process's CPU time and memory from
// /proc, a supernode's status through its control
// socket, and source addresses on loopback.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/eventually"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on Linux).
const clockTicks = 100

// procUsage is what /proc says of one process.
type procUsage struct {
	CPU      float64 // user + system CPU seconds since the process started
	RSS, HWM int64   // resident set now and its peak (since start or the last resetPeak), bytes
	PSS      int64   // proportional set: RSS with pages shared between processes divided among them
}

// readUsage reads /proc/PID/stat and /proc/PID/status.
func readUsage(pid int) (procUsage, error) {
	var u procUsage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces: the fields after it start past ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return u, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	u.CPU = float64(ut+st) / clockTicks
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(s), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			u.RSS = kb << 10
		case "VmHWM":
			u.HWM = kb << 10
		}
	}
	if r, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		for _, line := range strings.Split(string(r), "\n") {
			if v, ok := strings.CutPrefix(line, "Pss:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				u.PSS = kb << 10
			}
		}
	}
	return u, nil
}

// resetPeak resets the process's VmHWM to its current RSS (proc(5), clear_refs "5"), so a
// phase's peak is its own.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// snStatus is the part of a supernode's status the measurements read.
type snStatus struct {
	Registered bool              `json:"registered"`
	RingSize   int               `json:"ring_size"`
	Records    int               `json:"records"`
	Clients    []string          `json:"clients"`
	Counters   map[string]uint64 `json:"counters"`
	Load       struct {
		LayerSize int `json:"layer_size"`
	} `json:"load"`
}

// supernodeStatus asks the supernode whose data dir is dir for its status.
func supernodeStatus(dir string) (snStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st snStatus
	err := ctl.Do(ctx, filepath.Join(dir, client.SocketFile), ctl.Request{Cmd: client.CmdStatus}, &st)
	return st, err
}

// waitListed waits until the supernodes whose data dirs are dirs are all on the login
// server's list, the seed it hands a client at login, and know each other: each is
// admitted, holds all of them in its ring, and has heard from a heartbeat answer that the
// layer has that many. A client started then finds the whole layer.
func waitListed(t *testing.T, dirs ...string) {
	t.Helper()
	n := len(dirs)
	eventually.That(t, 30*time.Second, fmt.Sprintf("all %d supernodes admitted, in one ring and told of a layer of %d", n, n), func() bool {
		for _, dir := range dirs {
			st, err := supernodeStatus(dir)
			if err != nil || !st.Registered || st.RingSize != n || st.Load.LayerSize != n {
				return false
			}
		}
		return true
	})
}

// clientStatus asks a client process for its status.
func clientStatus(dir string) (client.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st client.Status
	err := ctl.Do(ctx, filepath.Join(dir, client.SocketFile), ctl.Request{Cmd: client.CmdStatus}, &st)
	return st, err
}

// sourceIP is the loopback address the i-th simulated host dials from: 100 hosts to a /24
// under 127.base.0.0/16, so that no server's per-address or per-/24 admission limit
// refuses hosts that are really distinct (127.0.0.0/8 is all loopback on Linux).
func sourceIP(base, i int) net.IP {
	return net.IPv4(127, byte(base), byte(i/100), byte(10+i%100))
}

// mib formats bytes as MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// timelineStep is the width of one cpuTimeline window.
const timelineStep = 10 * time.Second

// cpuTimeline records one process's CPU use and the whole machine's (/proc/stat) in
// windows of timelineStep: whether a storm is bound by the CPU or by waiting.
type cpuTimeline struct {
	pid          int
	next         time.Duration
	lastProc     float64
	lastBusy     float64
	procs, busys []float64 // per window, % of one core
}

func newCPUTimeline(pid int, start time.Time) *cpuTimeline {
	tl := &cpuTimeline{pid: pid, next: timelineStep}
	u, _ := readUsage(pid)
	tl.lastProc, tl.lastBusy = u.CPU, machineBusy()
	return tl
}

// sample closes the windows that ended by el (time since the start).
func (tl *cpuTimeline) sample(el time.Duration) {
	for el >= tl.next {
		u, _ := readUsage(tl.pid)
		busy := machineBusy()
		sec := timelineStep.Seconds()
		tl.procs = append(tl.procs, 100*(u.CPU-tl.lastProc)/sec)
		tl.busys = append(tl.busys, 100*(busy-tl.lastBusy)/sec)
		tl.lastProc, tl.lastBusy = u.CPU, busy
		tl.next += timelineStep
	}
}

func (tl *cpuTimeline) String() string {
	if len(tl.procs) == 0 {
		return "(shorter than one window)"
	}
	parts := make([]string, len(tl.procs))
	for i := range tl.procs {
		parts[i] = fmt.Sprintf("%.0f/%.0f", tl.procs[i], tl.busys[i])
	}
	return strings.Join(parts, " ")
}

// machineBusy is the CPU seconds all cores spent not idle since boot (/proc/stat).
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // not idle, not iowait; no guest (counted in user)
			busy += n
		}
	}
	return float64(busy) / clockTicks
}
