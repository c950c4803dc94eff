package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/cmd/peerline/compose"
	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/datadir"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/relay"
	"github.com/peerline/peerline/supernode"
)

func supernodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "supernode",
		Usage: "run an infrastructure supernode that clients attach to",
		UsageText: "peerline supernode --data DIR --listen HOST:PORT --login HOST:PORT --login-key KEY --admit-secret SECRET\n\n" +
			"Example:\n" +
			"   peerline supernode --data run/sn1 --listen 127.0.0.1:7101 --login 127.0.0.1:7000 \\\n" +
			"       --login-key-file run/login/login.pub --admit-secret-file run/login/admit.secret \\\n" +
			"       --stun-alt-ip 127.0.0.2 --turn-allow-private-peers",
		Description: "The supernode registers with the login server (which admits it with the admission\n" +
			"secret and signs its credential), heartbeats to stay in host-cache seeds, and serves\n" +
			"clients. 'peerline status --data DIR' shows its clients, ring and records.\n\n" +
			"Ports, on one host for several supernodes: TCP --listen (control); UDP the same port\n" +
			"(STUN, unless --no-stun); with --stun-alt-ip, UDP that port on the second IP and the\n" +
			"alternate port on both IPs: --stun-alt-port, by default a free port picked at start;\n" +
			"TURN on --turn-listen, UDP and TCP, by default a free port; relayed ports are free\n" +
			"ports in 49152-65535. So only --listen must differ between supernodes.",
		Flags: []cli.Flag{
			dataFlag,
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7100", Usage: "control `ADDR` to listen on"},
			&cli.StringFlag{Name: "advertise", Usage: "`ADDR` clients should dial (default: the listen address)"},
			&cli.StringFlag{Name: "name", Usage: "supernode `NAME` shown to clients (default: sn- and the start of its key)"},
			loginFlag, loginKeyFlag, loginKeyFileFlag,
			&cli.StringFlag{Name: "admit-secret", Usage: "the login server's admission `SECRET`", EnvVars: []string{"PEERLINE_ADMIT_SECRET"}},
			&cli.StringFlag{Name: "admit-secret-file", Usage: "read the admission secret from `FILE`"},
			&cli.DurationFlag{Name: "keepalive", Usage: "ping period asked of clients (0 = 20s)"},
			&cli.BoolFlag{Name: "no-stun", Usage: "do not serve STUN (clients then cannot detect their NAT here)"},
			&cli.StringFlag{Name: "stun-alt-ip", Usage: "second `IP` of this host, for full RFC 5780 NAT detection (without it, clients learn only their mapped address)"},
			&cli.UintFlag{Name: "stun-alt-port", Usage: "alternate STUN `PORT`, on both IPs, with --stun-alt-ip (default: a free port picked at start, so supernodes on one host cannot clash)"},
			&cli.BoolFlag{Name: "no-turn", Usage: "run no TURN relay (calls that cannot go direct then need another relay)"},
			&cli.StringFlag{Name: "turn-listen", Usage: "`ADDR` of the TURN relay, UDP and TCP (default: the advertised IP, a free port)"},
			&cli.IntFlag{Name: "turn-quota-allocs", Value: 8, Usage: "relay allocations one user may hold"},
			&cli.IntFlag{Name: "turn-quota-kbps", Value: 512, Usage: "relayed kilobits per second one user may use (0 = no limit)"},
			&cli.BoolFlag{Name: "turn-allow-private-peers", Usage: "let the relay send to loopback and private addresses (tests on one machine only)"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go profiles (net/http/pprof) at http://`ADDR`/debug/pprof/ (off by default; a bare :PORT binds 127.0.0.1 only: profiles show memory contents)"},
			logLevelFlag,
		},
		Action: runSupernode,
	}
}

