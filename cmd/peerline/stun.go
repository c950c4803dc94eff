package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/serve"
	"github.com/peerline/peerline/internal/stunsrv"
)

// stunCommand runs a standalone RFC 5780 STUN server (the one supernodes embed).
func stunCommand() *cli.Command {
	return &cli.Command{
		Name:  "stun",
		Usage: "run a standalone RFC 5780 STUN server for NAT type detection",
		UsageText: "peerline stun --primary IP1:PORT [--alt IP2] [--alt-port PORT2]\n\n" +
			"Example:\n" +
			"   peerline stun --primary 127.0.0.1:3478 --alt 127.0.0.2 --alt-port 3479",
		Description: "Answers STUN Binding requests on IP1:PORT, IP1:PORT2, IP2:PORT and IP2:PORT2, with\n" +
			"XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS and CHANGE-REQUEST support, which is\n" +
			"what 'peerline nat' (and coturn's turnutils_natdiscovery) need to tell NAT kinds apart.\n" +
			"Both IPs must be assigned to this host. Without --alt it is a plain RFC 5389 server,\n" +
			"which only tells a client its mapped address. Binding requests over TCP are answered\n" +
			"on IP1:PORT too (unless --no-tcp). Runs until interrupted.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "primary", Usage: "primary `IP:PORT` to listen on", Required: true},
			&cli.StringFlag{Name: "alt", Usage: "alternate `IP` on this host (enables RFC 5780)"},
			&cli.UintFlag{Name: "alt-port", Usage: "alternate `PORT` (default: primary port + 1)"},
			&cli.StringFlag{Name: "software", Usage: "SOFTWARE attribute to send", Value: "peerline"},
			&cli.BoolFlag{Name: "verbose", Usage: "log every dropped datagram"},
			&cli.BoolFlag{Name: "no-tcp", Usage: "do not serve STUN over TCP on the primary address"},
		},
		Action: func(c *cli.Context) error {
			primary, err := netip.ParseAddrPort(c.String("primary"))
			if err != nil {
				return usagef("--primary %q: want IP:PORT", c.String("primary"))
			}
			var alt netip.Addr
			if s := c.String("alt"); s != "" {
				if alt, err = netip.ParseAddr(s); err != nil {
					return usagef("--alt %q: want an IP address", s)
				}
			}
			altPort := uint16(c.Uint("alt-port"))
			if altPort == 0 {
				altPort = primary.Port() + 1
			}
			level := slog.LevelInfo
			if c.Bool("verbose") {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			conns, err := stunsrv.ListenUDP(primary, alt, altPort)
			if err != nil {
				return fmt.Errorf("%w (the addresses come from --primary, --alt and --alt-port)", err)
			}
			m := new(metrics.Set)
			srv, err := stunsrv.New(stunsrv.Config{Conns: conns, Software: c.String("software"), Logger: log, Metrics: m})
			if err != nil {
				for _, pc := range conns {
					if pc != nil {
						pc.Close()
					}
				}
				return err
			}
			// STUN over TCP on the primary address (RFC 5389 section 7.2.2): Binding
			// requests only. It also tells 'peerline nat' that the server is up when
			// nothing comes back over UDP, i.e. that UDP is blocked on the way.
			var tcpLn net.Listener
			tcpDone := make(chan struct{})
			if !c.Bool("no-tcp") {
				if tcpLn, err = net.Listen("tcp", primary.String()); err != nil {
					srv.Close()
					return fmt.Errorf("--primary %s: STUN over TCP: %w (or give --no-tcp)", primary, err)
				}
				go func() {
					defer close(tcpDone)
					serveSTUNTCP(c.Context, tcpLn, srv, m)
				}()
			}
			var addrs []string
			for _, a := range srv.Addrs() {
				if a.IsValid() {
					addrs = append(addrs, a.String())
				}
			}
			log.Info("stun server listening", "rfc5780", srv.RFC5780(), "addrs", addrs)
			err = srv.Serve(c.Context)
			if tcpLn != nil {
				tcpLn.Close() // Serve may end before ctx does
				<-tcpDone
			}
			st := srv.Stats()
			log.Info("stun server stopped", "requests", st.Requests, "errors", st.Errors, "dropped", st.Dropped, "counters", m.Snapshot())
			return err
		},
	}
}

// STUN over TCP: limits of the listener.
const (
	stunTCPMaxConns = 64              // connections served at once; more are closed at once
	stunTCPIdle     = 5 * time.Second // a connection must send its request within this
	stunTCPMaxMsg   = 1280            // bytes of one request, header included
)

// serveSTUNTCP answers one Binding request per TCP connection on ln until ctx ends.
func serveSTUNTCP(ctx context.Context, ln net.Listener, srv *stunsrv.Server, m metrics.Counter) {
	// Nobody authenticates to STUN: no reserved slots, and answerSTUNTCP's own deadline
	// bounds each connection. One address may hold an eighth of the slots.
	gate := serve.NewGate(serve.Config{
		Max: stunTCPMaxConns, PerAddr: stunTCPMaxConns / 8, PerPrefix: stunTCPMaxConns / 2,
		Reserve: -1, AuthTimeout: -1, Counter: m,
	})
	gate.Serve(ctx, ln, func(_ context.Context, conn net.Conn) { answerSTUNTCP(conn, srv) })
}

// answerSTUNTCP reads one STUN message (20-byte header, then the length it gives) and
// writes the server's answer back on the same connection.
func answerSTUNTCP(conn net.Conn, srv *stunsrv.Server) {
	conn.SetDeadline(time.Now().Add(stunTCPIdle))
	msg, err := readSTUNTCP(conn)
	if err != nil {
		return
	}
	src, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		return
	}
	resp, out, dst, ok := srv.Handle(msg, src, 0)
	if !ok || out != 0 || dst != src {
		// Not STUN, or a CHANGE-REQUEST that TCP cannot honour: say nothing.
		return
	}
	conn.Write(resp)
}

var errSTUNTCPFrame = errors.New("stun over TCP: message longer than 1280 bytes or not 4-byte aligned")

// readSTUNTCP reads one STUN message from a TCP stream: the 20-byte header, then the
// attribute bytes its length field gives (a multiple of 4, at most stunTCPMaxMsg in all).
func readSTUNTCP(r io.Reader) ([]byte, error) {
	var hdr [20]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	if 20+n > stunTCPMaxMsg || n%4 != 0 {
		return nil, errSTUNTCPFrame
	}
	msg := make([]byte, 20+n)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r, msg[20:]); err != nil {
		return nil, err
	}
	return msg, nil
}
