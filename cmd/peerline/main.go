// Command peerline runs every role of the Peerline overlay: the login server, supernodes,
// relays and clients, plus the commands people and scripts use to talk to a running client.
//
// Each subcommand is thin: it turns flags into a Config and runs New(cfg).Run(ctx) of the
// package that owns the role.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/internal/version"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and failed
	exitUsage = 2 // the command line is wrong: nothing was done
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit code; errors go to stderr as one
// line, 'peerline: ...'.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	err := app.RunContext(ctx, reorderArgs(app, args))
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "peerline:", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFail
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "peerline",
		Usage: "a peer-to-peer calling overlay: login server, supernodes, relays and clients",
		Description: "Run a whole local overlay with 'peerline demo'.\n" +
			"Run one role with 'peerline loginsrv', 'peerline supernode' or 'peerline client'.\n" +
			"Flags may come before or after a command's arguments; '--' ends the flags.\n" +
			"Exit codes: 0 done, 1 failed, 2 wrong command line (nothing was done).\n" +
			"Every command's examples work against the by-hand set-up of README.md, run from\n" +
			"its directory (run/login, run/sn1, run/alice, run/bob, run/carol).",
		Version:         version.String(),
		Commands:        commands(),
		HideHelpCommand: true,
		// Errors are printed once, by run; urfave must not exit on its own.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return flagError(nil, err)
		},
		Action: func(c *cli.Context) error {
			if c.Args().First() == "help" {
				// 'peerline help [COMMAND]', as users type it: the same as --help.
				if c.NArg() == 1 {
					return cli.ShowAppHelp(c)
				}
				if findCommand(c.App.Commands, c.Args().Get(1)) == nil {
					return usagef("unknown command %q: 'peerline --help' lists them", c.Args().Get(1))
				}
				return cli.ShowCommandHelp(c, c.Args().Get(1))
			}
			if c.NArg() > 0 {
				return usagef("unknown command %q: 'peerline --help' lists them", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
	prepare(app.Commands)
	return app
}

// commands lists every subcommand; each lives in its own file.
func commands() []*cli.Command {
	return []*cli.Command{
		demoCommand(),
		loginsrvCommand(), supernodeCommand(), clientCommand(),
		registerCommand(), statusCommand(), buddyCommand(), searchCommand(), msgCommand(), inboxCommand(),
		natCommand(), netcheckCommand(), stunCommand(), relayCommand(),
		callCommand(), answerCommand(), hangupCommand(), holdCommand(), callsCommand(),
		versionCommand(),
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print the version of this peerline binary (module version, VCS revision, Go)",
		UsageText: "peerline version [--json]\n\nExample:\n   peerline version\n   peerline --version",
		Flags:     []cli.Flag{jsonFlag},
		Action: func(c *cli.Context) error {
			if c.Bool("json") {
				return printJSON(c.App.Writer, version.Get())
			}
			fmt.Fprintf(c.App.Writer, "peerline %s\n", version.String())
			return nil
		},
	}
}
