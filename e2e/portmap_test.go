package e2e

// The port-mapping client (internal/portmap) against a real router: Debian's miniupnpd
// (nftables back end) on a lab site's router, and a host behind it that asks for a UDP
// mapping with one protocol at a time (PCP, NAT-PMP, then UPnP IGD found by an SSDP
// search). A host on the simulated internet then sends to the external address the
// router gave, and the datagram must reach the client's socket; once the client has
// stopped (Run's context ended, so it deleted the mapping), the router must hold no
// redirect for it and a datagram sent there must no longer arrive.
//
// The client runs in a process of its own inside the client's namespace
// (TestPortMapChild: this test binary, started again), not on one thread of the test
// process (Host.Do): the mapping client opens its sockets on goroutines of its own and
// reads the gateway from the namespace's routing table, which takes a whole process.
//
// The site's NAT is the lab's port-restricted-cone kind. miniupnpd counts the lab's
// internet range (TEST-NET-3) as reserved, so it learns its external address by STUN
// (RFC 5780's tests, against `peerline stun`), and it will not forward ports if its own
// requests leave from other ports than they were sent from. The lab's symmetric kind
// SNATs the router's own sockets to random ports as well, so miniupnpd would not forward
// behind it; the port-restricted-cone kind keeps ports.
//
// The test needs root, iproute2, nftables and miniupnpd (apt-get install
// miniupnpd-nftables), and skips with a message otherwise.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/portmap"
)

// portmapChildEnv carries TestPortMapChild's protocol and ports: "NAT-PMP 23002 24002".
const portmapChildEnv = "PEERLINE_PORTMAP_CHILD"

// What TestPortMapChild prints for the parent, one line each.
const (
	portmapMapped   = "portmap-child: mapped "   // then the mapping as JSON
	portmapUnmapped = "portmap-child: unmapped"  // Run deleted the mapping, or lost it
	portmapGot      = "portmap-child: received " // then the datagram (quoted) and its source
	portmapRunDone  = "portmap-child: run returned: "
)

// portmapReport is the mapping as TestPortMapChild prints it.
type portmapReport struct {
	Protocol string
	External netip.AddrPort
	Internal netip.AddrPort
	Lifetime time.Duration
}

// The nftables table and chains that miniupnpd fills. Version 2.3.1 does not create them
// (its packagers leave that to a script of their own), so the test does.
const (
	upnpTable       = "plupnp"
	upnpForward     = "upnp_forward"
	upnpPrerouting  = "upnp_prerouting"
	upnpPostrouting = "upnp_postrouting"
)

// upnpRuleset is upnpTable. Its forward chain accepts what miniupnpd's rules do not
// mention as well: what keeps unsolicited traffic out of the LAN is the lab's NAT, which
// forwards nothing inbound that it has no mapping for.
var upnpRuleset = fmt.Sprintf(`table inet %[1]s {
  chain forward {
    type filter hook forward priority filter; policy accept;
    jump %[2]s
  }
  chain %[2]s {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump %[3]s
  }
  chain %[3]s {
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump %[4]s
  }
  chain %[4]s {
  }
}
`, upnpTable, upnpForward, upnpPrerouting, upnpPostrouting)

// upnpConfig is miniupnpd's configuration for a router whose outside interface is "wan"
// and inside one "lan", that learns its external address from stun and lets the hosts
// of lan map ports 1024 and up to themselves alone (secure_mode). enable_natpmp turns
// on PCP too, when it is built in: 2.3.1 has no switch of PCP's own.
func upnpConfig(lan netip.Prefix, stun netip.AddrPort) string {
	return fmt.Sprintf(`ext_ifname=wan
listening_ip=lan
ipv6_disable=yes
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=no
ext_perform_stun=yes
ext_stun_host=%s
ext_stun_port=%d
upnp_table_name=%s
upnp_nat_table_name=%[3]s
upnp_forward_chain=%s
upnp_nat_chain=%s
upnp_nat_postrouting_chain=%s
uuid=3a3c2e3b-7b0e-4c4e-9d5e-000000000001
allow 1024-65535 %s 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`, stun.Addr(), stun.Port(), upnpTable, upnpForward, upnpPrerouting, upnpPostrouting, lan)
}

