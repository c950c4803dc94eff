package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/supernode"
)

// ask sends one control request to the client (or supernode) running on --data.
func ask(c *cli.Context, cmd string, args []string, out any) error {
	ctx, cancel := context.WithTimeout(c.Context, 40*time.Second)
	defer cancel()
	return ctlDo(ctx, c.String("data"), ctl.Request{Cmd: cmd, Args: args}, out)
}

// ctlDo sends r to the control socket of the client or supernode running on dir.
func ctlDo(ctx context.Context, dir string, r ctl.Request, out any) error {
	err := ctl.Do(ctx, filepath.Join(dir, client.SocketFile), r, out)
	if errors.Is(err, ctl.ErrNoClient) {
		return notRunning(dir)
	}
	return err
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the state of a running client or supernode",
		UsageText: "peerline status --data DIR [--json]\n\n" +
			"Example:\n" +
			"   peerline status --data run/sn1\n" +
			"   peerline status --data run/alice --json | jq .supernode.addr",
		Flags: []cli.Flag{dataFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			var raw json.RawMessage
			if err := ask(c, client.CmdStatus, nil, &raw); err != nil {
				return err
			}
			if c.Bool("json") {
				var v any
				json.Unmarshal(raw, &v)
				return printJSON(c.App.Writer, v)
			}
			var role struct{ Role string }
			json.Unmarshal(raw, &role)
			w := c.App.Writer
			if role.Role == "supernode" {
				var st supernode.Status
				if err := json.Unmarshal(raw, &st); err != nil {
					return err
				}
				printSupernodeStatus(w, st)
				return nil
			}
			var st client.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				return err
			}
			fmt.Fprintf(w, "user %s\n  version:    %s\n  logged in:  %v (credential until %s)\n", st.User, st.Version, st.LoggedIn, fmtTime(st.CredentialExpires))
			if st.Supernode != nil {
				fmt.Fprintf(w, "  supernode:  %s at %s (attached %s)\n", st.Supernode.Name, st.Supernode.Addr, fmtTime(st.Supernode.AttachedAt))
			} else {
				fmt.Fprintf(w, "  supernode:  none (attaching)\n")
			}
			if st.Promotion.Supernode {
				fmt.Fprintf(w, "  supernode role: serving at %s (admitted %v)\n", st.Promotion.Addr, st.Promotion.Admitted)
			} else {
				fmt.Fprintf(w, "  supernode role: no (%s)\n", orUnknown(st.Promotion.Reason))
			}
			fmt.Fprintf(w, "  attaches:   %d\n  host cache: %d supernodes\n  NAT:        %s\n", st.Attaches, st.HostCache, natText(st.NAT))
			for _, b := range st.Buddies {
				state := "offline, last seen " + fmtTime(b.LastSeen)
				if b.Online {
					state = "online"
				}
				fmt.Fprintf(w, "  buddy %-20s %s\n", b.Name, state)
			}
			if st.LastError != "" {
				fmt.Fprintf(w, "  last error: %s (%s ago)\n", st.LastError, time.Since(st.LastErrorAt).Round(time.Second))
			}
			return nil
		},
	}
}

func buddyCommand() *cli.Command {
	simple := func(name, cmd, usage, done string) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: "NAME",
			UsageText: fmt.Sprintf("peerline buddy %s --data DIR NAME\n\nExample:\n   peerline buddy %s --data run/alice bob", name, name),
			Flags:     []cli.Flag{dataFlag, jsonFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usagef("buddy %s: give exactly one NAME, got %d arguments", name, c.NArg())
				}
				var out map[string]string
				if err := ask(c, cmd, []string{c.Args().First()}, &out); err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, out)
				}
				fmt.Fprintf(c.App.Writer, "%s %s\n", done, c.Args().First())
				return nil
			},
		}
	}
	return &cli.Command{
		Name:  "buddy",
		Usage: "manage the buddy list of a running client",
		UsageText: "peerline buddy add|remove|block|unblock|list --data DIR [NAME]\n\n" +
			"Examples:\n   peerline buddy add --data run/alice bob\n   peerline buddy list --data run/alice --json",
		Subcommands: []*cli.Command{
			simple("add", client.CmdBuddyAdd, "add NAME to your buddies", "added"),
			simple("remove", client.CmdBuddyRemove, "remove NAME from your buddies", "removed"),
			simple("block", client.CmdBuddyBlock, "block NAME: they cannot see your presence or reach you", "blocked"),
			simple("unblock", client.CmdBuddyUnblock, "unblock NAME", "unblocked"),
			{
				Name: "list", Usage: "list your buddies",
				UsageText: "peerline buddy list --data DIR [--json]\n\nExample:\n   peerline buddy list --data run/alice",
				Flags:     []cli.Flag{dataFlag, jsonFlag},
				Action: func(c *cli.Context) error {
					var out proto.BuddyListOK
					if err := ask(c, client.CmdBuddyList, nil, &out); err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, out)
					}
					if len(out.Buddies) == 0 {
						fmt.Fprintln(c.App.Writer, "no buddies")
					}
					for _, b := range out.Buddies {
						flag := ""
						if b.Blocked {
							flag = " (blocked)"
						}
						fmt.Fprintf(c.App.Writer, "%-32s last seen %s%s\n", b.Name, fmtTime(b.LastSeen), flag)
					}
					return nil
				},
			},
		},
	}
}

