package main

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
)

// usageError is a mistake in the command line (unknown flag, bad value, missing or extra
// argument): nothing was done. main prints it as one line, without the help text, and
// exits with exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// prepare readies cmd and its subcommands for the checks urfave does not make, in one
// place: usage errors in one line, required flags, flag values (log levels, negative
// durations and counts), and the number of arguments. urfave's own required-flag check
// prints the whole help, so required flags are checked here instead.
func prepare(cmds []*cli.Command) {
	// Flags are shared between commands (dataFlag), and between apps (tests build
	// several): find every required one first, and remember it.
	requiredMu.Lock()
	defer requiredMu.Unlock()
	required := requiredFlags
	var find func([]*cli.Command)
	find = func(cmds []*cli.Command) {
		for _, cmd := range cmds {
			for _, f := range cmd.Flags {
				if r, ok := f.(cli.RequiredFlag); ok && r.IsRequired() {
					required[f] = true
				}
			}
			find(cmd.Subcommands)
		}
	}
	find(cmds)
	for f := range required {
		switch f := f.(type) {
		case *cli.StringFlag:
			f.Required = false
		case *cli.StringSliceFlag:
			f.Required = false
		default:
			panic(fmt.Sprintf("prepare: required flag of type %T", f))
		}
	}
	for _, cmd := range cmds {
		prepareCommand(cmd, required)
	}
}

// requiredFlags holds every flag prepare found required (and then made optional for
// urfave); requiredMu protects it.
var (
	requiredMu    sync.Mutex
	requiredFlags = map[cli.Flag]bool{}
)

func prepareCommand(cmd *cli.Command, isRequired map[cli.Flag]bool) {
	var required []cli.Flag
	for _, f := range cmd.Flags {
		if isRequired[f] {
			required = append(required, f)
		}
	}
	cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error { return flagError(cmd, err) }
	action := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		if action == nil {
			// A command that only groups subcommands (buddy): none was named.
			if c.NArg() > 0 {
				return usagef("%s: unknown subcommand %q: 'peerline %s --help' lists them", cmd.Name, c.Args().First(), cmd.Name)
			}
			return cli.ShowSubcommandHelp(c)
		}
		if err := checkCommandLine(c, cmd, required); err != nil {
			return err
		}
		return action(c)
	}
	for _, sub := range cmd.Subcommands {
		prepareCommand(sub, isRequired)
	}
}

// checkCommandLine checks what urfave accepts but the command cannot use.
func checkCommandLine(c *cli.Context, cmd *cli.Command, required []cli.Flag) error {
	name := commandName(c, cmd)
	for _, f := range required {
		if !c.IsSet(f.Names()[0]) {
			return usagef("%s needs --%s %s", name, f.Names()[0], placeholder(f))
		}
	}
	for _, f := range cmd.Flags {
		n := f.Names()[0]
		if !c.IsSet(n) {
			continue
		}
		switch f.(type) {
		case *cli.DurationFlag:
			if d := c.Duration(n); d < 0 {
				return usagef("--%s %s: want a duration of 0 or more, such as 10s, 1m30s or 2h", n, d)
			}
		case *cli.IntFlag:
			if v := c.Int(n); v < 0 {
				return usagef("--%s %d: want a whole number, 0 or more", n, v)
			}
		}
	}
	if findFlag(cmd.Flags, "log-level") != nil {
		if _, err := parseLogLevel(c.String("log-level")); err != nil {
			return err
		}
	}
	// Arguments: ArgsUsage says how many ("" none, "[X]" at most one).
	switch au := cmd.ArgsUsage; {
	case au == "" && c.NArg() > 0:
		return usagef("%s takes no arguments, got %q", name, c.Args().First())
	case strings.HasPrefix(au, "[") && !strings.Contains(au, "...") && c.NArg() > 1:
		return usagef("%s takes at most one %s, got %q", name, strings.Trim(au, "[]"), c.Args().Slice())
	}
	return nil
}

// parseLogLevel accepts the names of slog's levels (any case), and nothing else.
func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, usagef("--log-level %q: want debug, info, warn or error", s)
}

// commandName is the command's path without the program's name: "status", "buddy add".
func commandName(c *cli.Context, cmd *cli.Command) string {
	var names []string
	for _, lc := range c.Lineage() {
		if lc.Command != nil && lc.Command.Name != "" && lc.Command.Name != c.App.Name {
			names = append([]string{lc.Command.Name}, names...)
		}
	}
	if len(names) == 0 || names[len(names)-1] != cmd.Name {
		names = append(names, cmd.Name)
	}
	return strings.Join(names, " ")
}

// placeholder is the flag's value name: the `WORD` of its usage, else VALUE.
func placeholder(f cli.Flag) string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		if m := backticked.FindStringSubmatch(d.GetUsage()); m != nil {
			return m[1]
		}
		if !d.TakesValue() {
			return ""
		}
	}
	return "VALUE"
}

var backticked = regexp.MustCompile("`([^`]+)`")

// Go's flag package words its errors so; urfave passes them on.
var (
	reUndefined = regexp.MustCompile(`^flag provided but not defined: -+(.+)$`)
	reInvalid   = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-+([^:]+): (.*)$`)
	reNeedsArg  = regexp.MustCompile(`^flag needs an argument: -+(.+)$`)
)

// flagError turns a parse error of cmd's flags (cmd nil: the app's) into one line that
// names the flag and the form it accepts.
func flagError(cmd *cli.Command, err error) error {
	var flags []cli.Flag
	where, help := "", "peerline --help"
	if cmd != nil {
		flags, where, help = cmd.Flags, cmd.Name+": ", "peerline "+cmd.Name+" --help"
	}
	msg := err.Error()
	if m := reUndefined.FindStringSubmatch(msg); m != nil {
		return usagef("%sunknown flag -%s%s ('%s' lists the flags)", where, dashes(m[1]), m[1], help)
	}
	if m := reNeedsArg.FindStringSubmatch(msg); m != nil {
		return usagef("%s--%s needs a value: %s", where, m[1], acceptedForm(findFlag(flags, m[1])))
	}
	if m := reInvalid.FindStringSubmatch(msg); m != nil {
		return usagef("%s--%s %q: want %s", where, m[2], m[1], acceptedForm(findFlag(flags, m[2])))
	}
	return usagef("%s%s ('%s' shows the usage)", where, msg, help)
}

func dashes(name string) string {
	if len(name) > 1 {
		return "-"
	}
	return ""
}

// acceptedForm says in words what a flag's value must look like.
func acceptedForm(f cli.Flag) string {
	switch f.(type) {
	case *cli.DurationFlag:
		return "a duration such as 10s, 1m30s or 2h"
	case *cli.IntFlag, *cli.Int64Flag:
		return "a whole number"
	case *cli.UintFlag, *cli.Uint64Flag:
		return "a whole number, 0 or more"
	case *cli.Float64Flag:
		return "a number such as 125000 or 1.5"
	case *cli.BoolFlag:
		return "no value, or =true or =false"
	case nil:
		return "a value"
	}
	return placeholder(f)
}
