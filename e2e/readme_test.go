package e2e

// TestReadmeByHand runs, with the real binary on loopback, every command line of the
// README's by-hand section and every example of every command's --help, as a new user
// would type them, and checks that each does what it says. The lines are read from the
// README and from the help text themselves, and a line no rule here recognises fails the
// test: the README and the help cannot drift from what works.
//
// What differs from a person at a terminal, and why:
//   - './peerline' and 'peerline' are the binary this test built (a symlink in the run
//     directory, which is first on PATH);
//   - the fixed ports of the text (7000, 7101, 7102, 3478, 3479, 3480) are replaced by free
//     ports below the ephemeral range, adjacent where the text's are adjacent (7101 and
//     7102, 3478 and 3479), so that test runs cannot clash with each other or with a real
//     set-up on this machine;
//   - lines that start a role (loginsrv, supernode, client, stun, relay) run in the
//     background, "in their own terminal", and the next line waits until the role is
//     ready (listening, admitted, attached with its NAT type known), as a person waits for
//     the log line; a role started again with the same data dir (a --help example) first
//     stops the one running there;
//   - there is no sound card: in 'arecord ... | peerline call ... | aplay ...' the
//     peerline command runs with generated 8 kHz s16le noise on stdin instead of arecord's,
//     and its stdout is captured and checked instead of played by aplay;
//   - help examples that need a call in progress or ringing ("while alice is in a call",
//     "while bob calls alice", as their help says) get one started by the test first;
//   - 'jq' is run when installed; without it, the JSON it would read is checked here.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
)

// cmdLine is one command line of the README or of a --help example.
type cmdLine struct {
	text  string // as written, continuation lines joined
	where string // "README.md line N" or "peerline X --help"
	ctx   string // the help's note on the example, e.g. "while alice is in a call"
}

// readmeByHandLines extracts the lines of the ```sh blocks of the README's section
// "Running each role by hand", joining backslash-continued lines and dropping comments.
func readmeByHandLines(t *testing.T, readme string) []cmdLine {
	t.Helper()
	const section = "## Running each role by hand"
	i := strings.Index(readme, section)
	if i < 0 {
		t.Fatalf("README.md has no section %q", section)
	}
	start := strings.Count(readme[:i], "\n") + 1
	body := readme[i+len(section):]
	if j := strings.Index(body, "\n## "); j >= 0 {
		body = body[:j]
	}
	var out []cmdLine
	in, pending, pendingLine := false, "", 0
	for n, l := range strings.Split(body, "\n") {
		lineNo := start + n
		switch {
		case strings.HasPrefix(l, "```sh"):
			in = true
			continue
		case strings.HasPrefix(l, "```"):
			if pending != "" {
				t.Fatalf("README.md line %d: a continued line runs into the end of the block", lineNo)
			}
			in = false
			continue
		}
		if !in {
			continue
		}
		if pending == "" {
			pendingLine = lineNo
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			pending += strings.TrimSpace(s) + " "
			continue
		}
		full := strings.TrimSpace(pending + strings.TrimSpace(l))
		pending = ""
		if full == "" || strings.HasPrefix(full, "#") {
			continue
		}
		out = append(out, cmdLine{text: full, where: fmt.Sprintf("README.md line %d", pendingLine)})
	}
	if len(out) < 20 {
		t.Fatalf("found only %d command lines in the README's by-hand section", len(out))
	}
	return out
}

var (
	reHelpExamples = regexp.MustCompile(`^\s+Examples?(?: \((.*)\))?:$`)
	reHelpCommand  = regexp.MustCompile(`^   ([a-z][a-z0-9-]*)(?:, [a-z]+)?\s{2,}\S`)
)

