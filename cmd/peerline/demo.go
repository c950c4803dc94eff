package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/cmd/peerline/demo"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a whole local overlay on loopback and show it working",
		UsageText: "peerline demo [--supernodes N] [--json] [--verbose]\n\n" +
			"Examples:\n   peerline demo\n   peerline demo --json | jq .users",
		Description: "Starts a login server, N supernodes and two clients (alice and bob) in this\n" +
			"process on 127.0.0.1, registers both users, logs them in, waits until each is\n" +
			"attached to a supernode, has alice add bob as a buddy and find him, then stops\n" +
			"everything and removes its temporary state.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "supernodes", Value: 3, Usage: "how many supernodes to start"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "also print every role's log"},
			jsonFlag,
		},
		Action: func(c *cli.Context) error {
			var log *slog.Logger
			if c.Bool("verbose") {
				log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			}
			var progress io.Writer = c.App.Writer
			if c.Bool("json") {
				progress = nil
			}
			res, err := demo.Run(c.Context, demo.Options{Supernodes: c.Int("supernodes"), Logger: log, Progress: progress})
			if c.Bool("json") {
				if perr := printJSON(c.App.Writer, res); perr != nil {
					return perr
				}
			}
			if err != nil {
				return fmt.Errorf("demo failed: %w", err)
			}
			if !c.Bool("json") {
				fmt.Fprintf(c.App.Writer, "demo OK in %s\n", res.Elapsed)
			}
			return nil
		},
	}
}
