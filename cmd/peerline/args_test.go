package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestReorderArgs(t *testing.T) {
	cases := []struct{ in, want string }{
		// The README's lines: flags after the callee's name.
		{"call --data run/alice bob --send in.wav --record out.wav --duration 10s --json",
			"call --data run/alice --send in.wav --record out.wav --duration 10s --json bob"},
		{"call --data run/alice bob --send - --record -", "call --data run/alice --send - --record - bob"},
		{"search --data run/alice b* --json", "search --data run/alice --json b*"},
		{"buddy add --data run/alice bob", "buddy add --data run/alice bob"},
		// A subcommand's flag given before the subcommand's name.
		{"buddy --data run/alice add bob", "buddy add --data run/alice bob"},
		{"buddy list --json --data d", "buddy list --json --data d"},
		// Flags first, names last, names in between: the names keep their order.
		{"call bob --data d carol --duration 1m dave", "call --data d --duration 1m bob carol dave"},
		// '--flag=value', single dash, aliases, repeated flags.
		{"call --data=d bob --json=false", "call --data=d --json=false bob"},
		{"status -d d --json", "status -d d --json"},
		{"nat --stun a:1 --json --stun b:2", "nat --stun a:1 --json --stun b:2"},
		{"demo -v --json", "demo -v --json"},
		// A value that looks like a flag is the value of the flag before it.
		{"call bob --duration -5s --data d", "call --duration -5s --data d bob"},
		{"call bob --send -", "call --send - bob"},
		// '-' alone is an argument; '--' ends the flags, and stays in front of an
		// argument that starts with '-'.
		{"msg --data d bob -", "msg --data d -- bob -"},
		{"msg --data d bob -- --not-a-flag", "msg --data d -- bob --not-a-flag"},
		{"msg bob -- hello --data d", "msg -- bob hello --data d"},
		// An unknown flag stays with the command, which refuses it; it takes no value.
		{"status --bogus x --data d", "status --data d --bogus x"},
		// A flag that wants a value comes last, so that the parser says it has none.
		{"call bob --data d --duration", "call --data d --duration"},
		// Help and version.
		{"call bob --help", "call --help"},
		{"buddy add bob -h", "buddy add -h"},
		{"--version", "--version"},
		{"version --json", "version --json"},
		// Not a command: left for the app to refuse.
		{"bogus --data d", "bogus --data d"},
		{"", ""},
	}
	app := newApp()
	for _, c := range cases {
		in := append([]string{"peerline"}, strings.Fields(c.in)...)
		got := strings.Join(reorderArgs(app, in)[1:], " ")
		if got != c.want {
			t.Errorf("reorder %q\n got %q\nwant %q", c.in, got, c.want)
		}
	}
	if got := reorderArgs(app, nil); len(got) != 0 {
		t.Errorf("reorder of no args: %q", got)
	}
}

// TestFlagsAfterArguments runs commands with flags after their arguments in process and
// checks that every flag took effect: the control socket is missing, so each must get
// as far as asking it, with the data dir given after the names.
func TestFlagsAfterArguments(t *testing.T) {
	dir := t.TempDir()
	for _, line := range []string{
		"call bob --data " + dir + " --duration 10s --json",
		"search b* --data " + dir + " --json",
		"buddy add bob --data " + dir,
		"msg bob hello --data " + dir,
		"hold --data " + dir + " --off",
	} {
		code, _, stderr := runLine(t, line)
		if code != exitFail || !strings.Contains(stderr, "nothing is running with data dir "+dir) {
			t.Errorf("%s: exit %d, %q; want exit 1 and the data dir's error", line, code, stderr)
		}
	}
}