// helpExamples runs 'peerline PATH --help' for every command and subcommand and extracts
// the lines of their Example(s) paragraphs.
func helpExamples(t *testing.T, bin string, path []string) []cmdLine {
	t.Helper()
	out, err := exec.Command(bin, append(append([]string{}, path...), "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("peerline %s --help: %v\n%s", strings.Join(path, " "), err, out)
	}
	where := "peerline " + strings.Join(append(append([]string{}, path...), "--help"), " ")
	var lines []cmdLine
	var subs []string
	mode, ctx, pending := "", "", ""
	for _, l := range strings.Split(string(out), "\n") {
		if m := reHelpExamples.FindStringSubmatch(l); m != nil {
			mode, ctx = "examples", m[1]
			continue
		}
		if l == "COMMANDS:" {
			mode = "commands"
			continue
		}
		if l == "" || !strings.HasPrefix(l, " ") {
			if pending != "" {
				t.Fatalf("%s: a continued example line runs into the end of the paragraph", where)
			}
			mode = ""
			continue
		}
		switch mode {
		case "examples":
			if s, ok := strings.CutSuffix(l, "\\"); ok {
				pending += strings.TrimSpace(s) + " "
				continue
			}
			full := strings.TrimSpace(pending + strings.TrimSpace(l))
			pending = ""
			lines = append(lines, cmdLine{text: full, where: where, ctx: ctx})
		case "commands":
			if m := reHelpCommand.FindStringSubmatch(l); m != nil && m[1] != "help" {
				subs = append(subs, m[1])
			}
		}
	}
	for _, s := range subs {
		lines = append(lines, helpExamples(t, bin, append(append([]string{}, path...), s))...)
	}
	return lines
}

// portMap replaces the text's fixed ports by free ones.
type portMap map[string]string

var reTextPort = regexp.MustCompile(`\b(7000|7101|7102|3478|3479|3480)\b`)

func (p portMap) apply(s string) string {
	return reTextPort.ReplaceAllStringFunc(s, func(port string) string { return p[port] })
}

// bgProc is a role started in the background by a line.
type bgProc struct {
	line cmdLine
	role string
	data string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (p *bgProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop ends the process group it leads with SIGTERM (SIGKILL after 15 s) and returns
// the exit error.
func (p *bgProc) stop() error {
	if p.running() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			return fmt.Errorf("did not stop within 15 s of SIGTERM")
		}
	}
	return p.err
}

// walker runs the lines in one directory and keeps what later lines depend on.
type walker struct {
	t     *testing.T
	bin   string
	dir   string
	env   []string
	ports portMap
	procs []*bgProc // every background process, in start order
	// call is a call the test started in the background for lines that need one.
	call *bgProc
	// lastMsg is the text of the last message sent to each user, for inbox lines.
	lastMsg map[string]string
	// buddies is what alice's buddy list must hold (nil entry: unknown).
	buddies map[string]*bool
	nlog    int
}

// out is the result of a line run to completion.
type out struct {
	code           int
	stdout, stderr string
}

func (w *walker) shell(line string, stdin io.Reader, timeout time.Duration) out {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Dir, cmd.Env = w.dir, w.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var so, se bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &so, &se
	err := cmd.Run()
	o := out{stdout: so.String(), stderr: se.String()}
	if err != nil {
		o.code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			o.code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			w.t.Fatalf("%q did not end within %v\nstdout: %s\nstderr: %s", line, timeout, o.stdout, o.stderr)
		}
	}
	return o
}

// start runs line in the background, its output in a log file.
func (w *walker) start(l cmdLine, role, data, line string, stdin io.Reader) *bgProc {
	w.t.Helper()
	w.nlog++
	logPath := filepath.Join(w.dir, fmt.Sprintf("bg-%02d-%s.log", w.nlog, role))
	f, err := os.Create(logPath)
	if err != nil {
		w.t.Fatal(err)
	}
	// 'exec' makes the shell become the command (assignments go before it).
	m := reAssign.FindStringSubmatch(line)
	cmd := exec.Command("sh", "-c", m[1]+"exec "+m[2])
	cmd.Dir, cmd.Env = w.dir, w.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, f, f
	var audio *os.File
	if strings.Contains(line, "--record -") {
		// What aplay would play: kept apart from the report on stderr.
		if audio, err = os.Create(logPath + ".pcm"); err != nil {
			w.t.Fatal(err)
		}
		cmd.Stdout = audio
	}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	p := &bgProc{line: l, role: role, data: data, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		if audio != nil {
			audio.Close()
		}
		close(p.done)
	}()
	w.procs = append(w.procs, p)
	return p
}

