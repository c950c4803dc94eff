package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/internal/natdetect"
	"github.com/peerline/peerline/internal/netcheck"
)

// natCommand detects the NAT type in front of this host with an RFC 5780 STUN server.
func natCommand() *cli.Command {
	return &cli.Command{
		Name:  "nat",
		Usage: "detect the NAT type (mapping, filtering, hairpinning) with an RFC 5780 STUN server",
		UsageText: "peerline nat --stun HOST:PORT [--stun HOST2:PORT ...] [--local ADDR] [--json]\n\n" +
			"Examples:\n" +
			"   peerline nat --stun 127.0.0.1:7101                 # a supernode's STUN server\n" +
			"   peerline nat --stun 127.0.0.1:7102 --json --lifetime-max 2s",
		Description: "Runs the RFC 5780 tests against a STUN server that has two IPs and two ports (run one\n" +
			"with 'peerline stun --primary IP1:PORT --alt IP2', or use a supernode) and prints the\n" +
			"NAT's mapping and filtering behaviour (RFC 4787), hairpinning, whether UDP is blocked,\n" +
			"and the classic name: open, full cone, restricted cone, port-restricted cone, symmetric\n" +
			"or udp-blocked. Takes about one --timeout (at most four); --lifetime-max D adds about 2 x D.\n" +
			"UDP counts as blocked when no server answers over UDP but one accepts a TCP connection\n" +
			"on its port ('peerline stun', supernodes and coturn all do); when nothing answers\n" +
			"either way, the server is not running (or not reachable): that is an error, exit 1.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "stun", Usage: "STUN server `HOST:PORT` (repeatable; the first that supports RFC 5780 is used)", Required: true},
			&cli.StringFlag{Name: "local", Usage: "local `ADDR` (IP:PORT) to test from", Value: "0.0.0.0:0"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			&cli.DurationFlag{Name: "timeout", Usage: "how long each test waits for an answer", Value: 2 * time.Second},
			&cli.DurationFlag{Name: "lifetime-max", Usage: "also measure the mapping lifetime, trying idle times up to `D` (0: off)"},
			&cli.BoolFlag{Name: "no-hairpin", Usage: "skip the hairpinning test"},
		},
		Action: func(c *cli.Context) error {
			local, err := netip.ParseAddrPort(c.String("local"))
			if err != nil {
				return usagef("--local %q: want IP:PORT, such as 0.0.0.0:0", c.String("local"))
			}
			conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
			if err != nil {
				return fmt.Errorf("listen on %s: %w", local, err)
			}
			defer conn.Close()
			opts := natdetect.Options{Servers: c.StringSlice("stun"), Timeout: c.Duration("timeout")}
			second := func() (net.PacketConn, error) {
				return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), 0)))
			}
			if !c.Bool("no-hairpin") {
				hp, err := second()
				if err != nil {
					return fmt.Errorf("open hairpin socket: %w", err)
				}
				defer hp.Close()
				opts.HairpinConn = hp
			}
			if d := c.Duration("lifetime-max"); d > 0 {
				lt, err := second()
				if err != nil {
					return fmt.Errorf("open lifetime socket: %w", err)
				}
				defer lt.Close()
				opts.LifetimeConn, opts.LifetimeMax = lt, d
			}
			res, derr := natdetect.Detect(c.Context, conn, opts)
			if derr != nil && !errors.Is(derr, natdetect.ErrNoRFC5780) {
				return derr
			}
			if res.UDPBlocked {
				// No answer over UDP is a NAT type only when the server is there: a
				// NAT or firewall that blocks UDP still lets TCP through to it.
				if err := serverAlive(c, opts.Servers, opts.Timeout); err != nil {
					return err
				}
			}
			if c.Bool("json") {
				err = printNATJSON(c.App.Writer, res, opts.LifetimeMax > 0)
			} else {
				printNATText(c.App.Writer, res, opts.LifetimeMax > 0)
			}
			if derr != nil {
				return derr
			}
			return err
		},
	}
}

func printNATJSON(w io.Writer, r natdetect.Result, lifetimeMeasured bool) error {
	out := struct {
		natdetect.Result
		MappingLifetimeMS *int64 `json:"mapping_lifetime_ms,omitempty"`
	}{Result: r}
	if lifetimeMeasured {
		ms := r.MappingLifetime.Milliseconds()
		out.MappingLifetimeMS = &ms
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func printNATText(w io.Writer, r natdetect.Result, lifetimeMeasured bool) {
	yesNo := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	fmt.Fprintf(w, "NAT type:         %s\n", or(r.Classic, "unknown"))
	fmt.Fprintf(w, "UDP blocked:      %s\n", yesNo(r.UDPBlocked))
	if r.UDPBlocked {
		fmt.Fprintf(w, "local address:    %s\n", r.LocalAddr)
		return
	}
	fmt.Fprintf(w, "public address:   %s\n", yesNo(r.Public))
	fmt.Fprintf(w, "mapping:          %s\n", or(string(r.Mapping), "unknown"))
	fmt.Fprintf(w, "filtering:        %s\n", or(string(r.Filtering), "unknown"))
	hp := "not tested"
	if r.Hairpinning != nil {
		hp = yesNo(*r.Hairpinning)
	}
	fmt.Fprintf(w, "hairpinning:      %s\n", hp)
	lt := "not measured"
	if lifetimeMeasured {
		lt = fmt.Sprintf("at least %s", r.MappingLifetime)
	}
	fmt.Fprintf(w, "mapping lifetime: %s\n", lt)
	fmt.Fprintf(w, "mapped address:   %s\n", r.MappedAddr)
	fmt.Fprintf(w, "local address:    %s\n", r.LocalAddr)
	fmt.Fprintf(w, "server:           %s (other address %s)\n", r.Server, or(r.OtherAddr, "none"))
}

// serverAlive checks that at least one of the STUN servers accepts a TCP connection on its
// port, so that silence over UDP means UDP is blocked and not that no server is there.
func serverAlive(c *cli.Context, servers []string, timeout time.Duration) error {
	if err := netcheck.ServerAlive(c.Context, nil, servers, timeout); err != nil {
		return fmt.Errorf("no STUN server answered: nothing at %s over UDP, nor over TCP (%v); is the server running? (no answer is not a NAT type)",
			strings.Join(servers, ", "), err)
	}
	return nil
}