func searchCommand() *cli.Command {
	return &cli.Command{
		Name:      "search",
		Usage:     "find a user by exact name, or by prefix ending in '*'",
		ArgsUsage: "NAME|PREFIX*",
		UsageText: "peerline search --data DIR NAME|PREFIX* [--json]\n\nExamples:\n   peerline search --data run/alice bob\n   peerline search --data run/alice 'b*' --json",
		Flags:     []cli.Flag{dataFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("search: give exactly one NAME or PREFIX*, got %d arguments", c.NArg())
			}
			var out client.SearchResult
			if err := ask(c, client.CmdSearch, []string{c.Args().First()}, &out); err != nil {
				return err
			}
			// Nobody found is a failure (exit 1), also with --json, which prints the
			// empty result first.
			notFound := fmt.Errorf("no such user %s", out.Query)
			if strings.HasSuffix(out.Query, "*") {
				notFound = fmt.Errorf("no user name starts with %s", strings.TrimSuffix(out.Query, "*"))
			}
			if c.Bool("json") {
				if err := printJSON(c.App.Writer, out); err != nil {
					return err
				}
				if len(out.Results) == 0 {
					return notFound
				}
				return nil
			}
			w := c.App.Writer
			if len(out.Results) == 0 {
				return notFound
			}
			for _, r := range out.Results {
				fmt.Fprintln(w, searchLine(r))
			}
			return nil
		},
	}
}

// searchLine is one search result: the user's presence and where it comes from.
func searchLine(r client.SearchHit) string {
	switch {
	case r.Online && r.Source == "overlay":
		return fmt.Sprintf("%-20s online at supernode %s (NAT %s) [overlay, %d hops]", r.Name, r.SupernodeAddr, orUnknown(r.NAT), r.Hops)
	case r.Online:
		return fmt.Sprintf("%-20s online [%s]", r.Name, r.Source)
	case r.LastSeen.IsZero():
		return fmt.Sprintf("%-20s offline, never logged in [%s]", r.Name, r.Source)
	}
	return fmt.Sprintf("%-20s offline, last seen %s [%s]", r.Name, fmtTime(r.LastSeen), r.Source)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func msgCommand() *cli.Command {
	return &cli.Command{
		Name:      "msg",
		Usage:     "send an end-to-end encrypted instant message to an online user",
		ArgsUsage: "NAME TEXT",
		UsageText: "peerline msg --data DIR NAME TEXT\n\nExample:\n   peerline msg --data run/alice bob 'lunch at noon?'",
		Description: "The message is sealed for the recipient's key: the supernodes that carry it see\n" +
			"only the recipient's name. A message to an offline user is refused.",
		Flags: []cli.Flag{dataFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usagef("msg: give NAME and TEXT (quote a TEXT of several words), got %d arguments", c.NArg())
			}
			var out map[string]string
			if err := ask(c, client.CmdMsg, []string{c.Args().Get(0), c.Args().Get(1)}, &out); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			fmt.Fprintf(c.App.Writer, "delivered to %s\n", c.Args().Get(0))
			return nil
		},
	}
}

func inboxCommand() *cli.Command {
	return &cli.Command{
		Name:      "inbox",
		Usage:     "show the messages a running client received",
		UsageText: "peerline inbox --data DIR [--json]\n\nExample:\n   peerline inbox --data run/bob --json",
		Flags:     []cli.Flag{dataFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			var out []client.Event
			if err := ask(c, client.CmdInbox, nil, &out); err != nil {
				return err
			}
			if c.Bool("json") {
				if out == nil {
					out = []client.Event{}
				}
				return printJSON(c.App.Writer, out)
			}
			if len(out) == 0 {
				fmt.Fprintln(c.App.Writer, "no messages")
			}
			for _, m := range out {
				fmt.Fprintf(c.App.Writer, "%s  %s: %s\n", fmtTime(m.Sent), m.From, m.Text)
			}
			return nil
		},
	}
}

func natText(n *client.NATStatus) string {
	if n == nil {
		return "not detected yet"
	}
	if n.Classic == "" {
		return "unknown (" + n.Error + ")"
	}
	return fmt.Sprintf("%s (mapping %s, filtering %s)", n.Classic, orUnknown(string(n.Mapping)), orUnknown(string(n.Filtering)))
}

// printSupernodeStatus is the text of 'peerline status' for a supernode: its clients, the
// ring of supernodes it knows and the user records it holds.
func printSupernodeStatus(w io.Writer, st supernode.Status) {
	clients := "none"
	if len(st.Clients) > 0 {
		clients = strings.Join(st.Clients, " ")
	}
	fmt.Fprintf(w, "supernode %s (%s)\n  version:    %s\n  address:    %s\n  up since:   %s\n  admitted:   %v\n",
		st.Name, st.ID, st.Version, st.Addr, fmtTime(st.Since), st.Registered)
	fmt.Fprintf(w, "  clients:    %d: %s\n", len(st.Clients), clients)
	fmt.Fprintf(w, "  ring:       %d members (this one and %d other live supernodes)\n", st.RingSize, len(st.Peers))
	const shown = 10
	for i, p := range st.Peers {
		if i == shown {
			fmt.Fprintf(w, "    ... and %d more ('peerline status --json' lists them)\n", len(st.Peers)-shown)
			break
		}
		fmt.Fprintf(w, "    peer %s (up since %s)\n", p.Addr, fmtTime(p.Since))
	}
	fmt.Fprintf(w, "  records:    %d held\n", st.Records)
}