// runLine runs one command line in process.
func runLine(t *testing.T, line string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"peerline"}, strings.Fields(line)...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ line, want string }{
		{"client --data " + dir + " --log-level loud", `--log-level "loud": want debug, info, warn or error`},
		{"relay --data " + dir + " --log-level=LOUD", `--log-level "LOUD": want debug, info, warn or error`},
		{"call bob --data " + dir + " --duration -5s", "--duration -5s: want a duration of 0 or more, such as 10s, 1m30s or 2h"},
		{"call bob --data " + dir + " --duration 5", `call: --duration "5": want a duration such as 10s, 1m30s or 2h`},
		{"call bob --data " + dir + " --duration", "call: --duration needs a value: a duration such as 10s, 1m30s or 2h"},
		{"client --data " + dir + " --parallel x", `client: --parallel "x": want a whole number`},
		{"client --data " + dir + " --parallel -1", "--parallel -1: want a whole number, 0 or more"},
		{"client --data " + dir + " --promote-min-upload x", `client: --promote-min-upload "x": want a number such as 125000 or 1.5`},
		{"stun --primary 127.0.0.1:1 --alt-port x", `stun: --alt-port "x": want a whole number, 0 or more`},
		{"status --data " + dir + " --json=maybe", `status: --json "maybe": want no value, or =true or =false`},
		{"status --data " + dir + " --bogus", "status: unknown flag --bogus ('peerline status --help' lists the flags)"},
		{"status", "status needs --data DIR"},
		{"buddy add bob", "buddy add needs --data DIR"},
		{"nat", "nat needs --stun HOST:PORT"},
		{"status --data " + dir + " extra", `status takes no arguments, got "extra"`},
		{"hangup --data " + dir + " a b", `hangup takes at most one CALL-ID, got ["a" "b"]`},
		{"search --data " + dir, "search: give exactly one NAME or PREFIX*, got 0 arguments"},
		{"msg --data " + dir + " bob", "msg: give NAME and TEXT (quote a TEXT of several words), got 1 arguments"},
		{"call --data " + dir, "call: give the NAME to call, or several for a conference"},
		{"call bob --data " + dir + " --send " + dir + "/nosuch.wav", "--send " + dir + "/nosuch.wav: no such file"},
		{"call bob --data " + dir + " --record " + dir + "/no/out.wav", "--record " + dir + "/no/out.wav: no such directory"},
		{"bogus", `unknown command "bogus": 'peerline --help' lists them`},
		{"help bogus", `unknown command "bogus": 'peerline --help' lists them`},
		{"--bogus", "unknown flag --bogus ('peerline --help' lists the flags)"},
		{"buddy bogus", `buddy: unknown subcommand "bogus": 'peerline buddy --help' lists them`},
		{"register --login 127.0.0.1:1 a b", "register: give exactly one NAME, got 2 arguments"},
	}
	for _, c := range cases {
		code, stdout, stderr := runLine(t, c.line)
		if code != exitUsage {
			t.Errorf("%s: exit %d, want %d (stderr %q)", c.line, code, exitUsage, stderr)
		}
		if !strings.HasPrefix(stderr, "peerline: ") || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: stderr %q, want it to contain %q", c.line, stderr, c.want)
		}
		// One line, and no help text.
		if strings.Count(stderr, "\n") != 1 || stdout != "" || strings.Contains(stderr+stdout, "USAGE") {
			t.Errorf("%s: more than one line of output:\nstdout %q\nstderr %q", c.line, stdout, stderr)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, line := range []string{"--help", "help", "help call", "call --help", "call bob --help", "buddy --help", "buddy add --help", "buddy"} {
		code, stdout, stderr := runLine(t, line)
		if code != exitOK || !strings.Contains(stdout, "USAGE") || stderr != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", line, code, stdout, stderr)
		}
	}
	for _, line := range []string{"version", "--version"} {
		code, stdout, _ := runLine(t, line)
		if code != exitOK || !strings.HasPrefix(stdout, "peerline ") || !strings.Contains(stdout, "go1.") {
			t.Errorf("%s: exit %d, stdout %q", line, code, stdout)
		}
	}
	code, stdout, _ := runLine(t, "version --json")
	if code != exitOK || !strings.Contains(stdout, `"module"`) {
		t.Errorf("version --json: exit %d, %q", code, stdout)
	}
}
