package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/ctl"
)

var audioFlags = []cli.Flag{
	&cli.StringFlag{Name: "send", Usage: "play `FILE` into the call: a .wav file, raw 8 kHz s16le PCM otherwise, '-' for raw PCM on stdin; default a 440 Hz tone"},
	&cli.StringFlag{Name: "record", Usage: "record what arrives to `FILE`: .wav, raw PCM otherwise, '-' for raw PCM on stdout"},
}

func callCommand() *cli.Command {
	return &cli.Command{
		Name:      "call",
		Usage:     "call a user through the running client, with audio from and to files or pipes",
		ArgsUsage: "NAME",
		UsageText: "peerline call --data DIR NAME [NAME...] [--send FILE|-] [--record FILE|-] [--duration D] [--json]\n\n" +
			"Examples:\n" +
			"   peerline call --data run/alice bob carol --duration 5s    # a conference of three\n" +
			"   peerline call --data run/alice bob --send in.wav --record out.wav --duration 10s --json\n" +
			"   arecord -q -f S16_LE -r 8000 -c 1 | peerline call --data run/alice bob --send - --duration 5s",
		Description: "The callee is found through the overlay and rings; once it answers, the call takes\n" +
			"the best path its NAT pair allows (direct, hole punched, or relayed by TURN over UDP\n" +
			"or TCP), keeps a second path warm, and moves when a better one works or the current\n" +
			"one dies. Audio is G.711, 20 ms frames, encrypted end to end. The report gives the\n" +
			"path, the NAT types, setup time to the first audio frame, RTT, loss, jitter, bytes each\n" +
			"way and path changes. With several NAMEs the call is a conference: the participant\n" +
			"whose NAT is the most open mixes, and each hears everyone but themselves.",
		Flags: append([]cli.Flag{dataFlag, jsonFlag,
			&cli.DurationFlag{Name: "duration", Usage: "hang up after `D` (default: when --send ends, or the callee hangs up)"},
		}, audioFlags...),
		Action: func(c *cli.Context) error {
			switch {
			case c.NArg() == 0:
				return usagef("call: give the NAME to call, or several for a conference")
			case c.NArg() > 1:
				return runConference(c, c.Args().Slice(), c.Duration("duration"))
			}
			return runCall(c, client.CmdCall, c.Args().First(), c.Duration("duration"))
		},
	}
}

func answerCommand() *cli.Command {
	return &cli.Command{
		Name:      "answer",
		Usage:     "answer the call ringing at the running client",
		ArgsUsage: "[CALL-ID]",
		UsageText: "peerline answer --data DIR [CALL-ID] [--send FILE|-] [--record FILE|-] [--json]\n\n" +
			"Example (while bob calls alice):\n   peerline answer --data run/alice --record from-bob.wav",
		Flags: append([]cli.Flag{dataFlag, jsonFlag}, audioFlags...),
		Action: func(c *cli.Context) error {
			return runCall(c, client.CmdAnswer, c.Args().First(), 0)
		},
	}
}

func hangupCommand() *cli.Command {
	return &cli.Command{
		Name:      "hangup",
		Usage:     "end the call in progress, cancel yours while it rings, or reject the one ringing here",
		ArgsUsage: "[CALL-ID]",
		UsageText: "peerline hangup --data DIR [CALL-ID]\n\nExample (while alice is in a call):\n   peerline hangup --data run/alice",
		Flags:     []cli.Flag{dataFlag, jsonFlag, &cli.BoolFlag{Name: "reject", Usage: "reject the ringing call CALL-ID"}},
		Action: func(c *cli.Context) error {
			cmd := client.CmdHangup
			if c.Bool("reject") {
				cmd = client.CmdReject
			}
			var out map[string]string
			if err := ask(c, cmd, []string{c.Args().First()}, &out); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			if _, rejected := out["rejected"]; rejected {
				fmt.Fprintln(c.App.Writer, "rejected")
			} else {
				fmt.Fprintln(c.App.Writer, "hung up")
			}
			return nil
		},
	}
}

func holdCommand() *cli.Command {
	return &cli.Command{
		Name:      "hold",
		Usage:     "put the call in progress on hold (one packet every 3 s, no audio), or resume it",
		ArgsUsage: "[CALL-ID]",
		UsageText: "peerline hold --data DIR [--off] [CALL-ID]\n\nExamples (while alice is in a call):\n   peerline hold --data run/alice\n   peerline hold --data run/alice --off",
		Flags:     []cli.Flag{dataFlag, jsonFlag, &cli.BoolFlag{Name: "off", Usage: "resume the call"}},
		Action: func(c *cli.Context) error {
			state := "on"
			if c.Bool("off") {
				state = "off"
			}
			var out map[string]string
			if err := ask(c, client.CmdHold, []string{state, c.Args().First()}, &out); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			fmt.Fprintf(c.App.Writer, "hold %s\n", state)
			return nil
		},
	}
}

