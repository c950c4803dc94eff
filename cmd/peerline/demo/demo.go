// Package demo runs a whole Peerline overlay on loopback inside one process: a login
// server, a few supernodes and two clients, on real TCP sockets and with the real
// protocols, and reports what happened. 'peerline demo' prints its result.
package demo

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/cmd/peerline/compose"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/stunsrv"
	"github.com/peerline/peerline/loginsrv"
	"github.com/peerline/peerline/relay"
	"github.com/peerline/peerline/supernode"
)

// Options configure a demo run.
type Options struct {
	Supernodes int          // 0 = 3
	Users      []string     // nil = alice and bob
	Dir        string       // state directory; "" = a temporary one, removed afterwards
	Logger     *slog.Logger // nil = discard
	Progress   io.Writer    // narrated steps; nil = none
	Timeout    time.Duration
	CallLength time.Duration // the closing call between the first two users; 0 = 3s
}

// Result is the machine-readable outcome of a demo.
type Result struct {
	OK         bool                 `json:"ok"`
	LoginAddr  string               `json:"login_server"`
	LoginKey   string               `json:"login_key"`
	Supernodes []SupernodeInfo      `json:"supernodes"`
	Users      []UserInfo           `json:"users"`
	Search     *client.SearchResult `json:"search,omitempty"`
	Message    *client.Event        `json:"message,omitempty"`
	Call       *client.CallReport   `json:"call,omitempty"`
	Elapsed    string               `json:"elapsed"`
}

// SupernodeInfo describes one demo supernode.
type SupernodeInfo struct {
	Name    string   `json:"name"`
	Addr    string   `json:"addr"`
	Clients []string `json:"clients"`
}

// UserInfo describes one demo user after the run.
type UserInfo struct {
	Name              string    `json:"name"`
	Registered        bool      `json:"registered"`
	LoggedIn          bool      `json:"logged_in"`
	CredentialExpires time.Time `json:"credential_expires"`
	Supernode         string    `json:"supernode"`
	SupernodeAddr     string    `json:"supernode_addr"`
	NAT               string    `json:"nat"`
}

type runner struct {
	opts Options
	log  *slog.Logger
	wg   sync.WaitGroup
	errs chan error
}

func (r *runner) say(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, format+"\n", args...)
	}
}

