package e2e

// Overlay tests with the real binary on loopback: promotion and overlay search.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
)

// overlay runs a login server (with its metrics endpoint) and n supernodes as processes.
type overlay struct {
	root, lsAddr, metrics, key, secret string
	sns                                []string // supernode addresses
}

func startOverlay(t *testing.T, n int) *overlay {
	t.Helper()
	o := &overlay{root: t.TempDir()}
	lsDir := filepath.Join(o.root, "login")
	o.key, o.secret = loginsrvInit(t, lsDir)
	o.lsAddr, o.metrics = freeAddr(t), freeAddr(t)
	startProc(t, "loginsrv", nil, append([]string{"loginsrv", "--data", lsDir, "--listen", o.lsAddr,
		"--heartbeat", "500ms", "--metrics-listen", o.metrics}, fastArgon...)...)
	waitListening(t, o.lsAddr)
	for i := 1; i <= n; i++ {
		addr := freeAddr(t)
		startProc(t, fmt.Sprintf("sn%d", i), nil, "supernode", "--data", filepath.Join(o.root, fmt.Sprintf("sn%d", i)),
			"--listen", addr, "--login", o.lsAddr, "--login-key", o.key, "--admit-secret", o.secret,
			"--keepalive", "1s", "--name", fmt.Sprintf("sn%d", i), "--stun-alt-ip", "127.0.0.2", "--turn-allow-private-peers")
		waitListening(t, addr)
		o.sns = append(o.sns, addr)
	}
	return o
}

// waitListed is waitListed for the overlay's supernodes.
func (o *overlay) waitListed(t *testing.T) {
	t.Helper()
	var dirs []string
	for i := range o.sns {
		dirs = append(dirs, filepath.Join(o.root, fmt.Sprintf("sn%d", i+1)))
	}
	waitListed(t, dirs...)
}

func (o *overlay) register(t *testing.T, users ...string) {
	t.Helper()
	for _, u := range users {
		cmd := exec.Command(netlab.BuildPeerline(t), "register", "--login", o.lsAddr, "--login-key", o.key, u)
		cmd.Env = append(os.Environ(), "PEERLINE_PASSWORD=password-"+u)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("register %s: %v\n%s", u, err, out)
		}
	}
}

func (o *overlay) client(t *testing.T, user string, extra ...string) string {
	t.Helper()
	dir := filepath.Join(o.root, user)
	startProc(t, "client-"+user, []string{"PEERLINE_PASSWORD=password-" + user},
		append([]string{"client", "--data", dir, "--login", o.lsAddr, "--login-key", o.key, "--user", user}, extra...)...)
	return dir
}

// counter reads one of the login server's Prometheus counters.
func (o *overlay) counter(t *testing.T, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + o.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "peerline_loginsrv_"+name+"_total" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// waitNATKnown waits until the clients running in dirs have attached and detected their
// NAT.
func waitNATKnown(t *testing.T, dirs ...string) {
	t.Helper()
	known := map[string]bool{}
	eventually.That(t, 20*time.Second, fmt.Sprintf("%v attached and their NAT detected", dirs), func() bool {
		for _, dir := range dirs {
			if !known[dir] && field(statusMap(t, dir), "nat", "classic") == nil {
				return false
			}
			known[dir] = true
		}
		return true
	})
}

func statusMap(t *testing.T, dir string) map[string]any {
	out, err := exec.Command(netlab.BuildPeerline(t), "status", "--data", dir, "--json").Output()
	if err != nil {
		return nil
	}
	var m map[string]any
	json.Unmarshal(out, &m)
	return m
}

func field(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

var quickPromote = []string{"--promote-uptime", "1s", "--promote-min-upload", "1", "--promote-min-cpus", "1",
	"--promote-min-memory", "1", "--promote-check", "200ms", "--sn-listen", "127.0.0.1:0"}

// TestPromotionWithBinaries: loginsrv, three infrastructure supernodes, a client on a
// public (loopback) address that promotes itself, and one told --no-supernode.
func TestPromotionWithBinaries(t *testing.T) {
	o := startOverlay(t, 3)
	o.register(t, "alice", "bob")
	o.waitListed(t)
	alice := o.client(t, "alice", quickPromote...)
	bob := o.client(t, "bob", append([]string{"--no-supernode"}, quickPromote...)...)
	eventually.That(t, 30*time.Second, "alice promoted and admitted", func() bool {
		return field(statusMap(t, alice), "promotion", "admitted") == true
	})
	addr, _ := field(statusMap(t, alice), "promotion", "addr").(string)
	eventually.That(t, 10*time.Second, "the infrastructure supernodes count alice's supernode in their ring", func() bool {
		return field(statusMap(t, filepath.Join(o.root, "sn1")), "ring_size") == float64(4)
	})
	st := statusMap(t, bob)
	if field(st, "promotion", "supernode") != false || field(st, "supernode") == nil {
		t.Fatalf("bob (--no-supernode) status: %v", st)
	}
	if o.counter(t, "sn_promotions") != 1 {
		t.Fatalf("login server promotions = %d", o.counter(t, "sn_promotions"))
	}
	t.Logf("alice promoted to supernode at %s; bob stays a client: %v", addr, field(st, "promotion", "reason"))
}

// TestOverlaySearchWithBinaries: two clients attached to different supernodes find each
// other by exact name through the overlay (the login server's directory counter does not
// move), and by prefix through the directory.
func TestOverlaySearchWithBinaries(t *testing.T) {
	o := startOverlay(t, 3)
	o.register(t, "alice", "bob")
	o.waitListed(t)
	alice := o.client(t, "alice", "--no-supernode", "--prefer-supernode", o.sns[0])
	bob := o.client(t, "bob", "--no-supernode", "--prefer-supernode", o.sns[2])
	for _, d := range []string{alice, bob} {
		eventually.That(t, 20*time.Second, d+" attached", func() bool { return field(statusMap(t, d), "supernode", "addr") != nil })
	}
	if a, b := field(statusMap(t, alice), "supernode", "addr"), field(statusMap(t, bob), "supernode", "addr"); a == b {
		t.Fatalf("alice and bob share supernode %v", a)
	}
	search := func(dir, q string) map[string]any {
		out, err := exec.Command(netlab.BuildPeerline(t), "search", "--data", dir, "--json", q).Output()
		if err != nil {
			return nil
		}
		var m map[string]any
		json.Unmarshal(out, &m)
		return m
	}
	eventually.That(t, 10*time.Second, "alice finds bob online", func() bool {
		return field(search(alice, "bob"), "user", "online") == true
	})
	before := o.counter(t, "directory_queries")
	for _, pair := range [][2]string{{alice, "bob"}, {bob, "alice"}} {
		r := search(pair[0], pair[1])
		if r["source"] != "overlay" || field(r, "user", "online") != true {
			t.Fatalf("search for %s: %v", pair[1], r)
		}
		t.Logf("found %s through the overlay: %v hops, at %v", pair[1], r["hops"], field(r, "user", "supernode_addr"))
	}
	if after := o.counter(t, "directory_queries"); after != before {
		t.Fatalf("directory queries went %d -> %d: the login server answered, not the overlay", before, after)
	}
	r := search(alice, "b*")
	res, _ := r["results"].([]any)
	if r["source"] != "directory" || len(res) != 1 || field(res[0].(map[string]any), "name") != "bob" {
		t.Fatalf("prefix search: %v", r)
	}
	if after := o.counter(t, "directory_queries"); after != before+1 {
		t.Fatalf("prefix search did not reach the directory (%d -> %d)", before, after)
	}
}
