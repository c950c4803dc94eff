package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/cmd/peerline/compose"
	"github.com/peerline/peerline/internal/secure"
)

func clientCommand() *cli.Command {
	return &cli.Command{
		Name:  "client",
		Usage: "run a user's client node: log in, attach to a supernode, stay reachable",
		UsageText: "peerline client --data DIR [--login HOST:PORT --login-key KEY --user NAME]\n\n" +
			"Example:\n" +
			"   PEERLINE_PASSWORD=alice-password peerline client --data run/alice --login 127.0.0.1:7000 \\\n" +
			"       --login-key-file run/login/login.pub --user alice --no-supernode --loopback-candidates\n" +
			"   peerline client --data run/alice --no-supernode --loopback-candidates   # later runs: no password",
		Description: "A client with a public address (confirmed by a dial-back), enough bandwidth, CPU,\n" +
			"memory and uptime promotes itself to a supernode; --no-supernode opts out, and\n" +
			"nothing else can make it one. 'peerline status' says which it is.\n" +
			"The password (from PEERLINE_PASSWORD, or a prompt) is needed only when the data\n" +
			"dir holds no valid credential: a client restarted within its credential's lifetime\n" +
			"logs back in without it. Other commands reach the running client through the\n" +
			"control socket DIR/peerline.sock: peerline status, buddy, search.",
		Flags: []cli.Flag{
			dataFlag, loginFlag, loginKeyFlag, loginKeyFileFlag,
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "account `NAME` (remembered in the data dir)"},
			&cli.IntFlag{Name: "parallel", Value: 3, Usage: "supernodes tried at once when attaching"},
			&cli.StringFlag{Name: "prefer-supernode", Usage: "try the supernode at `ADDR` first (before the host cache's ranking)"},
			&cli.DurationFlag{Name: "keepalive", Usage: "ping period (0 = what the supernode asks for)"},
			&cli.BoolFlag{Name: "json", Usage: "print events (buddy presence, messages) on stdout as JSON lines"},
			&cli.BoolFlag{Name: "no-supernode", Usage: "never promote this node to a supernode"},
			&cli.DurationFlag{Name: "promote-uptime", Value: 10 * time.Minute, Usage: "uptime before this node may promote itself"},
			&cli.Float64Flag{Name: "promote-min-upload", Value: 125_000, Usage: "upload bandwidth (bytes/s) required to promote"},
			&cli.IntFlag{Name: "promote-min-cpus", Value: 2, Usage: "CPUs required to promote"},
			&cli.Uint64Flag{Name: "promote-min-memory", Value: 1 << 30, Usage: "memory (bytes) required to promote"},
			&cli.DurationFlag{Name: "promote-check", Value: time.Minute, Usage: "how often the promotion conditions are checked"},
			&cli.BoolFlag{Name: "auto-answer", Usage: "answer incoming calls at once"},
			&cli.StringFlag{Name: "answer-send", Usage: "play `FILE` (.wav) into answered calls (default: a 440 Hz tone)"},
			&cli.StringFlag{Name: "record-dir", Usage: "record answered calls to `DIR`/<call id>.wav"},
			&cli.BoolFlag{Name: "no-mixing", Usage: "never mix conferences this client starts (a weak device): another participant mixes"},
			&cli.BoolFlag{Name: "loopback-candidates", Usage: "offer loopback addresses for calls (clients on one machine)"},
			&cli.StringFlag{Name: "turn", Usage: "relay calls through the TURN server at `ADDR` (host:port or turn:host:port?transport=tcp; any RFC 5766 server) instead of the supernodes'"},
			&cli.StringFlag{Name: "turn-user", Usage: "user name for --turn", EnvVars: []string{"PEERLINE_TURN_USER"}},
			&cli.StringFlag{Name: "turn-password", Usage: "password for --turn", EnvVars: []string{"PEERLINE_TURN_PASSWORD"}},
			&cli.BoolFlag{Name: "turn-tcp", Usage: "reach --turn over TCP"},
			&cli.DurationFlag{Name: "call-direct-delay", Hidden: true, Usage: "hold ICE checks back this long (tests of the move from relay to direct)"},
			&cli.StringFlag{Name: "source-ip", Hidden: true, Usage: "dial the login server and supernodes from this local `IP` (hundreds of clients on one machine's loopback, each its own source: e2e.TestProcessStorm)"},
			&cli.StringFlag{Name: "sn-listen", Usage: "`ADDR` the supernode role listens on once promoted (default: public IP, free port)"},
			logLevelFlag,
		},
		Action: runClient,
	}
}

// turnFlag reads --turn: host:port, or a TURN URL (turn:host:port?transport=tcp).
func turnFlag(c *cli.Context) ([]client.TURNServer, error) {
	v := c.String("turn")
	if v == "" {
		return nil, nil
	}
	srv := client.TURNServer{Addr: v, Username: c.String("turn-user"), Password: c.String("turn-password"), TCP: c.Bool("turn-tcp")}
	if rest, ok := strings.CutPrefix(v, "turn:"); ok {
		addr, query, _ := strings.Cut(rest, "?")
		srv.Addr = addr
		switch query {
		case "", "transport=udp":
		case "transport=tcp":
			srv.TCP = true
		default:
			return nil, usagef("--turn %s: unknown %q (want transport=udp or transport=tcp)", v, query)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			srv.Addr = net.JoinHostPort(addr, "3478")
		}
	}
	if _, _, err := net.SplitHostPort(srv.Addr); err != nil {
		return nil, usagef("--turn %s: want host:port or turn:host:port", v)
	}
	return []client.TURNServer{srv}, nil
}

