package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/internal/stunsrv"
)

// stunCommand runs a standalone RFC 5780 STUN server (the one supernodes embed).
func stunCommand() *cli.Command {
	return &cli.Command{
		Name:  "stun",
		Usage: "run a standalone RFC 5780 STUN server for NAT type detection",
		UsageText: "peerline stun --primary IP1:PORT [--alt IP2] [--alt-port PORT2]\n\n" +
			"Example:\n" +
			"   peerline stun --primary 203.0.113.10:3478 --alt 203.0.113.11 --alt-port 3479",
		Description: "Answers STUN Binding requests on IP1:PORT, IP1:PORT2, IP2:PORT and IP2:PORT2, with\n" +
			"XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS and CHANGE-REQUEST support, which is\n" +
			"what 'peerline nat' (and coturn's turnutils_natdiscovery) need to tell NAT kinds apart.\n" +
			"Both IPs must be assigned to this host. Without --alt it is a plain RFC 5389 server,\n" +
			"which only tells a client its mapped address. Runs until interrupted.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "primary", Usage: "primary `IP:PORT` to listen on", Required: true},
			&cli.StringFlag{Name: "alt", Usage: "alternate `IP` on this host (enables RFC 5780)"},
			&cli.UintFlag{Name: "alt-port", Usage: "alternate `PORT` (default: primary port + 1)"},
			&cli.StringFlag{Name: "software", Usage: "SOFTWARE attribute to send", Value: "peerline"},
			&cli.BoolFlag{Name: "verbose", Usage: "log every dropped datagram"},
		},
		Action: func(c *cli.Context) error {
			primary, err := netip.ParseAddrPort(c.String("primary"))
			if err != nil {
				return fmt.Errorf("--primary %q: want IP:PORT: %w", c.String("primary"), err)
			}
			var alt netip.Addr
			if s := c.String("alt"); s != "" {
				if alt, err = netip.ParseAddr(s); err != nil {
					return fmt.Errorf("--alt %q: want an IP: %w", s, err)
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
				return err
			}
			srv, err := stunsrv.New(stunsrv.Config{Conns: conns, Software: c.String("software"), Logger: log})
			if err != nil {
				for _, pc := range conns {
					if pc != nil {
						pc.Close()
					}
				}
				return err
			}
			var addrs []string
			for _, a := range srv.Addrs() {
				if a.IsValid() {
					addrs = append(addrs, a.String())
				}
			}
			log.Info("stun server listening", "rfc5780", srv.RFC5780(), "addrs", addrs)
			err = srv.Serve(c.Context)
			st := srv.Stats()
			log.Info("stun server stopped", "requests", st.Requests, "errors", st.Errors, "dropped", st.Dropped)
			return err
		},
	}
}
