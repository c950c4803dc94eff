package e2e

// Calls in the NAT lab (issue 5): every pair of NAT kinds calls, behind real kernel NATs,
// with 50 ms added each way on every client's link. The test states the path it expects
// for each pair (the table of DESIGN.md), plays a 10 s WAV of noise into each call and
// checks that at least 99% of its frames arrive, each bit-identical to the µ-law frame
// sent; then three short calls per pair give the median setup time to the first audio
// frame, printed as a table.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/media"
)

// callKinds are the NAT kinds of the matrix, with the classic name each client must
// detect.
var callKinds = []struct{ kind, classic string }{
	{"public", "open"},
	{"full-cone", "full cone"},
	{"restricted-cone", "restricted cone"},
	{"port-restricted-cone", "port-restricted cone"},
	{"symmetric", "symmetric"},
	{"udp-blocked", "udp-blocked"},
	{"double-nat", "port-restricted cone"},
}

// expectedPath is the path a call between kinds a and b must take: client.PredictPath
// for the classic names the two clients detect.
func expectedPath(a, b string) string {
	classic := func(kind string) string {
		for _, k := range callKinds {
			if k.kind == kind {
				return k.classic
			}
		}
		panic("no call kind " + kind)
	}
	return client.PredictPath(callsig.NAT{Classic: classic(a)}, callsig.NAT{Classic: classic(b)})
}

// callLab is a lab with a login server, two supernodes (STUN with two addresses, TURN)
// and clients on hosts of every kind.
type callLab struct {
	lab     *netlab.Lab
	bin     string
	root    string
	lsAddr  string
	key     string
	sns     map[string]*netlab.Proc // by host name
	snAddrs map[string]string
	clients map[string]*labClient // by user (= host) name
}

type labClient struct {
	name, kind string
	host       *netlab.Host
	dir        string
	proc       *netlab.Proc
}