// upnpLab is the lab of TestPortMapMiniupnpd: a site whose router runs miniupnpd, a
// client host on its LAN, and a peer on the internet.
type upnpLab struct {
	site   *netlab.Site
	router *netlab.Host
	client *netlab.Host
	peer   *netlab.Host
	upnpd  *netlab.Proc // miniupnpd
	pcp    bool         // miniupnpd was built with PCP
}

// TestPortMapMiniupnpd maps a port on miniupnpd with each protocol in turn, on one lab.
func TestPortMapMiniupnpd(t *testing.T) {
	if err := netlab.Requirements(); err != nil {
		t.Skipf("skipping port-mapping lab test: %v", err)
	}
	upnpd, err := exec.LookPath("miniupnpd")
	if err != nil {
		t.Skip("skipping port-mapping lab test: miniupnpd missing: apt-get install miniupnpd-nftables")
	}
	t0 := time.Now()
	ul := newUPnPLab(t, upnpd)
	t.Logf("miniupnpd on %s (wan %s, lan %s) ready after %v; PCP built in: %v",
		ul.router.Name, ul.router.IP(), ul.site.LAN, time.Since(t0).Round(time.Millisecond), ul.pcp)
	for i, proto := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
		t.Run(proto.String(), func(t *testing.T) {
			if proto == portmap.PCP && !ul.pcp {
				t.Skip("skipping: this miniupnpd was built without PCP: it logs 'Listening for NAT-PMP traffic', not 'NAT-PMP/PCP'")
			}
			// Ports of each protocol's own, below the ephemeral range, and an external
			// one unlike the local one, so that only the router's translation delivers.
			ul.check(t, proto, uint16(23001+i), uint16(24001+i))
		})
	}
	t.Logf("total %v", time.Since(t0).Round(time.Millisecond))
}