func (w *walker) fail(l cmdLine, format string, a ...any) {
	w.t.Helper()
	w.t.Fatalf("%s: %s\n  %s", l.where, fmt.Sprintf(format, a...), l.text)
}

// expect checks a finished line: its exit code, and that stdout contains each of want.
func (w *walker) expect(l cmdLine, o out, code int, want ...string) {
	w.t.Helper()
	if o.code != code {
		w.fail(l, "exit code %d, want %d\nstdout: %s\nstderr: %s", o.code, code, o.stdout, o.stderr)
	}
	for _, s := range want {
		if !strings.Contains(o.stdout, s) {
			w.fail(l, "stdout lacks %q\nstdout: %s\nstderr: %s", s, o.stdout, o.stderr)
		}
	}
}

// expectRe is expect with a regular expression that stdout must match.
func (w *walker) expectRe(l cmdLine, o out, code int, re string) {
	w.t.Helper()
	w.expect(l, o, code)
	if !regexp.MustCompile(re).MatchString(o.stdout) {
		w.fail(l, "stdout does not match %q\nstdout: %s\nstderr: %s", re, o.stdout, o.stderr)
	}
}

// ctlJSON asks a running client or supernode for a command's JSON, as a test, not a line.
func (w *walker) ctlJSON(args ...string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Dir, cmd.Env = w.dir, w.env
	b, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// until waits at most limit for cond; the line fails if p, when there is one, exits
// first.
func (w *walker) until(l cmdLine, limit time.Duration, what string, p *bgProc, cond func() bool) {
	w.t.Helper()
	exited := false
	err := eventually.Await(limit, what, func() bool {
		if cond() {
			return true
		}
		exited = p != nil && !p.running()
		return exited
	})
	if exited {
		b, _ := os.ReadFile(p.log)
		w.fail(l, "exited (%v) before %s\n%s", p.err, what, b)
	}
	if err != nil {
		w.fail(l, "not %s after %v", what, limit)
	}
}

var (
	reDataFlag   = regexp.MustCompile(`--data (\S+)`)
	reListenFlag = regexp.MustCompile(`--(?:listen|primary) (\S+)`)
	reRole       = regexp.MustCompile(`^(?:[A-Z_]+=\S+ )*(?:\./)?peerline (loginsrv|supernode|client|stun|relay)\b`)
	rePeerline   = regexp.MustCompile(`^(?:[A-Z_]+=\S+ )*(?:\./)?peerline (\S+)(.*)$`)
	reArecord    = regexp.MustCompile(`^arecord -q -f S16_LE -r 8000 -c 1 \| ((?:\./)?peerline call .*?)(?: \| aplay -q -f S16_LE -r 8000 -c 1)?$`)
	reJQ         = regexp.MustCompile(`^(.*?) \| jq (\.[a-z_.]+)$`)
	reAssign     = regexp.MustCompile(`^((?:[A-Z_]+=\S+ )*)(.*)$`)
)

func flagValue(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

// pcmNoise is endless 8 kHz s16le noise: the microphone of 'arecord'.
type pcmNoise struct{ r *rand.Rand }

func (n *pcmNoise) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(n.r.Uint32())
	}
	return len(b), nil
}

func newNoise() io.Reader { return &pcmNoise{r: rand.New(rand.NewPCG(5, 6))} }

// wavSeconds is how many seconds of 8 kHz mono 16-bit audio the WAV file at path holds.
func wavSeconds(path string) float64 {
	st, err := os.Stat(path)
	if err != nil || st.Size() < 44 {
		return 0
	}
	return float64(st.Size()-44) / 16000
}