func newCallLab(t *testing.T, supernodes int) *callLab {
	t.Helper()
	natNeeds(t)
	cl := &callLab{lab: netlab.New(t), bin: netlab.BuildPeerline(t), root: t.TempDir(),
		sns: map[string]*netlab.Proc{}, snAddrs: map[string]string{}, clients: map[string]*labClient{}}
	login := cl.lab.AddPublicHost("login", 1)
	lsDir := filepath.Join(cl.root, "login")
	cl.key, _ = loginsrvInit(t, lsDir)
	secret, err := os.ReadFile(filepath.Join(lsDir, "admit.secret"))
	if err != nil {
		t.Fatal(err)
	}
	cl.lsAddr = login.IP().String() + ":7000"
	ls, err := login.Start("loginsrv", append([]string{cl.bin, "loginsrv", "--data", lsDir, "--listen", cl.lsAddr, "--heartbeat", "1s"}, fastArgon...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.WaitLog("login server listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= supernodes; i++ {
		name := fmt.Sprintf("sn%d", i)
		h := cl.lab.AddPublicHost(name, 2)
		addr := h.Addrs()[0].String() + ":7100"
		p, err := h.Start(name, cl.bin, "supernode", "--data", filepath.Join(cl.root, name), "--listen", addr,
			"--login", cl.lsAddr, "--login-key", cl.key, "--admit-secret", strings.TrimSpace(string(secret)),
			"--keepalive", "2s", "--name", name, "--stun-alt-ip", h.Addrs()[1].String(), "--log-level", "info")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitLog("TURN relay up", 15*time.Second); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cl.sns[name], cl.snAddrs[name] = p, addr
	}
	return cl
}

// addClientHost puts a host of the given kind in the lab, on a site of its own, and
// returns it and the host whose link to the internet is the site's access link (the
// outermost router, or the host itself when it is public).
func (cl *callLab) addClientHost(name, kind string) (h, access *netlab.Host) {
	l := cl.lab
	switch kind {
	case "public":
		h = l.AddPublicHost(name, 1)
		return h, h
	case "double-nat":
		carrier := l.AddSite(name+"-cgn", netlab.SiteConfig{Kind: netlab.PortRestrictedCone})
		return l.AddSite(name+"-home", netlab.SiteConfig{Kind: netlab.FullCone, Behind: carrier}).AddHost(name), carrier.Router
	}
	kinds := map[string]netlab.Kind{"full-cone": netlab.FullCone, "restricted-cone": netlab.RestrictedCone,
		"port-restricted-cone": netlab.PortRestrictedCone, "symmetric": netlab.Symmetric, "udp-blocked": netlab.UDPBlocked}
	site := l.AddSite(name+"-nat", netlab.SiteConfig{Kind: kinds[kind]})
	return site.AddHost(name), site.Router
}

// siteDelay is the one-way delay of every path into a client site: each site's access
// link delays what arrives by it (netlab.Impairment.Inbound).
const siteDelay = 50 * time.Millisecond

// startClient registers user name and runs their client on h; it answers calls on its own
// and records them.
func (cl *callLab) startClient(t *testing.T, h *netlab.Host, name, kind string, extra ...string) *labClient {
	t.Helper()
	dir := filepath.Join(cl.root, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := h.Run(ctx, "env", "PEERLINE_PASSWORD=password-"+name, cl.bin, "register", "--login", cl.lsAddr, "--login-key", cl.key, name); err != nil {
		t.Fatalf("register %s: %v\n%s", name, err, out)
	}
	args := append([]string{"env", "PEERLINE_PASSWORD=password-" + name, cl.bin, "client", "--data", dir, "--login", cl.lsAddr,
		"--login-key", cl.key, "--user", name, "--no-supernode", "--auto-answer", "--record-dir", filepath.Join(dir, "rec"),
		"--log-level", "info"}, extra...)
	p, err := h.Start(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	c := &labClient{name: name, kind: kind, host: h, dir: dir, proc: p}
	cl.clients[name] = c
	return c
}

func (c *labClient) status(t *testing.T) client.Status {
	var st client.Status
	out, err := exec.Command(netlabBin(t), "status", "--data", c.dir, "--json").Output()
	if err == nil {
		json.Unmarshal(out, &st)
	}
	return st
}

func netlabBin(t *testing.T) string { return netlab.BuildPeerline(t) }

// waitReady waits until every client is attached and has detected its NAT.
func (cl *callLab) waitReady(t *testing.T, want map[string]string) {
	t.Helper()
	ready := map[string]bool{}
	var wrong, notReady string
	if eventually.Await(60*time.Second, "every client attached and its NAT detected", func() bool {
		for name, c := range cl.clients {
			if ready[name] {
				continue
			}
			st := c.status(t)
			if st.Supernode == nil || st.NAT == nil || st.NAT.Classic == "" {
				notReady = fmt.Sprintf("%s not ready: %+v", name, st)
				return false
			}
			if w, ok := want[name]; ok && st.NAT.Classic != w {
				wrong = fmt.Sprintf("%s detects %q, want %q", name, st.NAT.Classic, w)
				return true
			}
			ready[name] = true
		}
		return true
	}) != nil {
		t.Fatal(notReady)
	}
	if wrong != "" {
		t.Fatal(wrong)
	}
}

// call runs `peerline call` from caller to callee and returns the report. It does not
// touch the test, so any goroutine may call it.
func (cl *callLab) call(caller, callee string, args ...string) (client.CallReport, error) {
	c := cl.clients[caller]
	argv := append(append([]string{"call", "--data", c.dir, "--json"}, args...), callee)
	cmd := exec.Command(cl.bin, argv...)
	out, err := cmd.Output()
	var rep client.CallReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		if err == nil {
			err = jerr
		}
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return rep, err
	}
	return rep, err
}

// calleeReport waits for the callee's report of call id. It does not touch the test,
// so the goroutines that run pairs call it too.
func (cl *callLab) calleeReport(callee, id string) (client.CallReport, error) {
	c := cl.clients[callee]
	var rep client.CallReport
	err := eventually.Await(10*time.Second, fmt.Sprintf("%s's report of call %s", callee, id), func() bool {
		out, err := exec.Command(cl.bin, "calls", "--data", c.dir, "--json").Output()
		if err != nil {
			return false
		}
		var st client.CallsStatus
		json.Unmarshal(out, &st)
		for _, r := range st.Reports {
			if r.Call == id {
				rep = r
				return true
			}
		}
		return false
	})
	return rep, err
}

// noiseWAV writes n frames of seeded noise as an 8 kHz WAV and returns the µ-law frames
// the receiver must play out.
func noiseWAV(t *testing.T, path string, n int) [][]int16 {
	w, err := media.CreateWAV(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var want [][]int16
	for i := 0; i < n; i++ {
		pcm := make([]int16, media.FrameSamples)
		for j := range pcm {
			pcm[j] = int16(r.IntN(16000) - 8000)
		}
		if err := w.WriteFrame(pcm, false); err != nil {
			t.Fatal(err)
		}
		u := media.EncodeUlaw(make([]byte, len(pcm)), pcm)
		want = append(want, media.DecodeUlaw(make([]int16, len(u)), u))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

// matchRecording compares a recorded WAV with the frames sent: how many arrived
// bit-identical, and how many arrived different.
func matchRecording(path string, want [][]int16) (same, different int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	if len(b) < 44 {
		return 0, 0, fmt.Errorf("%s: %d bytes", path, len(b))
	}
	data := b[44:]
	frameBytes := 2 * media.FrameSamples
	index := map[[8]int16]int{} // first samples of each frame sent -> its number
	for i, f := range want {
		index[[8]int16(f[:8])] = i
	}
	for off := 0; off+frameBytes <= len(data); off += frameBytes {
		pcm := make([]int16, media.FrameSamples)
		for j := range pcm {
			pcm[j] = int16(binary.LittleEndian.Uint16(data[off+2*j:]))
		}
		i, ok := index[[8]int16(pcm[:8])]
		if !ok {
			continue // silence before and after the file, or a concealed frame
		}
		if slices.Equal(pcm, want[i]) {
			same++
		} else {
			different++
		}
	}
	return same, different, nil
}

type pairResult struct {
	caller, callee string
	want, got      string
	frames, diff   int
	setups         []float64
	err            error
}

// TestCallMatrix is issue 5's acceptance 1 and 3: every pair of NAT kinds, and two hosts
// behind one NAT with and without hairpinning.
func TestCallMatrix(t *testing.T) {
	natNeeds(t)
	cl := newCallLab(t, 2)
	defer cl.lab.Close()
	type pair struct{ caller, callee, want string }
	var pairs []pair
	want := map[string]string{}
	var access []*netlab.Host
	for _, k := range callKinds {
		for _, side := range []string{"a", "b"} {
			name := strings.ReplaceAll(k.kind, "-", "") + side
			h, acc := cl.addClientHost(name, k.kind)
			cl.startClient(t, h, name, k.kind)
			want[name] = k.classic
			access = append(access, acc)
		}
	}
	for i, a := range callKinds {
		for _, b := range callKinds[i:] {
			pairs = append(pairs, pair{strings.ReplaceAll(a.kind, "-", "") + "a", strings.ReplaceAll(b.kind, "-", "") + "b", expectedPath(a.kind, b.kind)})
		}
	}
	for _, hp := range []bool{true, false} {
		site := cl.lab.AddSite(fmt.Sprintf("lan%v", hp), netlab.SiteConfig{Kind: netlab.PortRestrictedCone, Hairpin: hp})
		access = append(access, site.Router)
		a, b := fmt.Sprintf("lan%va", hp), fmt.Sprintf("lan%vb", hp)
		cl.startClient(t, site.AddHost(a), a, "same-nat")
		cl.startClient(t, site.AddHost(b), b, "same-nat")
		// Behind one NAT the host candidates meet on the LAN: direct, hairpin or not.
		pairs = append(pairs, pair{a, b, client.PathDirect})
	}
	if only := os.Getenv("PEERLINE_CALL_PAIRS"); only != "" {
		// Debugging: only the pairs with a client whose name contains this.
		var some []pair
		for _, p := range pairs {
			if strings.Contains(p.caller+" "+p.callee, only) {
				some = append(some, p)
			}
		}
		pairs = some
	}
	cl.waitReady(t, want)
	for _, h := range access {
		if err := h.Impair(netlab.Impairment{Delay: siteDelay, Inbound: true}); err != nil {
			t.Fatal(err)
		}
	}
	const frames = 500 // 10 s
	wav := filepath.Join(cl.root, "in.wav")
	sent := noiseWAV(t, wav, frames)

	// Run the pairs, a few at a time, never two calls on one client at once: whenever a
	// call ends, start every waiting pair whose two clients are free.
	results := make([]pairResult, len(pairs))
	busy := map[string]bool{}
	done := make(chan int)
	const parallel = 4
	started, running := make([]bool, len(pairs)), 0
	for finished := 0; finished < len(pairs); {
		for i, p := range pairs {
			if running >= parallel || started[i] || busy[p.caller] || busy[p.callee] {
				continue
			}
			started[i], busy[p.caller], busy[p.callee] = true, true, true
			running++
			go func() {
				results[i] = cl.runPair(p.caller, p.callee, p.want, wav, sent)
				done <- i
			}()
		}
		i := <-done
		busy[pairs[i].caller], busy[pairs[i].callee] = false, false
		running--
		finished++
	}

	// The table: every pair, its path, frames and setup times.
	var tb strings.Builder
	fmt.Fprintf(&tb, "\n%-24s %-24s %-10s %-10s %8s %6s  %s\n", "caller", "callee", "expected", "path", "frames", "diff", "setup ms (median of 3)")
	failed := 0
	for _, r := range results {
		med := median(r.setups)
		fmt.Fprintf(&tb, "%-24s %-24s %-10s %-10s %4d/%d %6d  %.0f %v\n", r.caller, r.callee, r.want, r.got, r.frames, frames, r.diff, med, r.setups)
		switch {
		case r.err != nil:
			t.Errorf("%s -> %s: %v", r.caller, r.callee, r.err)
		case r.got != r.want:
			t.Errorf("%s -> %s: path %s, want %s", r.caller, r.callee, r.got, r.want)
		case r.frames < frames*99/100 || r.diff > 0:
			t.Errorf("%s -> %s: %d of %d frames arrived intact, %d different", r.caller, r.callee, r.frames, frames, r.diff)
		case med > 1500:
			t.Errorf("%s -> %s: median setup %.0f ms, want at most 1500", r.caller, r.callee, med)
		default:
			continue
		}
		failed++
	}
	t.Logf("call matrix, %v one way into every client site:%s%d of %d pairs passed", siteDelay, tb.String(), len(results)-failed, len(results))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return -1
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[len(s)/2]
}

// runPair plays the WAV from caller to callee and checks what arrived, then places three
// short calls for the setup time.
func (cl *callLab) runPair(caller, callee, want, wav string, sent [][]int16) pairResult {
	r := pairResult{caller: caller, callee: callee, want: want}
	rep, err := cl.call(caller, callee, "--send", wav)
	if err != nil {
		r.err = fmt.Errorf("call: %v (%+v)", err, rep)
		return r
	}
	r.got = rep.Path
	r.setups = append(r.setups, rep.SetupMs)
	cr, err := cl.calleeReport(callee, rep.Call)
	if err != nil {
		r.err = err
		return r
	}
	if cr.Result != "completed" {
		r.err = fmt.Errorf("callee's side: %+v", cr)
		return r
	}
	r.frames, r.diff, err = matchRecording(filepath.Join(cl.clients[callee].dir, "rec", rep.Call+".wav"), sent)
	if err != nil {
		r.err = err
		return r
	}
	for i := 0; i < 2; i++ {
		rep, err := cl.call(caller, callee, "--duration", "1s")
		if err != nil {
			r.err = fmt.Errorf("short call %d: %v", i, err)
			return r
		}
		if _, err := cl.calleeReport(callee, rep.Call); err != nil {
			r.err = fmt.Errorf("short call %d: %v", i, err)
			return r
		}
		r.setups = append(r.setups, rep.SetupMs)
	}
	return r
}

// activeCall returns the running client's call in progress, if any.
func (cl *callLab) activeCall(t *testing.T, name string) (client.CallReport, bool) {
	out, err := exec.Command(cl.bin, "calls", "--data", cl.clients[name].dir, "--json").Output()
	if err != nil {
		return client.CallReport{}, false
	}
	var st client.CallsStatus
	if json.Unmarshal(out, &st) != nil || len(st.Active) == 0 {
		return client.CallReport{}, false
	}
	return st.Active[0], true
}

// relayPair sets up a lab whose two clients, behind symmetric NATs, can only talk
// through relays: the caller attached to sn1, the callee to sn2 (sn3 stands by for the
// reattachments).
func relayPair(t *testing.T) *callLab {
	cl := newCallLab(t, 3)
	var access []*netlab.Host
	for _, c := range []struct{ name, sn string }{{"caller", "sn1"}, {"callee", "sn2"}} {
		h, acc := cl.addClientHost(c.name, "symmetric")
		cl.startClient(t, h, c.name, "symmetric", "--prefer-supernode", cl.snAddrs[c.sn])
		access = append(access, acc)
	}
	cl.waitReady(t, map[string]string{"caller": "symmetric", "callee": "symmetric"})
	for _, h := range access {
		if err := h.Impair(netlab.Impairment{Delay: siteDelay, Inbound: true}); err != nil {
			t.Fatal(err)
		}
	}
	return cl
}

// TestCallFailover is issue 5's acceptance 4: a relayed call survives the death (SIGKILL)
// of the supernode whose relay carries it, and of the caller's own supernode, with a
// reported gap of at most 2 s.
func TestCallFailover(t *testing.T) {
	natNeeds(t)
	for _, victim := range []string{"carrying relay", "caller's supernode"} {
		t.Run(strings.ReplaceAll(victim, " ", "-"), func(t *testing.T) {
			cl := relayPair(t)
			defer cl.lab.Close()
			const frames = 400 // 8 s
			wav := filepath.Join(cl.root, "in.wav")
			sent := noiseWAV(t, wav, frames)
			type result struct {
				rep client.CallReport
				err error
			}
			res := make(chan result, 1)
			go func() {
				rep, err := cl.call("caller", "callee", "--send", wav)
				res <- result{rep, err}
			}()
			// Let audio flow for a while, then kill.
			var act client.CallReport
			eventually.That(t, 20*time.Second, "the call to get going (100 frames received)", func() bool {
				var ok bool
				act, ok = cl.activeCall(t, "caller")
				return ok && act.Media.FramesReceived > 100
			})
			kill := "sn1"
			if victim == "carrying relay" {
				// The caller sends via the peer's relay (rank 2): the callee's supernode's.
				kill = ""
				for name, addr := range cl.snAddrs {
					ip, _, _ := strings.Cut(addr, ":")
					if strings.Contains(act.Media.ActiveName, ip+":") {
						kill = name
					}
				}
				if kill == "" { // else this case would kill some other supernode and prove less
					t.Fatalf("the caller's path %q runs through no supernode's relay (%v)", act.Media.ActiveName, cl.snAddrs)
				}
			}
			t.Logf("caller's path %q; killing %s", act.Media.ActiveName, kill)
			cl.sns[kill].Kill()
			r := <-res
			if r.err != nil {
				t.Fatalf("call: %v (%+v)", r.err, r.rep)
			}
			cr, err := cl.calleeReport("callee", r.rep.Call)
			if err != nil {
				t.Fatal(err)
			}
			changes := append(r.rep.Media.PathChanges, cr.Media.PathChanges...)
			same, diff, err := matchRecording(filepath.Join(cl.clients["callee"].dir, "rec", r.rep.Call+".wav"), sent)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killed %s: caller max gap %.0f ms, callee max gap %.0f ms, %d/%d frames intact at the callee; changes %v",
				kill, r.rep.Media.MaxGapMs, cr.Media.MaxGapMs, same, frames, changes)
			if r.rep.Result != "completed" || cr.Result != "completed" {
				t.Fatalf("the call did not survive: %+v / %+v", r.rep, cr)
			}
			if r.rep.Media.MaxGapMs > 2000 || cr.Media.MaxGapMs > 2000 {
				t.Fatalf("gap %.0f / %.0f ms, want at most 2000", r.rep.Media.MaxGapMs, cr.Media.MaxGapMs)
			}
			if diff > 0 || same < frames*85/100 {
				t.Fatalf("%d frames intact, %d different, of %d", same, diff, frames)
			}
		})
	}
}

// TestCallMovesToDirect is issue 5's acceptance 5: a call between two port-restricted
// cone NATs that starts on a relay (the clients hold their ICE checks back 2 s) moves to
// the punched path once it works, without losing audio.
func TestCallMovesToDirect(t *testing.T) {
	natNeeds(t)
	cl := newCallLab(t, 2)
	defer cl.lab.Close()
	var access []*netlab.Host
	for _, name := range []string{"caller", "callee"} {
		h, acc := cl.addClientHost(name, "port-restricted-cone")
		cl.startClient(t, h, name, "port-restricted-cone", "--call-direct-delay", "2s")
		access = append(access, acc)
	}
	cl.waitReady(t, nil)
	for _, h := range access {
		if err := h.Impair(netlab.Impairment{Delay: siteDelay, Inbound: true}); err != nil {
			t.Fatal(err)
		}
	}
	const frames = 300 // 6 s
	wav := filepath.Join(cl.root, "in.wav")
	sent := noiseWAV(t, wav, frames)
	rep, err := cl.call("caller", "callee", "--send", wav)
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	cr, err := cl.calleeReport("callee", rep.Call)
	if err != nil {
		t.Fatal(err)
	}
	changes := rep.Media.PathChanges
	moved := false
	for _, ch := range changes {
		if strings.HasPrefix(ch.From, "relay-udp:") && strings.HasPrefix(ch.To, "punched:") {
			moved = true
		}
	}
	same, diff, err := matchRecording(filepath.Join(cl.clients["callee"].dir, "rec", rep.Call+".wav"), sent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("path changes %v; callee: %d/%d frames intact, max gap %.0f ms", changes, same, frames, cr.Media.MaxGapMs)
	if !moved || rep.Path != client.PathPunched {
		t.Fatalf("the call did not move from the relay to the punched path: ended on %s, changes %v", rep.Path, changes)
	}
	if diff > 0 || same < frames*99/100 {
		t.Fatalf("%d of %d frames intact, %d different", same, frames, diff)
	}
}
