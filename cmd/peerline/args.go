package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// urfave/cli v2 stops parsing flags at a command's first argument, so
// 'peerline call --data a bob --send x' would take '--send' for a second callee.
// reorderArgs moves every flag in front of the arguments of the command it belongs to
// before the app parses them, so that flags work before and after arguments, as users
// type them (git, kubectl and tailscale allow it too).
//
// The rules:
//   - the first argument that names a subcommand of the current command selects it; the
//     rest belongs to that subcommand;
//   - a flag is '-name' or '--name' ('-name=value' carries its value); a flag that takes a
//     value (every flag but bool flags) takes the next token as its value, whatever it
//     looks like (so '--duration -5s' and '--send -' work);
//   - '-' alone is an argument (stdin or stdout), not a flag;
//   - '--' ends the flags: everything after it is an argument;
//   - a flag goes to the deepest command on the path that defines it; a flag nobody
//     defines goes to the last command, whose parser then refuses it by name;
//   - arguments keep their order; when one of them starts with '-' the output puts '--'
//     before them so that the parser does not take it for a flag;
//   - a last flag that wants a value and has none goes last, without the arguments, so
//     that the parser says it needs a value; with -h or --help the arguments are dropped.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) == 0 {
		return args
	}
	// The command path: the app itself (level 0), then each selected subcommand.
	type level struct {
		name  string // "" for the app
		flags []cli.Flag
		subs  []*cli.Command
		out   []string // flags (with values) placed at this level
	}
	root := &level{flags: append([]cli.Flag{cli.HelpFlag, cli.VersionFlag}, app.Flags...), subs: app.Commands}
	path := []*level{root}
	var positional, pending []string
	var dangling string // a last flag that wants a value and has none
	help := false
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		tok := rest[i]
		cur := path[len(path)-1]
		if tok == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if !isFlagToken(tok) {
			if len(positional) == 0 {
				if sub := findCommand(cur.subs, tok); sub != nil {
					path = append(path, &level{name: tok, flags: withHelp(sub.Flags), subs: sub.Subcommands})
					continue
				}
			}
			positional = append(positional, tok)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(tok, "-"), "=")
		// The deepest level that defines the flag owns it. A flag that only a
		// subcommand further down defines ('buddy --data D add') waits for the last
		// command on the path.
		owner := &pending
		var def cli.Flag
		for j := len(path) - 1; j >= 0; j-- {
			if f := findFlag(path[j].flags, name); f != nil {
				owner, def = &path[j].out, f
				break
			}
		}
		if def == nil {
			def = findFlagBelow(cur.subs, name, 8)
		}
		if name == "help" || name == "h" {
			help = true
		}
		if !hasValue && takesValue(def) {
			if i+1 == len(rest) {
				dangling = tok
				break
			}
			*owner = append(*owner, tok, rest[i+1])
			i++
			continue
		}
		*owner = append(*owner, tok)
	}
	if len(path) == 1 {
		// No command named: leave the line as it is for the app to refuse.
		return args
	}
	last := path[len(path)-1]
	last.out = append(last.out, pending...)
	out := []string{args[0]}
	for _, l := range path {
		if l.name != "" {
			out = append(out, l.name)
		}
		out = append(out, l.out...)
	}
	if dangling != "" || help {
		// A flag that wants a value and has none must come last, with no argument
		// after it for the parser to take as its value; help has no use for arguments
		// (urfave would look for a help topic named like the first).
		if dangling != "" {
			out = append(out, dangling)
		}
		return out
	}
	for _, p := range positional {
		if strings.HasPrefix(p, "-") {
			out = append(out, "--")
			break
		}
	}
	return append(out, positional...)
}

// isFlagToken reports whether tok is a flag: it starts with '-' and is neither '-' nor
// '--'.
func isFlagToken(tok string) bool {
	return len(tok) > 1 && tok[0] == '-' && tok != "--"
}

func withHelp(flags []cli.Flag) []cli.Flag {
	return append([]cli.Flag{cli.HelpFlag}, flags...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// findFlagBelow looks for the flag called name in cmds and their subcommands, depth
// levels down at most.
func findFlagBelow(cmds []*cli.Command, name string, depth int) cli.Flag {
	if depth == 0 {
		return nil
	}
	for _, c := range cmds {
		if f := findFlag(c.Flags, name); f != nil {
			return f
		}
		if f := findFlagBelow(c.Subcommands, name, depth-1); f != nil {
			return f
		}
	}
	return nil
}

// takesValue reports whether f needs a value after it; an unknown flag (nil) is taken
// to need none, so that it cannot swallow an argument: the parser refuses it anyway.
func takesValue(f cli.Flag) bool {
	if f == nil {
		return false
	}
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.TakesValue()
	}
	return false
}