func (r *runner) goRun(name string, f func() error) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := f(); err != nil {
			select {
			case r.errs <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

// Run starts the overlay, drives it through registration, login and attachment, and
// stops everything before returning.
func Run(ctx context.Context, opts Options) (res Result, err error) {
	start := time.Now()
	if opts.Supernodes <= 0 {
		opts.Supernodes = 3
	}
	if opts.Users == nil {
		opts.Users = []string{"alice", "bob"}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.CallLength <= 0 {
		opts.CallLength = 3 * time.Second
	}
	r := &runner{opts: opts, log: opts.Logger, errs: make(chan error, 16)}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "peerline-demo-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer func() {
		cancel()
		r.wg.Wait()
	}()

	// Login server.
	_, lkey, _ := ed25519.GenerateKey(rand.Reader)
	store, err := loginsrv.OpenSQLite(filepath.Join(dir, "accounts.db"))
	if err != nil {
		return res, err
	}
	defer store.Close()
	secret := randomString()
	lln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	ls, err := loginsrv.New(loginsrv.Config{
		Key: lkey, Store: store, Listener: lln, AdmitSecret: secret, HeartbeatInterval: time.Second,
		RelaySecret: []byte(randomString()),
		Logger:      r.log.With("role", "loginsrv"),
	})
	if err != nil {
		lln.Close()
		return res, err
	}
	res.LoginAddr, res.LoginKey = lln.Addr().String(), identity.EncodeKey(ls.PublicKey())
	r.goRun("login server", func() error { return ls.Run(ctx) })
	r.say("login server   %s  key %s", res.LoginAddr, res.LoginKey)

	// Supernodes.
	sns := make([]*supernode.Supernode, opts.Supernodes)
	for i := range sns {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		// Each supernode serves RFC 5780 STUN on two loopback addresses, so clients can
		// tell their NAT type (on loopback: none, "open").
		stun, err := stunsrv.ListenFree(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
		if err != nil {
			ln.Close()
			return res, err
		}
		sn, err := supernode.New(supernode.Config{
			STUN: stun, Listener: ln,
			Key: key, Name: fmt.Sprintf("sn%d", i+1), Advertise: ln.Addr().String(),
			LoginAddr: res.LoginAddr, LoginKey: ls.PublicKey(), AdmitSecret: secret,
			KeepAlive: 2 * time.Second, Logger: r.log.With("role", "supernode"),
			// A TURN relay on loopback: it must be allowed to relay to loopback peers.
			NewRelay: compose.Relay(relay.Config{Listen: "127.0.0.1:0", AllowPrivatePeers: true, Listeners: 1, MaxAllocsPerUser: 8}),
		})
		if err != nil {
			ln.Close()
			return res, err
		}
		sns[i] = sn
		r.goRun(sn.Status().Name, func() error { return sn.Run(ctx) })
		r.say("supernode      %s  %s", sn.Status().Name, ln.Addr())
	}
	if err := r.wait(ctx, "supernodes admitted", func() bool {
		for _, sn := range sns {
			if !sn.Status().Registered {
				return false
			}
		}
		return true
	}); err != nil {
		return res, err
	}
	r.say("all %d supernodes admitted by the login server", len(sns))

	// Users: register, then start their clients.
	login := client.LoginServer{Addr: res.LoginAddr, Key: ls.PublicKey()}
	clients := make([]*client.Client, len(opts.Users))
	for i, name := range opts.Users {
		pw := randomString()
		if err := client.Register(ctx, nil, login, name, pw); err != nil {
			return res, fmt.Errorf("register %s: %w", name, err)
		}
		r.say("registered     %s", name)
		cl, err := client.New(client.Config{
			DataDir: filepath.Join(dir, name), Login: login, User: name,
			Password:   func(context.Context) (string, error) { return pw, nil },
			NATTimeout: 500 * time.Millisecond,
			Logger:     r.log.With("role", "client"),
			// Everyone is on this machine: loopback candidates are the direct path.
			Call: client.CallConfig{Loopback: true, AutoAnswer: i > 0},
		})
		if err != nil {
			return res, err
		}
		clients[i] = cl
		r.goRun(name, func() error { return cl.Run(ctx) })
	}
	if err := r.wait(ctx, "clients attached", func() bool {
		for _, cl := range clients {
			if cl.Status().Supernode == nil {
				return false
			}
		}
		return true
	}); err != nil {
		return res, err
	}
	if err := r.wait(ctx, "NAT detection", func() bool {
		for _, cl := range clients {
			if cl.Status().NAT == nil {
				return false
			}
		}
		return true
	}); err != nil {
		return res, err
	}
	for _, cl := range clients {
		st := cl.Status()
		r.say("logged in      %-8s attached to %s at %s, NAT: %s", st.User, st.Supernode.Name, st.Supernode.Addr, st.NAT.Classic)
		res.Users = append(res.Users, UserInfo{
			Name: st.User, Registered: true, LoggedIn: st.LoggedIn, CredentialExpires: st.CredentialExpires,
			Supernode: st.Supernode.Name, SupernodeAddr: st.Supernode.Addr, NAT: st.NAT.Classic,
		})
	}

	// The first user adds the second as a buddy and looks them up, through the same
	// control socket the CLI uses.
	if len(opts.Users) >= 2 {
		sock := filepath.Join(dir, opts.Users[0], client.SocketFile)
		if err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdBuddyAdd, Args: []string{opts.Users[1]}}, nil); err != nil {
			return res, fmt.Errorf("buddy add: %w", err)
		}
		var sr client.SearchResult
		// The first search may run before bob's record reached its holders.
		if err := r.wait(ctx, "overlay search", func() bool {
			sr = client.SearchResult{}
			err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdSearch, Args: []string{opts.Users[1]}}, &sr)
			return err == nil && sr.User != nil && sr.User.Online
		}); err != nil {
			return res, fmt.Errorf("search: %w", err)
		}
		res.Search = &sr
		r.say("%s added %s as a buddy and found them through the %s (%d hops): online at %s",
			opts.Users[0], opts.Users[1], sr.Source, sr.Hops, sr.User.SupernodeAddr)
		text := "hello from " + opts.Users[0]
		if err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdMsg, Args: []string{opts.Users[1], text}}, nil); err != nil {
			return res, fmt.Errorf("message: %w", err)
		}
		var inbox []client.Event
		if err := r.wait(ctx, "message delivery", func() bool {
			inbox = clients[1].Inbox()
			return len(inbox) > 0
		}); err != nil {
			return res, err
		}
		res.Message = &inbox[0]
		r.say("%s sent %s an end-to-end encrypted message; %s received %q", opts.Users[0], opts.Users[1], opts.Users[1], inbox[0].Text)

		// A real call: a tone from the caller, the callee (auto-answering) sends its own.
		r.say("%s calls %s for %s ...", opts.Users[0], opts.Users[1], opts.CallLength)
		src := &media.Sine{Freq: 440, Frames: int(opts.CallLength / media.FrameDuration)}
		rec := &media.Recorder{}
		rep, err := clients[0].Call(ctx, opts.Users[1], client.CallOptions{Source: src, Sink: rec})
		if err != nil {
			return res, fmt.Errorf("call: %w", err)
		}
		res.Call = &rep
		m := rep.Media
		r.say("call %s: path %s, first audio after %.0f ms, %d frames sent, %d received, loss %.2f%%, rtt %.1f ms, jitter %.1f ms, %d path changes",
			rep.Result, rep.Path, rep.SetupMs, m.FramesSent, m.FramesReceived, m.LossPercent, m.RTTMs, m.JitterMs, len(m.PathChanges))
	}
	for _, sn := range sns {
		st := sn.Status()
		res.Supernodes = append(res.Supernodes, SupernodeInfo{Name: st.Name, Addr: st.Addr, Clients: st.Clients})
	}
	res.OK = true
	res.Elapsed = time.Since(start).Round(time.Millisecond).String()
	return res, nil
}

// wait polls cond until it holds, a role fails, or ctx ends.
func (r *runner) wait(ctx context.Context, what string, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case err := <-r.errs:
			return err
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, errors.Join(ctx.Err(), errDrain(r.errs)))
		case <-t.C:
		}
	}
	return nil
}

func errDrain(ch chan error) error {
	select {
	case err := <-ch:
		return err
	default:
		return nil
	}
}

func randomString() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
