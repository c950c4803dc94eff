package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/hostcache"
	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/datadir"
	"github.com/peerline/peerline/internal/netcheck"
	"github.com/peerline/peerline/internal/portmap"
)

// netcheckSupernodes is how many of the host cache's best supernodes netcheck asks.
const netcheckSupernodes = 5

// netcheckCommand reports what this host's network allows.
func netcheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "netcheck",
		Usage: "report what the network allows: NAT, IPv4/IPv6, port mapping, latency, predicted call paths",
		UsageText: "peerline netcheck (--data DIR | --stun HOST:PORT ...) [--turn HOST:PORT ...] [--json]\n\n" +
			"Examples:\n" +
			"   peerline netcheck --data run/alice                  # alice's supernode and host cache\n" +
			"   peerline netcheck --stun 127.0.0.1:7101 --json --no-portmap",
		Description: "Runs, at once: the RFC 5780 NAT tests against the first supernode that supports them\n" +
			"(a supernode serves STUN on its own address), a STUN round trip to every supernode and\n" +
			"relay named, and a probe of the router for the port-mapping protocols PCP, NAT-PMP and\n" +
			"UPnP IGD (to the default gateway, or --gateway). Without --stun, the supernodes are the\n" +
			"supernode of the client running on --data and the best of its host cache (five in all).\n" +
			"Prints the NAT's mapping and filtering, hairpinning, whether IPv4 and IPv6 reach a\n" +
			"server, which port-mapping protocols answered, the latencies, and the path a call\n" +
			"from here would take to each kind of NAT.\n" +
			"Exits 1 when nothing answered at all.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Aliases: []string{"d"}, Usage: "client state `DIR` whose host cache names the supernodes", EnvVars: []string{"PEERLINE_DATA"}},
			&cli.StringSliceFlag{Name: "stun", Usage: "supernode or STUN server `HOST:PORT` to ask (repeatable; instead of the host cache)"},
			&cli.StringSliceFlag{Name: "turn", Usage: "relay `HOST:PORT` to time too (repeatable)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.DurationFlag{Name: "timeout", Usage: "how long each test waits for an answer", Value: 2 * time.Second},
			&cli.BoolFlag{Name: "no-portmap", Usage: "do not probe the router for port mapping"},
			&cli.StringFlag{Name: "gateway", Usage: "the router's `IP` for the port-mapping probe (default: the default route's gateway)"},
		},
		Action: func(c *cli.Context) error {
			cfg := netcheck.Config{
				Supernodes: c.StringSlice("stun"),
				Relays:     c.StringSlice("turn"),
				Timeout:    c.Duration("timeout"),
				Predict: func(mine, theirs string) string {
					return client.PredictPath(callsig.NAT{Classic: mine}, callsig.NAT{Classic: theirs})
				},
			}
			if len(cfg.Supernodes) == 0 {
				dir := c.String("data")
				if dir == "" {
					return usagef("give --data DIR (a client's state, whose host cache names supernodes) or --stun HOST:PORT")
				}
				// A client running on dir: its supernode first.
				ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
				var st client.Status
				if err := ctlDo(ctx, dir, ctl.Request{Cmd: client.CmdStatus}, &st); err == nil && st.Supernode != nil {
					cfg.Supernodes = append(cfg.Supernodes, st.Supernode.Addr)
				}
				cancel()
				cache, err := hostcache.Open(filepath.Join(dir, datadir.HostCacheFile), hostcache.Options{})
				if err != nil {
					return fmt.Errorf("host cache of %s: %w", dir, err)
				}
				for _, e := range cache.Ranked() {
					if len(cfg.Supernodes) == netcheckSupernodes {
						break
					}
					if !slices.Contains(cfg.Supernodes, e.Addr) {
						cfg.Supernodes = append(cfg.Supernodes, e.Addr)
					}
				}
				if len(cfg.Supernodes) == 0 {
					return fmt.Errorf("the host cache of %s names no supernode: run the client once, or give --stun HOST:PORT", dir)
				}
			}
			if !c.Bool("no-portmap") {
				cfg.PortMap = &portmap.Config{}
				if g := c.String("gateway"); g != "" {
					ip, err := netip.ParseAddr(g)
					if err != nil {
						return usagef("--gateway %q: want an IP address", g)
					}
					cfg.PortMap.Gateway = ip
				}
			}
			rep, err := netcheck.Run(c.Context, cfg)
			if err != nil && !errors.Is(err, netcheck.ErrNothingAnswered) {
				return err
			}
			if c.Bool("json") {
				if perr := printJSON(c.App.Writer, rep); perr != nil {
					return perr
				}
			} else {
				printNetcheck(c.App.Writer, rep)
			}
			if err != nil {
				return fmt.Errorf("nothing answered: no supernode or relay at %s over UDP, nor a supernode over TCP; are they running?",
					strings.Join(append(cfg.Supernodes, cfg.Relays...), ", "))
			}
			return nil
		},
	}
}

func printNetcheck(w io.Writer, r netcheck.Report) {
	yesNo := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	nat := r.NAT.Classic
	switch {
	case r.NAT.UDPBlocked && r.TCP:
		nat = "udp-blocked (a supernode answers over TCP only)"
	case r.NAT.MappedAddr == "":
		nat = "unknown (no supernode answered the NAT tests)"
	case r.NAT.Mapping != "":
		nat = fmt.Sprintf("%s (mapping %s, filtering %s)", r.NAT.Classic, r.NAT.Mapping, r.NAT.Filtering)
	}
	fmt.Fprintf(w, "NAT:             %s\n", nat)
	if r.NAT.MappedAddr != "" {
		fmt.Fprintf(w, "mapped address:  %s (from %s)\n", r.NAT.MappedAddr, r.NAT.LocalAddr)
	}
	if r.NAT.Hairpinning != nil {
		fmt.Fprintf(w, "hairpinning:     %s\n", yesNo(*r.NAT.Hairpinning))
	}
	fmt.Fprintf(w, "IPv4:            %s\n", yesNo(r.IPv4))
	v6 := yesNo(r.IPv6)
	if !r.IPv6Address {
		v6 = "no (this host has no global IPv6 address)"
	}
	fmt.Fprintf(w, "IPv6:            %s\n", v6)
	if pm := r.PortMapping; pm != nil {
		if pm.Error != "" {
			fmt.Fprintf(w, "port mapping:    not probed: %s\n", pm.Error)
		} else {
			fmt.Fprintf(w, "port mapping:    PCP %s, NAT-PMP %s, UPnP %s (router %s", yesNo(pm.PCP), yesNo(pm.NATPMP), yesNo(pm.UPnP), pm.Gateway)
			if pm.ExternalAddr != "" {
				fmt.Fprintf(w, ", external address %s", pm.ExternalAddr)
			}
			fmt.Fprintln(w, ")")
		}
	}
	fmt.Fprintln(w, "latency:")
	for _, l := range r.Latency {
		if l.Error != "" {
			fmt.Fprintf(w, "  %-9s %-24s %s\n", l.Kind, l.Server, l.Error)
			continue
		}
		fmt.Fprintf(w, "  %-9s %-24s %.1f ms\n", l.Kind, l.Server, l.RTTMs)
	}
	if len(r.Predicted) > 0 {
		fmt.Fprintln(w, "a call from here to a peer behind:")
		for _, k := range netcheck.Kinds {
			fmt.Fprintf(w, "  %-21s %s\n", k, r.Predicted[k])
		}
	}
}