// do runs one line and checks it.
func (w *walker) do(l cmdLine) {
	w.t.Helper()
	line := w.ports.apply(stripComment(l.text))
	w.t.Logf("%s: %s", l.where, line)
	if l.text == "go build -o peerline ./cmd/peerline" {
		// The binary this test built with the same command; ./peerline links to it.
		return
	}
	if m := reRole.FindStringSubmatch(line); m != nil && !strings.Contains(line, "--init") {
		w.startRole(l, m[1], line)
		return
	}
	w.settle(l)
	if m := reArecord.FindStringSubmatch(line); m != nil {
		w.arecordCall(l, m[1], strings.Contains(line, "| aplay"))
		return
	}
	jq := ""
	if m := reJQ.FindStringSubmatch(line); m != nil {
		if _, err := exec.LookPath("jq"); err != nil {
			line, jq = m[1], m[2] // checked below, without jq
		}
	}
	m := rePeerline.FindStringSubmatch(line)
	if m == nil {
		w.fail(l, "no rule of TestReadmeByHand knows this line: teach the test what it must do")
	}
	cmd, args := m[1], m[2]
	data := flagValue(reDataFlag, args)
	switch {
	case cmd == "version" || cmd == "--version":
		o := w.shell(line, nil, 30*time.Second)
		w.expect(l, o, 0, "peerline ")
		if strings.Contains(args, "--json") {
			w.jsonOut(l, o.stdout, "module")
		}
	case cmd == "demo":
		o := w.shell(line, nil, 3*time.Minute)
		if strings.Contains(l.text, "| jq .users") {
			var users []any
			var err error
			if jq != "" {
				users, _ = jsonPath(w.jsonOut(l, o.stdout, "users"), jq).([]any)
			} else {
				err = json.Unmarshal([]byte(o.stdout), &users)
			}
			if err != nil || len(users) != 2 || o.code != 0 {
				w.fail(l, "want the two demo users as JSON (exit %d): %s %s", o.code, o.stdout, o.stderr)
			}
			return
		}
		w.expect(l, o, 0, "demo OK")
	case cmd == "loginsrv": // --init
		o := w.shell(line, nil, 30*time.Second)
		w.expect(l, o, 0, "login key:")
		key, _ := os.ReadFile(filepath.Join(w.dir, data, "login.pub"))
		w.expect(l, o, 0, strings.TrimSpace(string(key)))
	case cmd == "register":
		name := args[strings.LastIndex(args, " ")+1:]
		w.expect(l, w.shell(line, nil, 60*time.Second), 0, "registered "+name)
	case cmd == "status":
		w.statusLine(l, line, data, jq)
	case cmd == "buddy":
		w.buddyLine(l, line, args)
	case cmd == "search":
		o := w.shell(line, nil, 60*time.Second)
		pos := positionals(args)
		if len(pos) != 1 {
			w.fail(l, "want one NAME or PREFIX*")
		}
		q := pos[0]
		name := strings.TrimSuffix(q, "*")
		// Exact and prefix search must agree that bob is online, and say the overlay
		// told them so.
		switch {
		case strings.Contains(args, "--json"):
			w.expect(l, o, 0, `"name": "bob"`, `"online": true`)
		case q == name:
			w.expectRe(l, o, 0, `(?m)^`+regexp.QuoteMeta(name)+`\s+online at supernode .*\[overlay`)
		default:
			w.expectRe(l, o, 0, `(?m)^bob\s+online at supernode .*\[overlay`)
		}
	case cmd == "msg":
		to := positionals(args)[0]
		text := strings.Trim(strings.TrimSpace(strings.SplitN(args, " "+to+" ", 2)[1]), "'")
		w.expect(l, w.shell(line, nil, 60*time.Second), 0, "delivered to "+to)
		w.lastMsg[to] = text
	case cmd == "inbox":
		o := w.shell(line, nil, 30*time.Second)
		user := filepath.Base(data)
		w.expect(l, o, 0, w.lastMsg[user])
		if strings.Contains(args, "--json") {
			var evs []map[string]any
			if err := json.Unmarshal([]byte(o.stdout), &evs); err != nil || len(evs) == 0 {
				w.fail(l, "inbox --json: %v: %s", err, o.stdout)
			}
		}
	case cmd == "nat":
		o := w.shell(line, nil, 60*time.Second)
		if strings.Contains(args, "--json") {
			r := w.jsonOut(l, o.stdout, "classic")
			if r["classic"] != "open" || (strings.Contains(args, "--lifetime-max") && r["mapping_lifetime_ms"] == nil) {
				w.fail(l, "want classic open (and the lifetime when asked): %s", o.stdout)
			}
			w.expect(l, o, 0)
			return
		}
		w.expect(l, o, 0, "NAT type:         open", "other address 127.0.0.2:")
	case cmd == "netcheck":
		// The port-mapping probe asks this machine, not its real router: tests send
		// traffic only to loopback.
		if !strings.Contains(args, "--no-portmap") && !strings.Contains(args, "--gateway") {
			line += " --gateway 127.0.0.1"
		}
		o := w.shell(line, nil, 60*time.Second)
		if strings.Contains(args, "--json") {
			r := w.jsonOut(l, o.stdout, "nat")
			nat, _ := r["nat"].(map[string]any)
			lat, _ := r["latency"].([]any)
			var first map[string]any
			if len(lat) > 0 {
				first, _ = lat[0].(map[string]any)
			}
			if nat["classic"] != "open" || first["rtt_ms"] == nil || r["ipv4"] != true {
				w.fail(l, "want classic open, IPv4 and a round trip: %s", o.stdout)
			}
			w.expect(l, o, 0)
			return
		}
		w.expect(l, o, 0, "NAT:             open", "IPv4:            yes", "a call from here to a peer behind:")
	case cmd == "call":
		w.callLine(l, line, args)
	case cmd == "answer":
		w.answerLine(l, line, args)
	case cmd == "hold":
		w.needCall(l)
		state := "on"
		if strings.Contains(args, "--off") {
			state = "off"
		}
		w.expect(l, w.shell(line, nil, 30*time.Second), 0, "hold "+state)
	case cmd == "hangup":
		w.needCall(l)
		o := w.shell(line, nil, 30*time.Second)
		w.expect(l, o, 0)
		w.endCall(l, true)
	case cmd == "calls":
		o := w.shell(line, nil, 30*time.Second)
		w.expect(l, o, 0)
		if strings.Contains(args, "--json") {
			r := w.jsonOut(l, o.stdout, "reports")
			if reps, _ := r["reports"].([]any); len(reps) == 0 {
				w.fail(l, "no call reports: %s", o.stdout)
			}
		}
	default:
		w.fail(l, "no rule of TestReadmeByHand knows 'peerline %s': teach the test what it must do", cmd)
	}
}

