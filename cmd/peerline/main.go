// Command peerline runs every role of the Peerline overlay: the login server, supernodes,
// relays and clients, plus the commands people and scripts use to talk to a running client.
//
// Each subcommand is thin: it turns flags into a Config and runs New(cfg).Run(ctx) of the
// package that owns the role.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "peerline:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "peerline",
		Usage: "a peer-to-peer calling overlay: login server, supernodes, relays and clients",
		Description: "Run a whole local overlay with 'peerline demo'.\n" +
			"Run one role with 'peerline loginsrv', 'peerline supernode' or 'peerline client'.",
		Commands:        commands(),
		HideHelpCommand: true,
	}
}

// commands lists every subcommand; each lives in its own file.
func commands() []*cli.Command {
	return []*cli.Command{
		demoCommand(),
		loginsrvCommand(), supernodeCommand(), clientCommand(),
		registerCommand(), statusCommand(), buddyCommand(), searchCommand(), msgCommand(), inboxCommand(),
		natCommand(), stunCommand(), relayCommand(),
		callCommand(), answerCommand(), hangupCommand(), holdCommand(), callsCommand(),
	}
}