func runSupernode(c *cli.Context) error {
	log := newLogger(c)
	dir := c.String("data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if dataRole(dir) == "client" {
		return fmt.Errorf("%s is a client's data dir: give the supernode a data dir of its own", dir)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, supernodeMarker), []byte("supernode\n"), 0o600); err != nil {
		return err
	}
	key, err := identity.LoadOrCreateKey(filepath.Join(dir, datadir.KeyFile))
	if err != nil {
		return err
	}
	ls, _, err := loginServer(c)
	if err != nil {
		return err
	}
	secret := c.String("admit-secret")
	if f := c.String("admit-secret-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		secret = strings.TrimSpace(string(b))
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("--listen %s: %w", c.String("listen"), err)
	}
	adv := c.String("advertise")
	if adv == "" {
		adv = ln.Addr().String()
	}
	var stun [4]net.PacketConn
	if !c.Bool("no-stun") {
		stun, err = listenSTUN(adv, c.String("stun-alt-ip"), c.Uint("stun-alt-port"))
		if err != nil {
			ln.Close()
			return err
		}
	}
	// The sockets opened so far, closed on the way out when the supernode cannot start.
	closeSockets := func() {
		ln.Close()
		for _, pc := range stun {
			if pc != nil {
				pc.Close()
			}
		}
	}
	m := &metrics.Set{}
	var newRelay func(supernode.RelayParams) (supernode.Relay, error)
	var relayIP netip.Addr
	if !c.Bool("no-turn") {
		rc, err := relayConfig(c, adv)
		if err != nil {
			closeSockets()
			return err
		}
		newRelay, relayIP = compose.Relay(*rc), rc.PublicIP
	}
	sn, err := supernode.New(supernode.Config{
		Listener: ln, STUN: stun, NewRelay: newRelay, RelayIP: relayIP,
		Key: key, Name: c.String("name"), Advertise: adv,
		LoginAddr: ls.Addr, LoginKey: ls.Key, AdmitSecret: secret,
		KeepAlive: c.Duration("keepalive"), Logger: log, Metrics: m,
		// Half the descriptors at most: the relay's sockets and the connections to other
		// supernodes need the rest.
		MaxClients: connBudget(5000, 1, 2),
	})
	if err != nil {
		closeSockets()
		return err
	}
	ctlLn, err := ctl.Listen(filepath.Join(dir, datadir.SocketFile))
	if err != nil {
		closeSockets()
		return err
	}
	if addr := c.String("pprof"); addr != "" {
		bound, stop, err := serveProfiles(addr)
		if err != nil {
			ctlLn.Close()
			closeSockets()
			return err
		}
		defer stop()
		log.Info("serving profiles", "addr", "http://"+bound+"/debug/pprof/")
	}
	go ctl.Serve(c.Context, ctlLn, func(ctx context.Context, r ctl.Request) (any, error) {
		if r.Cmd == ctl.CmdStatus {
			return sn.Status(), nil
		}
		return nil, proto.ErrBadRequest.With("a supernode answers only %q", ctl.CmdStatus)
	}, m)
	log.Info("supernode listening", "addr", ln.Addr().String(), "advertise", adv, "id", sn.ID())
	return sn.Run(c.Context)
}

// relayConfig is the supernode's TURN relay: on --turn-listen, or the advertised IP.
func relayConfig(c *cli.Context, advertise string) (*relay.Config, error) {
	listen := c.String("turn-listen")
	if listen == "" {
		host, _, err := net.SplitHostPort(advertise)
		if err != nil {
			return nil, err
		}
		listen = net.JoinHostPort(host, "0")
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return nil, usagef("--turn-listen %q: want IP:PORT", listen)
	}
	if ap.Port() != 0 {
		// The relay starts once the login server admits the supernode; a port in use
		// is better said now, naming the flag.
		for _, network := range []string{"udp", "tcp"} {
			var l io.Closer
			if network == "udp" {
				l, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
			} else {
				l, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
			}
			if err != nil {
				return nil, fmt.Errorf("--turn-listen %s: TURN over %s: %w (choose another port, or leave --turn-listen out for a free one)", ap, strings.ToUpper(network), err)
			}
			l.Close()
		}
	}
	return &relay.Config{
		Listen: listen, PublicIP: ap.Addr(), MaxAllocsPerUser: c.Int("turn-quota-allocs"),
		UserBandwidth: c.Int("turn-quota-kbps") * 1000 / 8, AllowPrivatePeers: c.Bool("turn-allow-private-peers"),
		// A quarter of the descriptors, beside the control connections' half: a flood
		// of TURN-over-TCP connections is shed before it takes the supernode's.
		TCPMaxConns: connBudget(relay.DefaultTCPMaxConns, 1, 4),
	}, nil
}

