package netlab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peerline/peerline/internal/eventually"
)

// A lab records itself in a state file before it creates anything, so that the next lab
// to start can reap what a killed test process left behind:
//
//	<state dir>/<id>.lab:
//	  peerline-lab 1
//	  pid 12345            the creating (test) process
//	  start 987654         its start time, /proc/PID/stat field 22, against PID reuse
//	  ns pl-<id>-inet      one line per namespace, written before "ip netns add"
//	  ...
//
// The state dir is /run/peerline-lab (tmpfs: it goes with a reboot, as namespaces do), or
// peerline-lab-state in the system temp dir where /run cannot be written. Close removes
// the file once the lab's namespaces are gone. Reap acts only on files whose creator is
// dead (no such PID, a zombie, or a PID now held by a process with another start time),
// kills only processes whose network namespace is one the file names (found by the
// namespace's inode, signalled through a pidfd so a reused PID is never hit), and deletes
// only the namespaces the file names. Namespaces no state file names are never touched.

const (
	stateMagic  = "peerline-lab 1"
	stateSuffix = ".lab"
	netnsDir    = "/run/netns"
)

// stateDir returns the directory of lab state files, creating it.
func stateDir() (string, error) {
	for _, d := range []string{"/run/peerline-lab", filepath.Join(os.TempDir(), "peerline-lab-state")} {
		if err := os.MkdirAll(d, 0o700); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("netlab: no writable state dir (/run/peerline-lab or %s)", filepath.Join(os.TempDir(), "peerline-lab-state"))
}

// labState is one lab's state file.
type labState struct {
	path  string
	id    string
	pid   int
	start uint64 // creator's start time in clock ticks since boot
	ns    []string
}

// procStart returns pid's start time (clock ticks since boot, /proc/PID/stat field 22) and
// whether it is a zombie. The command name (field 2) is in parentheses and may hold
// spaces and parentheses, so fields are counted after the last ')'.
func procStart(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (start uint64, zombie bool, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("netlab: malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, false, fmt.Errorf("netlab: short /proc/PID/stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("netlab: /proc/PID/stat start time: %w", err)
	}
	return start, f[0] == "Z" || f[0] == "X", nil
}

// creatorAlive reports whether the process that wrote st still runs.
func (st *labState) creatorAlive() bool {
	start, zombie, err := procStart(st.pid)
	if err != nil {
		// ENOENT: gone. Anything else (cannot read /proc): assume alive, touch nothing.
		return !errors.Is(err, os.ErrNotExist)
	}
	return start == st.start && !zombie
}

// createState writes the state file of a new lab with id, atomically (a reaper never
// sees a file without its creator's PID). It fails if the id is taken.
func createState(id string) (*labState, error) {
	dir, err := stateDir()
	if err != nil {
		return nil, err
	}
	start, _, err := procStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	st := &labState{path: filepath.Join(dir, id+stateSuffix), id: id, pid: os.Getpid(), start: start}
	tmp := filepath.Join(dir, "."+id+".tmp")
	body := fmt.Sprintf("%s\npid %d\nstart %d\n", stateMagic, st.pid, st.start)
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("netlab: write state: %w", err)
	}
	// link fails if the name exists, where rename would replace it.
	err = os.Link(tmp, st.path)
	os.Remove(tmp)
	if err != nil {
		return nil, fmt.Errorf("netlab: state file %s: %w", st.path, err)
	}
	return st, nil
}

// addNS records namespace name in the state file; called before the namespace exists.
func (st *labState) addNS(name string) error {
	f, err := os.OpenFile(st.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("netlab: state file: %w", err)
	}
	_, err = f.WriteString("ns " + name + "\n") // one write: a kill cannot tear the line
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("netlab: state file: %w", err)
	}
	st.ns = append(st.ns, name)
	return nil
}

func (st *labState) remove() { os.Remove(st.path) }

// readState parses a state file. Namespace lines that do not carry the lab's own prefix
// are ignored: a reaper deletes nothing but "pl-<id>-..." of the file's own id.
func readState(path string) (*labState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := &labState{path: path, id: strings.TrimSuffix(filepath.Base(path), stateSuffix)}
	sc := bufio.NewScanner(bytes.NewReader(b))
	if !sc.Scan() || sc.Text() != stateMagic {
		return nil, fmt.Errorf("netlab: %s is not a lab state file", path)
	}
	prefix := NSPrefix + st.id + "-"
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "pid":
			st.pid, _ = strconv.Atoi(v)
		case "start":
			st.start, _ = strconv.ParseUint(v, 10, 64)
		case "ns":
			if strings.HasPrefix(v, prefix) && !strings.ContainsAny(v, "/ \t") {
				st.ns = append(st.ns, v)
			}
		}
	}
	if st.pid <= 0 || st.start == 0 {
		return nil, fmt.Errorf("netlab: %s has no creator", path)
	}
	return st, nil
}