func runClient(c *cli.Context) error {
	log := newLogger(c)
	dir := c.String("data")
	if r := dataRole(dir); r != "" && r != "client" {
		return fmt.Errorf("%s is the data dir of a %s: give the client a data dir of its own", dir, map[string]string{
			"supernode": "supernode", "loginsrv": "login server", "relay": "relay"}[r])
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ls, cf, err := loginServer(c)
	if err != nil {
		return err
	}
	if u := c.String("user"); u != "" {
		cf.User = u
	}
	turns, err := turnFlag(c)
	if err != nil {
		return err
	}
	var dialer secure.Dialer
	if v := c.String("source-ip"); v != "" {
		ip := net.ParseIP(v)
		if ip == nil {
			return usagef("--source-ip %q: want an IP address of this host", v)
		}
		dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	}
	var events chan client.Event
	if c.Bool("json") {
		events = make(chan client.Event, 64)
		enc := json.NewEncoder(c.App.Writer)
		go func() {
			for ev := range events {
				enc.Encode(ev)
			}
		}()
	}
	// A password read before the first login (there is no saved credential) is used
	// once; a later login (the credential expired) asks again.
	var early string
	cl, err := client.New(client.Config{
		Events:  events,
		DataDir: dir, Login: ls, User: cf.User,
		Password: func(ctx context.Context) (string, error) {
			if pw := early; pw != "" {
				early = ""
				return pw, nil
			}
			return readPassword(ctx, fmt.Sprintf("Password for %s: ", cf.User), false)
		},
		Dialer:         dialer,
		ParallelAttach: c.Int("parallel"),
		Prefer:         c.String("prefer-supernode"),
		Promote: client.PromoteConfig{
			Disabled: c.Bool("no-supernode"), MinUptime: c.Duration("promote-uptime"),
			MinUploadBps: c.Float64("promote-min-upload"), MinCPUs: c.Int("promote-min-cpus"),
			MinMemory: c.Uint64("promote-min-memory"), CheckInterval: c.Duration("promote-check"),
			ListenAddr: c.String("sn-listen"), NewSupernode: compose.Supernode(nil),
		},
		KeepAlive: c.Duration("keepalive"),
		Call: client.CallConfig{
			AutoAnswer: c.Bool("auto-answer"), AnswerSend: c.String("answer-send"),
			RecordDir: c.String("record-dir"), Loopback: c.Bool("loopback-candidates"),
			TestHookDirectDelay: c.Duration("call-direct-delay"),
			TURN:                turns,
			NoMixing:            c.Bool("no-mixing"),
		},
		Logger: log,
	})
	if errors.Is(err, client.ErrNoUser) {
		return errors.New("no user: give --user NAME on the first run")
	}
	if err != nil {
		return err
	}
	cf.User = cl.User()
	if err := saveClientFile(dir, cf); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, client.CredentialFile)); errors.Is(err, os.ErrNotExist) {
		// The first login needs the password: without one, say so now rather than
		// after the login server answers (or forever, when it does not).
		if early, err = readPassword(c.Context, fmt.Sprintf("Password for %s: ", cf.User), false); err != nil {
			return err
		}
	}
	err = cl.Run(c.Context)
	if errors.Is(err, client.ErrNeedPassword) {
		return errNoPassword
	}
	return err
}

func registerCommand() *cli.Command {
	return &cli.Command{
		Name:      "register",
		Usage:     "create an account on the login server",
		ArgsUsage: "NAME",
		UsageText: "peerline register --login HOST:PORT --login-key KEY NAME\n\n" +
			"Example:\n" +
			"   PEERLINE_PASSWORD=correct-horse peerline register --login 127.0.0.1:7000 --login-key-file run/login/login.pub dave",
		Description: "Names: 3-32 characters a-z 0-9 . _ -, starting with a letter. The password (at\n" +
			"least 8 characters) comes from PEERLINE_PASSWORD, a prompt, or one line on stdin; it\n" +
			"travels only inside TLS to the login server whose key you pinned.",
		Flags: []cli.Flag{
			loginFlag, loginKeyFlag, loginKeyFileFlag,
			&cli.StringFlag{Name: "data", Usage: "take --login and --login-key from this client data `DIR`"},
			jsonFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("register: give exactly one NAME, got %d arguments", c.NArg())
			}
			name := c.Args().First()
			ls, _, err := loginServer(c)
			if err != nil {
				return err
			}
			pw, err := readPassword(c.Context, "New password: ", true)
			if err != nil {
				return err
			}
			if err := client.Register(c.Context, nil, ls, name, pw); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"registered": name})
			}
			fmt.Fprintf(c.App.Writer, "registered %s\n", name)
			return nil
		},
	}
}
