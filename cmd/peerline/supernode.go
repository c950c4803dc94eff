package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/stunsrv"
	"github.com/peerline/peerline/relay"
	"github.com/peerline/peerline/supernode"
)

func supernodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "supernode",
		Usage: "run an infrastructure supernode that clients attach to",
		UsageText: "peerline supernode --data DIR --listen HOST:PORT --login HOST:PORT --login-key KEY --admit-secret SECRET\n\n" +
			"Example:\n" +
			"   peerline supernode --data sn1 --listen 127.0.0.1:7101 --login 127.0.0.1:7000 \\\n" +
			"       --login-key-file login/login.pub --admit-secret-file login/admit.secret",
		Description: "The supernode registers with the login server (which admits it with the admission\n" +
			"secret and signs its credential), heartbeats to stay in host-cache seeds, and serves\n" +
			"clients. 'peerline status --data DIR' shows its clients and peers.",
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
			&cli.BoolFlag{Name: "no-turn", Usage: "run no TURN relay (calls that cannot go direct then need another relay)"},
			&cli.StringFlag{Name: "turn-listen", Usage: "`ADDR` of the TURN relay, UDP and TCP (default: the advertised IP, a free port)"},
			&cli.IntFlag{Name: "turn-quota-allocs", Value: 8, Usage: "relay allocations one user may hold"},
			&cli.IntFlag{Name: "turn-quota-kbps", Value: 512, Usage: "relayed kilobits per second one user may use (0 = no limit)"},
			&cli.BoolFlag{Name: "turn-allow-private-peers", Usage: "let the relay send to loopback and private addresses (tests on one machine only)"},
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
	key, err := identity.LoadOrCreateKey(filepath.Join(dir, client.KeyFile))
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
		return err
	}
	adv := c.String("advertise")
	if adv == "" {
		adv = ln.Addr().String()
	}
	var stun [4]net.PacketConn
	if !c.Bool("no-stun") {
		stun, err = listenSTUN(adv, c.String("stun-alt-ip"))
		if err != nil {
			ln.Close()
			return err
		}
	}
	m := &metrics.Set{}
	var rc *relay.Config
	if !c.Bool("no-turn") {
		rc, err = relayConfig(c, adv)
		if err != nil {
			ln.Close()
			return err
		}
	}
	sn, err := supernode.New(supernode.Config{
		STUN: stun, Relay: rc,
		Key: key, Name: c.String("name"), Advertise: adv,
		LoginAddr: ls.Addr, LoginKey: ls.Key, AdmitSecret: secret,
		KeepAlive: c.Duration("keepalive"), Logger: log, Metrics: m,
		// Half the descriptors at most: the relay's sockets and the connections to other
		// supernodes need the rest.
		MaxClients: connBudget(5000, 1, 2),
	})
	if err != nil {
		ln.Close()
		return err
	}
	ctlLn, err := ctl.Listen(filepath.Join(dir, client.SocketFile))
	if err != nil {
		ln.Close()
		return err
	}
	go ctl.Serve(c.Context, ctlLn, func(ctx context.Context, r ctl.Request) (any, error) {
		if r.Cmd == client.CmdStatus {
			return sn.Status(), nil
		}
		return nil, proto.ErrBadRequest.With("a supernode answers only %q", client.CmdStatus)
	}, m)
	log.Info("supernode listening", "addr", ln.Addr().String(), "advertise", adv, "id", sn.ID())
	return sn.Run(c.Context, ln)
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
		return nil, fmt.Errorf("--turn-listen needs IP:PORT: %w", err)
	}
	return &relay.Config{
		Listen: listen, PublicIP: ap.Addr(), MaxAllocsPerUser: c.Int("turn-quota-allocs"),
		UserBandwidth: c.Int("turn-quota-kbps") * 1000 / 8, AllowPrivatePeers: c.Bool("turn-allow-private-peers"),
		// A quarter of the descriptors, beside the control connections' half: a flood
		// of TURN-over-TCP connections is shed before it takes the supernode's.
		TCPMaxConns: connBudget(relay.DefaultTCPMaxConns, 1, 4),
	}, nil
}

// listenSTUN opens the STUN sockets: UDP on the advertised IP and port, plus the port
// above it and the same two ports on altIP when one is given.
func listenSTUN(advertise, altIP string) ([4]net.PacketConn, error) {
	ap, err := netip.ParseAddrPort(advertise)
	if err != nil {
		return [4]net.PacketConn{}, fmt.Errorf("STUN needs an IP:PORT advertised address (or --no-stun): %w", err)
	}
	var alt netip.Addr
	if altIP != "" {
		if alt, err = netip.ParseAddr(altIP); err != nil {
			return [4]net.PacketConn{}, fmt.Errorf("--stun-alt-ip: %w", err)
		}
	}
	return stunsrv.ListenUDP(ap, alt, ap.Port()+1)
}