func callsCommand() *cli.Command {
	return &cli.Command{
		Name:      "calls",
		Usage:     "list ringing calls, calls in progress and the reports of the last calls",
		UsageText: "peerline calls --data DIR [--json]\n\nExample:\n   peerline calls --data run/bob --json",
		Flags:     []cli.Flag{dataFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			var out client.CallsStatus
			if err := ask(c, client.CmdCalls, nil, &out); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			printCalls(c.App.Writer, out)
			return nil
		},
	}
}

// audioArg turns a --send or --record flag into the control request's path and format.
// '-' becomes a named pipe in the client's data directory that this process feeds from
// stdin (or drains to stdout), so that the running client reads and writes it.
func audioArg(c *cli.Context, flag string, cleanup *[]func()) (path, format string, err error) {
	v := c.String(flag)
	switch {
	case v == "" && flag == "send":
		return "", client.AudioTone, nil
	case v == "":
		return "", client.AudioNone, nil
	case v == "-":
		dir, err := filepath.Abs(c.String("data"))
		if err != nil {
			return "", "", err
		}
		fifo := filepath.Join(dir, fmt.Sprintf("%s-%d.pcm", flag, os.Getpid()))
		os.Remove(fifo)
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			return "", "", fmt.Errorf("named pipe for %s: %w", flag, err)
		}
		*cleanup = append(*cleanup, func() { os.Remove(fifo) })
		go func() {
			if flag == "send" {
				f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
				if err != nil {
					return
				}
				io.Copy(f, os.Stdin)
				f.Close()
			} else {
				f, err := os.Open(fifo)
				if err != nil {
					return
				}
				io.Copy(os.Stdout, f)
				f.Close()
			}
		}()
		return fifo, client.AudioRaw, nil
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		return "", "", err
	}
	// The running client opens the file: say here, naming the flag, what it would not find.
	if flag == "send" {
		if st, err := os.Stat(abs); err != nil || st.IsDir() {
			return "", "", usagef("--send %s: no such file (want a .wav file, raw 8 kHz s16le PCM, or - for stdin)", v)
		}
	} else if st, err := os.Stat(filepath.Dir(abs)); err != nil || !st.IsDir() {
		return "", "", usagef("--record %s: no such directory %s", v, filepath.Dir(v))
	}
	if strings.HasSuffix(strings.ToLower(v), ".wav") {
		return abs, client.AudioWAV, nil
	}
	return abs, client.AudioRaw, nil
}

// audioArgs turns --send, --record and the duration into the audio arguments of the
// call, answer and conference control requests: send path and format, record path and
// format, duration in ms. cleanup removes the named pipes it made.
func audioArgs(c *cli.Context, d time.Duration) (args []string, cleanup func(), err error) {
	var fns []func()
	cleanup = func() {
		for _, f := range fns {
			f()
		}
	}
	sp, sf, err := audioArg(c, "send", &fns)
	if err != nil {
		return nil, cleanup, err
	}
	rp, rf, err := audioArg(c, "record", &fns)
	if err != nil {
		return nil, cleanup, err
	}
	return []string{sp, sf, rp, rf, strconv.FormatInt(d.Milliseconds(), 10)}, cleanup, nil
}

// reportWriter is where a call's report goes: stderr when stdout carries the audio.
func reportWriter(c *cli.Context) io.Writer {
	if c.String("record") == "-" {
		return os.Stderr
	}
	return c.App.Writer
}

func runCall(c *cli.Context, cmd, target string, d time.Duration) error {
	audio, cleanup, err := audioArgs(c, d)
	defer cleanup()
	if err != nil {
		return err
	}
	ctx := c.Context
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d+2*time.Minute)
		defer cancel()
	}
	var rep client.CallReport
	args := append([]string{target}, audio...)
	if err := ctlDo(ctx, c.String("data"), ctl.Request{Cmd: cmd, Args: args}, &rep); err != nil {
		return err
	}
	w := reportWriter(c)
	if c.Bool("json") {
		if err := printJSON(w, rep); err != nil {
			return err
		}
	} else if rep.Result == "completed" {
		printReport(w, rep)
	}
	if rep.Result != "completed" {
		// One sentence, on stderr with a failing exit code.
		return errors.New(callOutcome(rep))
	}
	return nil
}

func runConference(c *cli.Context, names []string, d time.Duration) error {
	audio, cleanup, err := audioArgs(c, d)
	defer cleanup()
	if err != nil {
		return err
	}
	var cr client.ConferenceReport
	args := append(audio, names...)
	if err := ctlDo(c.Context, c.String("data"), ctl.Request{Cmd: client.CmdConference, Args: args}, &cr); err != nil {
		return err
	}
	w := reportWriter(c)
	if c.Bool("json") {
		return printJSON(w, cr)
	}
	fmt.Fprintf(w, "conference mixed by %s\n", cr.Mixer)
	for _, r := range cr.Legs {
		printReport(w, r)
	}
	return nil
}