// newUPnPLab builds the lab and starts miniupnpd (the binary upnpd) on the router.
func newUPnPLab(t *testing.T, upnpd string) *upnpLab {
	t.Helper()
	bin := netlab.BuildPeerline(t)
	dir := t.TempDir() // before the lab, so that it goes after the lab's processes
	l := netlab.New(t)
	stunHost := l.AddPublicHost("stun", 2)
	ul := &upnpLab{peer: l.AddPublicHost("peer", 1)}
	ul.site = l.AddSite("home", netlab.SiteConfig{Kind: netlab.PortRestrictedCone})
	ul.router = ul.site.Router
	ul.client = ul.site.AddHost("client")

	a := stunHost.Addrs()
	stunAddr := netip.AddrPortFrom(a[0], 3478)
	stun, err := stunHost.Start("stun", bin, "stun", "--primary", stunAddr.String(), "--alt", a[1].String(), "--alt-port", "3479")
	if err != nil {
		t.Fatal(err)
	}
	if err := stun.WaitLog("stun server listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	natWaitSTUN(t, ul.router, stunAddr)

	rules := filepath.Join(dir, "upnp.nft")
	conf := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(rules, []byte(upnpRuleset), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(upnpConfig(ul.site.LAN, stunAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ul.router.Run(t.Context(), "nft", "-f", rules); err != nil {
		t.Fatal(err)
	}
	// miniupnpd logs to syslog as well as to stderr, and glibc writes what no syslog
	// daemon takes to the machine's console (LOG_CONS): in a mount namespace of its own,
	// the console it finds is /dev/null. It writes no pid file in the foreground (-d)
	// but removes one when it exits: the one named is in the test's directory.
	ul.upnpd, err = ul.router.Start("miniupnpd", "unshare", "--mount", "sh", "-c",
		`mount --bind /dev/null /dev/console && exec "$0" "$@"`,
		upnpd, "-d", "-f", conf, "-P", filepath.Join(dir, "miniupnpd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ul.upnpd.WaitLog("Port forwarding is now enabled", 15*time.Second); err != nil {
		t.Fatalf("miniupnpd does not forward ports: %v\n%s", err, ul.upnpd.Log())
	}
	for _, ready := range []string{"HTTP listening on port", "traffic on port 5351"} {
		if err := ul.upnpd.WaitLog(ready, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// With PCP built in, the NAT-PMP socket is PCP's too, and the line says so.
	ul.pcp = strings.Contains(ul.upnpd.Log(), "Listening for NAT-PMP/PCP traffic")
	return ul
}

// check runs TestPortMapChild on the client with proto, for local port local and
// external port ext, and checks the mapping from the peer before and after the child
// stops.
func (ul *upnpLab) check(t *testing.T, proto portmap.Protocol, local, ext uint16) {
	t0 := time.Now()
	child, err := ul.client.Start("portmap-"+proto.String(), "env",
		fmt.Sprintf("%s=%s %d %d", portmapChildEnv, proto, local, ext),
		os.Args[0], "-test.run=^TestPortMapChild$", "-test.timeout=2m")
	if err != nil {
		t.Fatal(err)
	}
	defer child.Stop()
	if err := child.WaitLog(portmapMapped, 20*time.Second); err != nil {
		t.Fatalf("no mapping: %v\n%s", err, child.Log())
	}
	m := portmapParseReport(t, child.Log())
	took := time.Since(t0)

	// (a) The mapping is the router's: its outside address, forwarding to this host;
	// miniupnpd took the request in that protocol (for UPnP, after an SSDP search from
	// the client), and its chains hold the DNAT and the forward rule that let it through.
	internal := netip.AddrPortFrom(ul.client.IP(), local)
	if m.Protocol != proto.String() || m.External.Addr() != ul.router.IP() || m.External.Port() == 0 || m.Internal != internal {
		t.Fatalf("mapping %+v; want %s from %s:* to %s", m, proto, ul.router.IP(), internal)
	}
	var heard []string
	for _, want := range upnpHeard(proto, ul.client.IP(), m.External.Port(), internal) {
		line := upnpLogLine(ul.upnpd.Log(), want)
		if line == "" {
			t.Fatalf("miniupnpd did not log %q:\n%s", want, ul.upnpd.Log())
		}
		heard = append(heard, line)
	}
	rules := ul.rules(t)
	dnat := fmt.Sprintf("dport %d dnat ip to %s", m.External.Port(), internal)
	fwd := fmt.Sprintf("dport %d ", local)
	if !slices.ContainsFunc(rules, func(r string) bool { return strings.HasPrefix(r, upnpPrerouting+": ") && strings.Contains(r, dnat) }) ||
		!slices.ContainsFunc(rules, func(r string) bool { return strings.HasPrefix(r, upnpForward+": ") && strings.Contains(r, fwd) }) {
		t.Fatalf("miniupnpd's chains lack the DNAT (%q) or the forward rule (%q): %q", dnat, fwd, rules)
	}
	t.Logf("mapped in %v: %s %s -> %s for %v", took.Round(time.Millisecond), m.Protocol, m.External, m.Internal, m.Lifetime)
	t.Logf("miniupnpd: %s", strings.Join(heard, " | "))
	t.Logf("miniupnpd's rules: %s", strings.Join(rules, " | "))

	// (b) A datagram from the internet to the external address reaches the client's
	// socket, and the answer comes back from the external address.
	payload := fmt.Sprintf("hello %s via %s", proto, m.External)
	reply, from, ok := portmapExchange(t, ul.peer, m.External, payload)
	if !ok {
		t.Fatalf("nothing came back from %s\nclient:\n%s", m.External, child.Log())
	}
	if reply != "echo "+payload || from != m.External {
		t.Fatalf("answer %q from %s; want %q from %s", reply, from, "echo "+payload, m.External)
	}
	got := portmapLine(child.Log(), portmapGot+fmt.Sprintf("%q", payload))
	if got == "" {
		t.Fatalf("the client did not log the datagram:\n%s", child.Log())
	}
	t.Logf("%s sent %q to %s; the client logged %q; the answer came from %s",
		ul.peer.IP(), payload, m.External, strings.TrimPrefix(got, "portmap-child: "), from)

	// (c) Once Run's context ends, the client deletes the mapping: miniupnpd's chains
	// are empty again and nothing sent to the external address arrives.
	t1 := time.Now()
	child.Stop()
	stopped := time.Since(t1)
	if err := child.Err(); err != nil {
		t.Fatalf("client: %v\n%s", err, child.Log())
	}
	done := portmapLine(child.Log(), portmapRunDone)
	if done != portmapRunDone+"<nil>" || portmapLine(child.Log(), portmapUnmapped) == "" {
		t.Fatalf("the client did not delete its mapping (%q):\n%s", done, child.Log())
	}
	if err := eventually.Await(5*time.Second, "miniupnpd's chains to be empty", func() bool {
		return len(ul.rules(t)) == 0
	}); err != nil {
		t.Fatalf("%v: %q", err, ul.rules(t))
	}
	ln, err := ul.client.ListenUDP(internal.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if portmapArrives(t, ul.peer, ln, m.External) {
		t.Fatalf("%s still reaches %s after the deletion; miniupnpd's rules: %q", m.External, internal, ul.rules(t))
	}
	t.Logf("stopped in %v (%s); miniupnpd's chains are empty; nothing sent to %s reaches %s any more",
		stopped.Round(time.Millisecond), strings.TrimPrefix(done, "portmap-child: "), m.External, internal)
	if line := upnpLogLine(ul.upnpd.Log(), upnpRemoved(proto, m.External.Port())); line != "" {
		t.Logf("miniupnpd: %s", line)
	}
}

// rules returns the rules of miniupnpd's chains in the router's namespace, each as
// "chain: rule".
func (ul *upnpLab) rules(t *testing.T) []string {
	t.Helper()
	var rules []string
	for _, chain := range []string{upnpForward, upnpPrerouting, upnpPostrouting} {
		out, err := ul.router.Run(t.Context(), "nft", "list", "chain", "inet", upnpTable, chain)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(out), "\n") {
			line = strings.TrimSpace(line)
			if line != "" && line != "}" && !strings.HasPrefix(line, "table ") && !strings.HasPrefix(line, "chain ") {
				rules = append(rules, chain+": "+line)
			}
		}
	}
	return rules
}

// portmapParseReport returns the mapping of the last "mapped" line of a child's log.
func portmapParseReport(t *testing.T, log string) portmapReport {
	t.Helper()
	var m portmapReport
	line := portmapLine(log, portmapMapped)
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, portmapMapped)), &m); err != nil {
		t.Fatalf("mapping line %q: %v", line, err)
	}
	return m
}

// portmapLine returns the last line of log that starts with prefix, or "".
func portmapLine(log, prefix string) string {
	var found string
	for line := range strings.SplitSeq(log, "\n") {
		if strings.HasPrefix(line, prefix) {
			found = line
		}
	}
	return found
}

// upnpLogLine returns the last line of miniupnpd's log that contains substr, without
// the "miniupnpd[pid]: " that starts it, or "".
func upnpLogLine(log, substr string) string {
	var found string
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, substr) {
			_, found, _ = strings.Cut(line, ": ")
		}
	}
	return found
}

// upnpHeard is what miniupnpd 2.3.1 logs when it takes a request of proto from client to
// map external port ext to internal.
func upnpHeard(proto portmap.Protocol, client netip.Addr, ext uint16, internal netip.AddrPort) []string {
	switch proto {
	case portmap.PCP:
		return []string{fmt.Sprintf("PCP MAP: added mapping UDP %d->%s", ext, internal)}
	case portmap.NATPMP:
		return []string{fmt.Sprintf("NAT-PMP port mapping request : %d->%s udp", ext, internal)}
	}
	return []string{fmt.Sprintf("SSDP M-SEARCH from %s:", client),
		fmt.Sprintf("AddPortMapping: ext port %d to %s protocol UDP", ext, internal)}
}

// upnpRemoved is what miniupnpd 2.3.1 logs when it deletes proto's mapping of port ext.
func upnpRemoved(proto portmap.Protocol, ext uint16) string {
	switch proto {
	case portmap.PCP:
		return fmt.Sprintf("PCP: UDP port %d mapping removed", ext)
	case portmap.NATPMP:
		return fmt.Sprintf("NAT-PMP UDP port %d mapping removed", ext)
	}
	return fmt.Sprintf("removing redirect rule port %d UDP", ext)
}

// portmapExchange sends payload to dst from a fresh socket on h, up to 5 times, and
// returns the first answer and where it came from.
func portmapExchange(t *testing.T, h *netlab.Host, dst netip.AddrPort, payload string) (reply string, from netip.AddrPort, ok bool) {
	t.Helper()
	c, err := h.ListenUDP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	for range 5 {
		if _, err := c.WriteToUDPAddrPort([]byte(payload), dst); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err == nil {
			return string(buf[:n]), netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), true
		}
	}
	return "", netip.AddrPort{}, false
}

// portmapArrives sends to dst 5 times from a fresh socket on h and reports whether any
// datagram reached ln. The socket is fresh because a flow that the router's conntrack
// already knows keeps its DNAT whatever the rules say now: only a new one asks them.
func portmapArrives(t *testing.T, h *netlab.Host, ln *net.UDPConn, dst netip.AddrPort) bool {
	t.Helper()
	c, err := h.ListenUDP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	for range 5 {
		if _, err := c.WriteToUDPAddrPort([]byte("still there?"), dst); err != nil {
			t.Fatal(err)
		}
		ln.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, src, err := ln.ReadFromUDPAddrPort(buf); err == nil {
			t.Logf("%q arrived from %s", buf[:n], src)
			return true
		}
	}
	return false
}

// TestPortMapChild is the client of TestPortMapMiniupnpd, which runs it inside the
// client's namespace; it does nothing in a normal run. It answers every datagram to its
// local port with "echo " and the datagram, and keeps the port mapped with one protocol
// (portmap.Client.Run) until SIGTERM, printing what happens.
func TestPortMapChild(t *testing.T) {
	spec := os.Getenv(portmapChildEnv)
	if spec == "" {
		t.Skip("runs only as the client process of TestPortMapMiniupnpd")
	}
	var name string
	var local, ext uint16
	if _, err := fmt.Sscanf(spec, "%s %d %d", &name, &local, &ext); err != nil {
		t.Fatalf("%s=%q: %v", portmapChildEnv, spec, err)
	}
	protos := map[string]portmap.Protocol{}
	for _, p := range portmap.DefaultProtocols {
		protos[p.String()] = p
	}
	proto, known := protos[name]
	if !known {
		t.Fatalf("%s=%q: unknown protocol %q", portmapChildEnv, spec, name)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute) // a parent gone before it stopped us
	defer cancel()

	conn, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(local)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer conn.Close()
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			fmt.Printf("%s%q from %s\n", portmapGot, buf[:n], from)
			conn.WriteToUDPAddrPort(append([]byte("echo "), buf[:n]...), from)
		}
	})

	c, err := portmap.New(portmap.Config{
		LocalPort:    local,
		ExternalPort: ext,
		Protocols:    []portmap.Protocol{proto},
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange: func(m portmap.Mapping, ok bool) {
			if !ok {
				fmt.Println(portmapUnmapped)
				return
			}
			b, _ := json.Marshal(portmapReport{m.Protocol.String(), m.External, m.Internal, m.Lifetime})
			fmt.Printf("%s%s\n", portmapMapped, b)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(ctx)
	fmt.Printf("%s%v\n", portmapRunDone, err)
	if err != nil {
		t.Fatal(err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("never stopped by the parent test")
	}
}
