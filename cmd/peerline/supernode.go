package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
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
	m := &metrics.Set{}
	sn, err := supernode.New(supernode.Config{
		Key: key, Name: c.String("name"), Advertise: adv,
		LoginAddr: ls.Addr, LoginKey: ls.Key, AdmitSecret: secret,
		KeepAlive: c.Duration("keepalive"), Logger: log, Metrics: m,
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