// Reaped is what Reap removed of one lab whose creating process had died.
type Reaped struct {
	ID         string   // the lab's id
	CreatorPID int      // the dead test process
	Killed     []int    // processes killed inside its namespaces
	Namespaces []string // namespaces deleted
}

// String says in one line what was reaped, for the test log.
func (r Reaped) String() string {
	return fmt.Sprintf("lab %s (creator pid %d gone): killed %d processes %v, deleted %d namespaces",
		r.ID, r.CreatorPID, len(r.Killed), r.Killed, len(r.Namespaces))
}

// Reap removes what labs of dead test processes left: it kills the processes inside
// their namespaces and deletes the namespaces. New calls it before building a lab; it is
// safe to run while other test processes run labs (their creators are alive, so their
// labs are left alone, and reapers serialize on a lock file).
func Reap() ([]Reaped, error) {
	if err := Requirements(); err != nil {
		return nil, err
	}
	dir, err := stateDir()
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netlab: reap lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("netlab: reap lock: %w", err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)

	files, _ := filepath.Glob(filepath.Join(dir, "*"+stateSuffix))
	var out []Reaped
	var errs []error
	for _, f := range files {
		st, err := readState(f)
		if err != nil || st.creatorAlive() {
			continue
		}
		r, err := st.reap()
		if len(r.Killed) > 0 || len(r.Namespaces) > 0 {
			out = append(out, r)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// reap kills everything in st's namespaces, deletes them, and removes the file when none
// is left.
func (st *labState) reap() (Reaped, error) {
	r := Reaped{ID: st.id, CreatorPID: st.pid}
	existing := existingNS(st.ns)
	var errs []error
	var err error
	if r.Killed, err = killInNamespaces(existing, 5*time.Second); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range existing {
		if err := deleteNS(ns); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Namespaces = append(r.Namespaces, ns)
	}
	if left := existingNS(st.ns); len(left) > 0 {
		errs = append(errs, fmt.Errorf("netlab: reaping lab %s: namespaces left: %v", st.id, left))
	} else {
		st.remove()
	}
	return r, errors.Join(errs...)
}

// existingNS returns those of names that exist as named namespaces.
func existingNS(names []string) []string {
	var out []string
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(netnsDir, n)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// deleteNS deletes one named namespace (its bind mount in /run/netns). The namespace
// itself goes when no process is left in it.
func deleteNS(name string) error {
	out, err := execOutput("ip", "netns", "del", name)
	if err != nil && len(existingNS([]string{name})) > 0 {
		return fmt.Errorf("netlab: ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

type nsID struct{ dev, ino uint64 }

// nsIdentity returns the device and inode of a network namespace file (a /run/netns bind
// mount or a /proc/PID/ns/net link, which stat follows).
func nsIdentity(path string) (nsID, bool) {
	var s unix.Stat_t
	if err := unix.Stat(path, &s); err != nil {
		return nsID{}, false
	}
	return nsID{uint64(s.Dev), s.Ino}, true
}

// killInNamespaces SIGKILLs every process whose network namespace is one of names (the
// calling process excepted), and waits up to limit until none is left in them. It
// returns the PIDs it killed, and an error if some were still there at the limit.
func killInNamespaces(names []string, limit time.Duration) ([]int, error) {
	want := map[nsID]bool{}
	for _, n := range names {
		if id, ok := nsIdentity(filepath.Join(netnsDir, n)); ok {
			want[id] = true
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	killed := map[int]bool{}
	// Each try kills what is there now: a process may fork while its parent dies.
	err := eventually.Await(limit, fmt.Sprintf("no process left in namespaces %v", names), func() bool {
		pids := pidsIn(want)
		for _, pid := range pids {
			if killVerified(pid, want) {
				killed[pid] = true
			}
		}
		return len(pids) == 0
	})
	out := make([]int, 0, len(killed))
	for pid := range killed {
		out = append(out, pid)
	}
	sort.Ints(out)
	if err != nil {
		return out, fmt.Errorf("netlab: %w", err)
	}
	return out, nil
}

// pidsIn lists the processes (thread group leaders) whose network namespace is in want.
// Zombies have left their namespaces and are not listed.
func pidsIn(want map[nsID]bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || pid == self {
			continue
		}
		if id, ok := nsIdentity(fmt.Sprintf("/proc/%d/ns/net", pid)); ok && want[id] {
			out = append(out, pid)
		}
	}
	return out
}

// killVerified SIGKILLs pid if it is in one of the namespaces in want. It opens a pidfd
// first and checks the namespace after: the signal goes through the pidfd, so it reaches
// the process that was checked or, if that one has exited meanwhile, nobody.
func killVerified(pid int, want map[nsID]bool) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) { // kernel before 5.3: plain kill after the check
			if id, ok := nsIdentity(fmt.Sprintf("/proc/%d/ns/net", pid)); ok && want[id] {
				return syscall.Kill(pid, syscall.SIGKILL) == nil
			}
		}
		return false
	}
	defer unix.Close(fd)
	if id, ok := nsIdentity(fmt.Sprintf("/proc/%d/ns/net", pid)); !ok || !want[id] {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}