// jsonOut parses a JSON object and requires key in it.
func (w *walker) jsonOut(l cmdLine, s, key string) map[string]any {
	w.t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		w.fail(l, "not a JSON object: %v\n%s", err, s)
	}
	if _, ok := m[key]; !ok {
		w.fail(l, "JSON without %q: %s", key, s)
	}
	return m
}

func jsonPath(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(strings.TrimPrefix(path, "."), ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// startRole starts a role line in the background and waits until it is ready.
func (w *walker) startRole(l cmdLine, role, line string) {
	w.t.Helper()
	data := flagValue(reDataFlag, line)
	listen := flagValue(reListenFlag, line)
	for _, p := range w.procs {
		if p.running() && p.role == role && (p.data == data && data != "" || role == "stun" && flagValue(reListenFlag, w.ports.apply(p.line.text)) == listen) {
			// Started again (a help example): the old one stops first, as a person
			// would stop it before starting it anew.
			if err := p.stop(); err != nil {
				w.fail(l, "stopping the %s started by %s: %v", role, p.line.where, err)
			}
		}
	}
	p := w.start(l, role, data, line, nil)
	switch role {
	case "loginsrv", "relay":
		w.until(l, 30*time.Second, "listening on "+listen, p, func() bool {
			c, err := net.DialTimeout("tcp", listen, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	case "supernode":
		w.until(l, 30*time.Second, "admitted by the login server", p, func() bool {
			st, err := w.ctlJSON("status", "--data", data, "--json")
			return err == nil && st["registered"] == true
		})
	case "client":
		w.until(l, 60*time.Second, "attached, NAT known and its record published", p, func() bool {
			st, err := w.ctlJSON("status", "--data", data, "--json")
			if err != nil || jsonPath(st, ".supernode.name") == nil || jsonPath(st, ".nat.classic") == nil {
				return false
			}
			n, _ := jsonPath(st, ".counters.publishes").(float64)
			return n > 0
		})
	case "stun":
		w.until(l, 30*time.Second, "answering 'peerline nat'", p, func() bool {
			cmd := exec.Command(w.bin, "nat", "--stun", listen, "--json", "--timeout", "500ms")
			b, err := cmd.Output()
			return err == nil && bytes.Contains(b, []byte(`"classic": "open"`))
		})
	}
}

// settle waits until every running client is attached: after a supernode restarted (a
// help example), its clients move; a person would see it in 'peerline status'.
func (w *walker) settle(l cmdLine) {
	w.t.Helper()
	for _, p := range w.procs {
		if p.role != "client" || !p.running() {
			continue
		}
		w.until(l, 30*time.Second, p.data+" attached", p, func() bool {
			st, err := w.ctlJSON("status", "--data", p.data, "--json")
			return err == nil && jsonPath(st, ".supernode.name") != nil
		})
	}
}

func (w *walker) statusLine(l cmdLine, line, data, jq string) {
	w.t.Helper()
	o := w.shell(line, nil, 30*time.Second)
	w.expect(l, o, 0)
	sn := strings.Contains(data, "sn")
	switch {
	case strings.Contains(line, "| jq .supernode.addr"):
		if !regexp.MustCompile(`^"127\.0\.0\.1:\d+"\n$`).MatchString(o.stdout) {
			w.fail(l, "want the supernode's address: %q", o.stdout)
		}
	case jq != "":
		v := jsonPath(w.jsonOut(l, o.stdout, "version"), jq)
		if s, _ := v.(string); !strings.HasPrefix(s, "127.0.0.1:") {
			w.fail(l, "(jq not installed) %s is %v, want the supernode's address", jq, v)
		}
	case strings.Contains(line, "--json"):
		st := w.jsonOut(l, o.stdout, "version")
		if sn && st["ring_size"] == nil || !sn && jsonPath(st, ".supernode.name") == nil {
			w.fail(l, "status JSON lacks the supernode: %s", o.stdout)
		}
	case sn:
		w.expect(l, o, 0, "version:", "clients:", "ring:", "records:", "admitted:   true")
	default:
		w.expect(l, o, 0, "user "+filepath.Base(data), "version:", "supernode:  sn-", "NAT:        open")
	}
}

func (w *walker) buddyLine(l cmdLine, line, args string) {
	w.t.Helper()
	o := w.shell(line, nil, 30*time.Second)
	f := positionals(args)
	verb := f[0]
	yes, no := true, false
	switch verb {
	case "add", "remove", "block", "unblock":
		name := f[len(f)-1]
		done := map[string]string{"add": "added", "remove": "removed", "block": "blocked", "unblock": "unblocked"}[verb]
		w.expect(l, o, 0, done+" "+name)
		switch verb {
		case "add":
			w.buddies[name] = &yes
		case "remove":
			w.buddies[name] = &no
		default:
			w.buddies[name] = nil
		}
	case "list":
		w.expect(l, o, 0)
		for name, in := range w.buddies {
			if in != nil && strings.Contains(o.stdout, name) != *in {
				w.fail(l, "%s in the list: %v, want %v\n%s", name, !*in, *in, o.stdout)
			}
		}
		if strings.Contains(args, "--json") {
			w.jsonOut(l, o.stdout, "buddies")
		}
	default:
		w.fail(l, "no rule for 'buddy %s'", verb)
	}
}

// arecordCall runs 'arecord | peerline call ... [| aplay]' with generated PCM for arecord
// and captured stdout for aplay. A call that sends stdin without --duration lasts until it
// is hung up (arecord never ends): it runs in the background for the next lines.
func (w *walker) arecordCall(l cmdLine, pl string, aplay bool) {
	w.t.Helper()
	if !strings.Contains(pl, "--duration") {
		w.endCall(l, false)
		p := w.start(l, "call", flagValue(reDataFlag, pl), pl, newNoise())
		w.call = p
		w.waitActive(l, flagValue(reDataFlag, pl), p)
		if strings.Contains(pl, "--record -") {
			// A person listens a while before the next line: a second of audio.
			w.until(l, 30*time.Second, "a second of audio on stdout", p, func() bool {
				st, err := os.Stat(p.log + ".pcm")
				return err == nil && st.Size() >= 16000
			})
		}
		return
	}
	o := w.shell(pl, newNoise(), 2*time.Minute)
	w.expect(l, o, 0, "completed")
}

// waitActive waits until the client on data is in a call: one in progress whose audio
// arrives. A call still setting up is not one yet: hung up then, it fails for want of
// audio instead of ending as a person in a call would end it.
func (w *walker) waitActive(l cmdLine, data string, p *bgProc) {
	w.t.Helper()
	w.until(l, 30*time.Second, "in a call, its audio arriving", p, func() bool {
		st, err := w.ctlJSON("calls", "--data", data, "--json")
		if err != nil {
			return false
		}
		active, _ := st["active"].([]any)
		for _, c := range active {
			call, _ := c.(map[string]any)
			m, _ := call["media"].(map[string]any)
			if n, _ := m["frames_received"].(float64); n > 0 {
				return true
			}
		}
		return false
	})
}

// needCall starts a call from alice to bob when the line needs one ("while alice is in
// a call") and none runs.
func (w *walker) needCall(l cmdLine) {
	w.t.Helper()
	if w.call != nil && w.call.running() {
		return
	}
	if l.ctx != "while alice is in a call" && !strings.HasPrefix(l.where, "README") {
		w.fail(l, "the example needs a call; its help must say so (\"while alice is in a call\")")
	}
	if strings.HasPrefix(l.where, "README") {
		w.fail(l, "no call is in progress for this line: the README must start one before it")
	}
	p := w.start(l, "call", "run/alice", w.bin+" call --data run/alice bob", nil)
	w.call = p
	w.waitActive(l, "run/alice", p)
}

// endCall waits for the call in the background to end (hung up by the line before), or
// hangs it up when the test started it and no line did.
func (w *walker) endCall(l cmdLine, hungUp bool) {
	w.t.Helper()
	p := w.call
	if p == nil {
		return
	}
	w.call = nil
	wait := 2 * time.Second
	if hungUp {
		wait = 15 * time.Second
	}
	select {
	case <-p.done:
	case <-time.After(wait):
		if hungUp {
			w.fail(l, "the call started by %s goes on after the hangup", p.line.where)
		}
		hu := exec.Command(w.bin, "hangup", "--data", p.data)
		hu.Dir, hu.Env = w.dir, w.env
		hu.Run()
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			w.fail(l, "the call started by %s did not end", p.line.where)
		}
	}
	b, _ := os.ReadFile(p.log)
	if p.err != nil || !bytes.Contains(b, []byte("completed")) {
		w.fail(l, "the call started by %s ended with %v:\n%s", p.line.where, p.err, b)
	}
	if strings.Contains(p.line.text, "--record -") {
		// What aplay would have played: the callee's tone, at least a second of it.
		st, err := os.Stat(p.log + ".pcm")
		if err != nil || st.Size() < 16000 {
			w.fail(l, "the call's stdout carried too little audio for aplay: %v %v", st, err)
		}
	}
}

func (w *walker) callLine(l cmdLine, line, args string) {
	w.t.Helper()
	w.endCall(l, false)
	names := len(positionals(args))
	o := w.shell(line, nil, 2*time.Minute)
	w.expect(l, o, 0, "completed")
	if names > 1 {
		w.expect(l, o, 0, "conference mixed by")
	}
	if strings.Contains(args, "--json") {
		r := w.jsonOut(l, o.stdout, "result")
		if r["result"] != "completed" || r["path"] == "" {
			w.fail(l, "call report: %s", o.stdout)
		}
	}
	if rec := flagValue(regexp.MustCompile(`--record (\S+\.wav)`), args); rec != "" {
		if s := wavSeconds(filepath.Join(w.dir, rec)); s < 2 {
			w.fail(l, "%s holds %.1f s of audio", rec, s)
		}
	}
}

// answerLine answers a call from bob to alice, which the test places first ("while bob
// calls alice").
func (w *walker) answerLine(l cmdLine, line, args string) {
	w.t.Helper()
	if l.ctx != "while bob calls alice" {
		w.fail(l, "the example needs a ringing call; its help must say so (\"while bob calls alice\")")
	}
	w.endCall(l, false)
	caller := w.start(l, "call", "run/bob", w.bin+" call --data run/bob alice --duration 3s", nil)
	w.until(l, 30*time.Second, "ringing at alice", caller, func() bool {
		st, err := w.ctlJSON("calls", "--data", "run/alice", "--json")
		r, _ := st["ringing"].([]any)
		return err == nil && len(r) > 0
	})
	o := w.shell(line, nil, time.Minute)
	w.expect(l, o, 0, "completed")
	if rec := flagValue(regexp.MustCompile(`--record (\S+\.wav)`), args); rec != "" {
		if s := wavSeconds(filepath.Join(w.dir, rec)); s < 1 {
			w.fail(l, "%s holds %.1f s of audio", rec, s)
		}
	}
	w.call = caller
	w.endCall(l, true) // the caller's --duration ended it
}

func TestReadmeByHand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole by-hand set-up (about a minute)")
	}
	bin := netlab.BuildPeerline(t)
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(root)), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := readmeByHandLines(t, string(readme))
	help := helpExamples(t, bin, nil)
	if len(help) < 20 {
		t.Fatalf("found only %d help examples", len(help))
	}

	dir := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(dir, "peerline")); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PEERLINE_") && !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	env = append(env, "PATH="+dir+":"+os.Getenv("PATH"))
	sn, stun, login, relay := freePortRun(t, 2), freePortRun(t, 2), freePortRun(t, 1), freePortRun(t, 1)
	w := &walker{t: t, bin: bin, dir: dir, env: env, lastMsg: map[string]string{}, buddies: map[string]*bool{},
		ports: portMap{"7000": strconv.Itoa(login), "7101": strconv.Itoa(sn), "7102": strconv.Itoa(sn + 1),
			"3478": strconv.Itoa(stun), "3479": strconv.Itoa(stun + 1), "3480": strconv.Itoa(relay)}}
	t.Cleanup(func() {
		for _, p := range w.procs {
			p.stop()
		}
		if t.Failed() {
			for _, p := range w.procs {
				b, _ := os.ReadFile(p.log)
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("---- %s (%s), %s ----\n%s", p.role, p.line.where, p.line.text, b)
			}
		}
	})
	t0 := time.Now()
	for _, l := range lines {
		w.do(l)
	}
	t.Logf("README: %d lines in %v", len(lines), time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	for _, l := range help {
		w.do(l)
	}
	w.endCall(cmdLine{where: "end of the help examples"}, false)
	t.Logf("help: %d examples in %v", len(help), time.Since(t1).Round(time.Millisecond))
	// Every role ran until interrupted, and stops cleanly on SIGTERM.
	for _, p := range w.procs {
		if p.role == "call" {
			continue
		}
		if !p.running() && p.err == nil {
			continue // stopped by a later line's restart, checked then
		}
		if !p.running() {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("%s started by %s exited on its own: %v\n%s", p.role, p.line.where, p.err, b)
		}
	}
	for i := len(w.procs) - 1; i >= 0; i-- {
		p := w.procs[i]
		if err := p.stop(); err != nil && p.role != "call" {
			b, _ := os.ReadFile(p.log)
			t.Errorf("%s started by %s: SIGTERM: %v\n%s", p.role, p.line.where, err, tail(b))
		}
	}
}

func tail(b []byte) []byte {
	sc := bufio.NewScanner(bytes.NewReader(b))
	var last []string
	for sc.Scan() {
		last = append(last, sc.Text())
		if len(last) > 20 {
			last = last[1:]
		}
	}
	return []byte(strings.Join(last, "\n"))
}

// stripComment drops a trailing '# ...' outside quotes, as the shell does.
func stripComment(s string) string {
	q := byte(0)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '\'' || c == '"':
			q = c
		case c == '#' && (i == 0 || s[i-1] == ' '):
			return strings.TrimSpace(s[:i])
		}
	}
	return s
}

// positionals are the words of args that are not flags or flag values.
func positionals(args string) []string {
	var out []string
	f := strings.Fields(args)
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == "--data" || f[i] == "--record" || f[i] == "--send" || f[i] == "--duration" || f[i] == "--stun":
			i++
		case strings.HasPrefix(f[i], "-"):
		default:
			out = append(out, strings.Trim(f[i], "'"))
		}
	}
	return out
}