// listenSTUN opens the supernode's STUN sockets: UDP on the advertised IP and port (the
// port of --listen), and with --stun-alt-ip the RFC 5780 set: the same port on the alternate
// IP, and the alternate port (--stun-alt-port, else a free port picked at start) on both
// IPs. A free alternate port cannot clash with another supernode on the same host, as
// listen port + 1 did; a firewall that must open a fixed port needs --stun-alt-port.
// Every bind error names the flag that chose the address.
func listenSTUN(advertise, altIP string, altPort uint) ([4]net.PacketConn, error) {
	var conns [4]net.PacketConn
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	ap, err := netip.ParseAddrPort(advertise)
	if err != nil {
		return conns, fmt.Errorf("STUN needs an IP:PORT advertised address, got %q (give --advertise IP:PORT, or --no-stun): %w", advertise, err)
	}
	bind := func(slot int, a netip.AddrPort, flag string) error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		if err != nil {
			return fmt.Errorf("STUN on UDP %s: %w (%s)", a, err, flag)
		}
		conns[slot] = c
		return nil
	}
	if err := bind(0, ap, "STUN uses the supernode's own port over UDP: change --listen/--advertise, or give --no-stun"); err != nil {
		return conns, err
	}
	if altIP == "" {
		if altPort != 0 {
			closeAll()
			return conns, usagef("--stun-alt-port needs --stun-alt-ip")
		}
		return conns, nil
	}
	alt, err := netip.ParseAddr(altIP)
	if err != nil {
		closeAll()
		return conns, usagef("--stun-alt-ip %q: want an IP address of this host", altIP)
	}
	if altPort > 65535 || altPort == uint(ap.Port()) && altPort != 0 {
		closeAll()
		return conns, usagef("--stun-alt-port %d: want a port (1-65535) other than the listen port", altPort)
	}
	if err := bind(2, netip.AddrPortFrom(alt, ap.Port()), "the listen port on --stun-alt-ip: change --stun-alt-ip or --listen"); err != nil {
		closeAll()
		return conns, err
	}
	if altPort != 0 {
		for i, ip := range []netip.Addr{ap.Addr(), alt} {
			if err := bind([]int{1, 3}[i], netip.AddrPortFrom(ip, uint16(altPort)), "choose another --stun-alt-port, or leave it out for a free one"); err != nil {
				closeAll()
				return conns, err
			}
		}
		return conns, nil
	}
	// A free port on the primary IP that is also free on the alternate IP.
	var last error
	for try := 0; try < 20; try++ {
		c1, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), 0)))
		if err != nil {
			closeAll()
			return conns, fmt.Errorf("STUN alternate port on %s: %w", ap.Addr(), err)
		}
		p := uint16(c1.LocalAddr().(*net.UDPAddr).Port)
		c2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(alt, p)))
		if err != nil {
			c1.Close()
			last = err
			continue
		}
		conns[1], conns[3] = c1, c2
		return conns, nil
	}
	closeAll()
	return conns, fmt.Errorf("STUN alternate port: no port free on both %s and %s: %w (give --stun-alt-port)", ap.Addr(), alt, last)
}

// serveProfiles serves the Go runtime's profiles (net/http/pprof) at
// http://addr/debug/pprof/ until stop is called. An address without a host (":6060")
// binds 127.0.0.1 only.
func serveProfiles(addr string) (bound string, stop func(), err error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--pprof %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	return ln.Addr().String(), func() { hs.Close() }, nil
}