// callOutcome says in one sentence how call r ended (or where it is).
func callOutcome(r client.CallReport) string {
	if r.Outgoing {
		switch r.Result {
		case "completed":
			return fmt.Sprintf("call to %s completed", r.Peer)
		case "rejected":
			return fmt.Sprintf("%s rejected the call", r.Peer)
		case "busy":
			return fmt.Sprintf("%s is busy", r.Peer)
		case "no answer":
			return fmt.Sprintf("%s did not answer", r.Peer)
		case "cancelled":
			return fmt.Sprintf("you hung up before %s answered", r.Peer)
		case "blocked":
			return fmt.Sprintf("%s does not take your calls (blocked)", r.Peer)
		case "offline":
			return fmt.Sprintf("%s is offline", r.Peer)
		case "no such user":
			return fmt.Sprintf("no such user %s", r.Peer)
		case "hung up":
			return fmt.Sprintf("call to %s ended: %s", r.Peer, orUnknown(r.Error))
		}
		return fmt.Sprintf("call to %s failed: %s", r.Peer, orUnknown(r.Error))
	}
	switch r.Result {
	case "completed":
		return fmt.Sprintf("call from %s completed", r.Peer)
	case "missed":
		if r.Error != "" {
			return fmt.Sprintf("missed call from %s (%s)", r.Peer, r.Error)
		}
		return fmt.Sprintf("missed call from %s", r.Peer)
	case "rejected":
		return fmt.Sprintf("you rejected the call from %s", r.Peer)
	case "hung up":
		return fmt.Sprintf("call from %s ended: %s", r.Peer, orUnknown(r.Error))
	}
	return fmt.Sprintf("call from %s failed: %s", r.Peer, orUnknown(r.Error))
}

// printCalls prints what 'peerline calls' shows: ringing calls, calls in progress with
// their statistics so far, and the reports of the last calls, or that there are none.
func printCalls(w io.Writer, out client.CallsStatus) {
	if len(out.Ringing) == 0 && len(out.Active) == 0 && len(out.Reports) == 0 {
		fmt.Fprintln(w, "no calls")
		return
	}
	for _, r := range out.Ringing {
		fmt.Fprintf(w, "ringing: call from %s (id %s; answer with 'peerline answer')\n", r.Peer, r.Call)
	}
	for _, r := range out.Active {
		dir := "from"
		if r.Outgoing {
			dir = "to"
		}
		m := r.Media
		fmt.Fprintf(w, "in progress: call %s %s for %s on path %s: %d frames sent, %d received, %.2f%% lost, rtt %.1f ms\n",
			dir, r.Peer, (time.Duration(r.DurationMs) * time.Millisecond).Round(time.Second), orUnknown(r.Path),
			m.FramesSent, m.FramesReceived, m.LossPercent, m.RTTMs)
	}
	for _, r := range out.Reports {
		printReport(w, r)
	}
}

// phasesText lists when each set-up step ended, as a call report has them.
func phasesText(p client.CallPhases, outgoing bool) string {
	var parts []string
	add := func(name string, ms float64) {
		if ms > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", name, ms))
		}
	}
	add("lookup", p.LookupMs)
	add("gathered", p.GatherMs)
	if outgoing {
		add("invited", p.InviteMs)
		add("answered", p.AnswerMs)
	} else {
		add("accepted", p.InviteMs)
	}
	add("path", p.PathMs)
	add("first frame", p.FirstFrameMs)
	return strings.Join(parts, ", ")
}

func printReport(w io.Writer, r client.CallReport) {
	fmt.Fprintln(w, callOutcome(r))
	if r.Result != "completed" {
		return
	}
	m := r.Media
	fmt.Fprintf(w, "  path:        %s (predicted %s; NATs %s / %s)\n", r.Path, orUnknown(r.Predicted), orUnknown(r.LocalNAT), orUnknown(r.RemoteNAT))
	fmt.Fprintf(w, "  setup:       %.0f ms to the first audio frame (%s)\n", r.SetupMs, phasesText(r.Phases, r.Outgoing))
	fmt.Fprintf(w, "  frames:      %d sent, %d received, %.2f%% lost, %d late\n", m.FramesSent, m.FramesReceived, m.LossPercent, m.Late)
	fmt.Fprintf(w, "  rtt/jitter:  %.1f ms / %.1f ms\n", m.RTTMs, m.JitterMs)
	fmt.Fprintf(w, "  bytes:       %d sent, %d received\n", m.BytesSent, m.BytesReceived)
	fmt.Fprintf(w, "  path changes: %d (longest gap %.0f ms)\n", len(m.PathChanges), m.MaxGapMs)
}
