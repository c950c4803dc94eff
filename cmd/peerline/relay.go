package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/relay"
)

// relaySecretFile is where 'peerline relay' keeps its TURN secret when none is given.
const relaySecretFile = "turn.secret"

// relayCommand runs a standalone TURN relay (the one supernodes can embed).
func relayCommand() *cli.Command {
	return &cli.Command{
		Name:  "relay",
		Usage: "run a TURN relay (RFC 5766/8656) for calls whose NATs defeat hole punching",
		UsageText: "peerline relay --data DIR [--listen HOST:PORT] [--public-ip IP] [--secret-file FILE]\n\n" +
			"Example:\n" +
			"   peerline relay --data run/relay --listen 127.0.0.1:3480 --public-ip 127.0.0.1 \\\n" +
			"       --secret-file run/login/turn.secret --port-range 49152-65535 --quota-allocs 4 --quota-kbps 2000",
		Description: "Serves TURN over UDP (on --listeners sockets sharing the port) and over TCP on the same\n" +
			"port. Clients authenticate with short-lived TURN REST API credentials: username\n" +
			"'<unix expiry>:<user>', password base64(HMAC-SHA1(secret, username)), which the login\n" +
			"server issues with the secret it shares with the relays (coturn's --use-auth-secret).\n" +
			"The secret comes from --secret-file, else PEERLINE_TURN_SECRET, else DIR/turn.secret,\n" +
			"which is created with a random secret if missing. Peers on loopback and private\n" +
			"networks are refused unless --allow-private-peers. Runs until interrupted.",
		Flags: []cli.Flag{
			dataFlag,
			&cli.StringFlag{Name: "listen", Value: relay.DefaultListen, Usage: "UDP and TCP `HOST:PORT` to listen on"},
			&cli.StringFlag{Name: "public-ip", Usage: "public IPv4 `ADDRESS` of the relayed ports (default: the --listen IP)"},
			&cli.StringFlag{Name: "relay-ip", Usage: "local `ADDRESS` the relayed ports bind to (default: the --listen IP)"},
			&cli.StringFlag{Name: "secret-file", Usage: "read the secret shared with the login server from `FILE`"},
			&cli.StringFlag{Name: "realm", Value: relay.DefaultRealm, Usage: "TURN `REALM`"},
			&cli.IntFlag{Name: "listeners", Usage: "UDP sockets on the port, one read loop each (0 = one per CPU)"},
			&cli.StringFlag{Name: "port-range", Value: fmt.Sprintf("%d-%d", relay.DefaultMinPort, relay.DefaultMaxPort), Usage: "relayed ports, `MIN-MAX`"},
			&cli.IntFlag{Name: "quota-allocs", Usage: "allocations one user may hold at once (0 = no limit)"},
			&cli.IntFlag{Name: "quota-kbps", Usage: "relayed kilobits per second per user, both directions (0 = no limit)"},
			&cli.BoolFlag{Name: "allow-private-peers", Usage: "let clients relay to loopback and private addresses (tests, labs)"},
			&cli.BoolFlag{Name: "no-tcp", Usage: "do not serve TURN over TCP"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go profiles on `HOST:PORT` (/debug/pprof/)"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "serve Prometheus counters at http://`ADDR`/metrics, e.g. 127.0.0.1:9478 (off by default)"},
			jsonFlag, logLevelFlag,
		},
		Action: runRelay,
	}
}

func runRelay(c *cli.Context) error {
	log := newLogger(c)
	dir := c.String("data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfg := relay.Config{
		Realm:             c.String("realm"),
		Listen:            c.String("listen"),
		NoTCP:             c.Bool("no-tcp"),
		Listeners:         c.Int("listeners"),
		MaxAllocsPerUser:  c.Int("quota-allocs"),
		UserBandwidth:     c.Int("quota-kbps") * 1000 / 8,
		AllowPrivatePeers: c.Bool("allow-private-peers"),
		TCPMaxConns:       connBudget(relay.DefaultTCPMaxConns, 3, 4), // shed before descriptors run out
		Logger:            log,
	}
	var err error
	for flag, dst := range map[string]*netip.Addr{"public-ip": &cfg.PublicIP, "relay-ip": &cfg.RelayIP} {
		if s := c.String(flag); s != "" {
			if *dst, err = netip.ParseAddr(s); err != nil {
				return usagef("--%s %q: want an IP address", flag, s)
			}
		}
	}
	if cfg.MinPort, cfg.MaxPort, err = parsePortRange(c.String("port-range")); err != nil {
		return err
	}
	// The flags are right: now the secret, which may be created.
	if cfg.Secret, err = relaySecret(c, dir); err != nil {
		return err
	}
	srv, err := relay.New(cfg)
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		// New binds the sockets: a port in use names the flag.
		return fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	if err != nil {
		return err
	}
	// The sockets are Run's from here: it runs from the start, and a failure below ends
	// it through its context.
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	stopRelay := func() { cancel(); <-ran }
	if addr := c.String("pprof"); addr != "" {
		if err := servePprof(addr); err != nil {
			stopRelay()
			return err
		}
	}
	var metricsAddr string
	if addr := c.String("metrics-listen"); addr != "" {
		bound, stop, err := serveMetrics(addr, func(w io.Writer) { srv.Metrics().WritePrometheus(w, "peerline_relay") })
		if err != nil {
			stopRelay()
			return err
		}
		defer stop()
		metricsAddr = bound
	}
	if c.Bool("json") {
		json.NewEncoder(os.Stdout).Encode(map[string]any{
			"udp": srv.Addr().String(), "tcp": srv.TCPAddr().String(), "pid": os.Getpid(),
			"realm": c.String("realm"), "public_ip": srv.PublicIP().String(), "metrics": metricsAddr,
		})
	}
	err = <-ran
	m := srv.Metrics()
	log.Info("relay stopped", "allocations", m.Get(relay.MetricAllocations),
		"relayed_packets", m.Get(relay.MetricRelayedPackets), "dropped", m.Get(relay.MetricDroppedPackets))
	return err
}

// relaySecret reads the TURN secret from --secret-file, PEERLINE_TURN_SECRET, or the data
// dir, where it creates one if there is none.
func relaySecret(c *cli.Context, dir string) ([]byte, error) {
	path := c.String("secret-file")
	if path == "" {
		if s := strings.TrimSpace(os.Getenv("PEERLINE_TURN_SECRET")); s != "" {
			return []byte(s), nil
		}
		path = filepath.Join(dir, relaySecretFile)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(path, []byte(randomSecret()+"\n"), 0o600); err != nil {
				return nil, err
			}
			newLogger(c).Warn("created a TURN secret: give the login server the same one", "file", path)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil, fmt.Errorf("%s: the TURN secret is empty", path)
	}
	return []byte(s), nil
}

func parsePortRange(s string) (lo, hi uint16, err error) {
	a, b, ok := strings.Cut(s, "-")
	x, err1 := strconv.ParseUint(a, 10, 16)
	y, err2 := strconv.ParseUint(b, 10, 16)
	if !ok || err1 != nil || err2 != nil || x == 0 || x > y {
		return 0, 0, usagef("--port-range %q: want MIN-MAX, such as 49152-65535", s)
	}
	return uint16(x), uint16(y), nil
}

// servePprof serves the Go profiles on addr, on a mux of their own.
func servePprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	go http.Serve(ln, mux)
	return nil
}
