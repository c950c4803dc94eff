package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/e2ee"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/proto"
)

// Calls. The caller finds the callee through the overlay, and the two exchange
// signalling (package callsig) inside end-to-end encrypted messages through their
// supernodes: invite, accept or reject, trickled candidates and relays, hangup. Each side
// brings a leg (callpath.go): ICE for direct and punched paths, a TURN allocation on its
// supernode's relay for relayed ones. The media session (package media) sends on the
// best live path and fails over between them. The client's phone (phone.go) runs them,
// apart from the client's lock.

// CallConfig is how a client places and answers calls.
type CallConfig struct {
	AutoAnswer  bool          // answer incoming calls at once
	AnswerSend  string        // WAV file played into answered calls; "" = a 440 Hz tone
	RecordDir   string        // answered calls are recorded to RecordDir/<call id>.wav; "" = not recorded
	RingTimeout time.Duration // how long an invite rings unanswered; 0 = 30s
	// Loopback offers loopback ICE candidates: for calls between clients on one machine
	// (tests, the demo). Off, loopback addresses are never offered.
	Loopback bool
	// TestHookDirectDelay holds the ICE checks back this long, so that a test can see a
	// call start relayed and move to the direct path.
	TestHookDirectDelay time.Duration
	// TestHookRelayed, if set, sees every datagram this client sends into a relay, as the
	// relay receives it (tests check that relays see only ciphertext).
	TestHookRelayed func([]byte)
	// TURN are relays to use instead of the supernodes' (and the login server's): any
	// RFC 5766 server, coturn for instance, with long-term credentials.
	TURN []TURNServer
	// NoMixing keeps this client from mixing conferences it starts (a weak device): the
	// most capable other participant mixes instead.
	NoMixing bool
}

// Call errors. The errors a call ends with say what happened in one sentence that names
// the peer ("bob rejected the call") and match these under errors.Is.
var (
	ErrCallRejected   = errors.New("call rejected")
	ErrCallBusy       = errors.New("callee is busy")
	ErrNoAnswer       = errors.New("no answer")
	ErrNoSuchCall     = errors.New("no such call")
	ErrInCall         = errors.New("already in a call")
	ErrCallSelf       = errors.New("you cannot call yourself")
	ErrCallCancelled  = errors.New("call cancelled before it was answered")
	ErrNothingRinging = errors.New("nothing is ringing")
)

// callError is a call's end told in one sentence; it matches its kind under errors.Is.
type callError struct {
	msg  string
	kind error
}

func (e *callError) Error() string { return e.msg }
func (e *callError) Unwrap() error { return e.kind }

func callErr(kind error, format string, args ...any) error {
	return &callError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// CallOptions are the audio of one call.
type CallOptions struct {
	Source   media.FrameSource // what we send; nil = silence
	Sink     media.FrameSink   // where the peer's audio goes; nil = discarded
	Duration time.Duration     // hang up after this long; 0 = when Source ends or the peer hangs up

	conf   []string // invite: ask the callee to mix a conference with these others
	inConf bool     // a leg of a conference this client mixes: not busy with itself
}

// CallReport is what a call did, as `peerline call --json` prints it.
type CallReport struct {
	Call     string `json:"call"`
	Peer     string `json:"peer"`
	Outgoing bool   `json:"outgoing"`
	// Result is completed, rejected, busy, blocked, no answer, cancelled (the caller hung
	// up while it rang), missed (the callee's side of no answer or cancelled), hung up
	// (by either side once answered, before any audio arrived), offline, no such user or
	// failed; "in progress" for an active call.
	Result    string  `json:"result"`
	Error     string  `json:"error,omitempty"`
	Predicted string  `json:"predicted_path,omitempty"`
	Path      string  `json:"path,omitempty"` // the path the call ended on
	LocalNAT  string  `json:"local_nat,omitempty"`
	RemoteNAT string  `json:"remote_nat,omitempty"`
	SetupMs   float64 `json:"setup_ms"` // from dialling (or answering) to the first audio frame received
	SignalMs  float64 `json:"signal_ms,omitempty"`
	// Phases says when each step of the set-up ended, from the same start as SetupMs.
	Phases     CallPhases  `json:"phases"`
	Media      media.Stats `json:"media"`
	StartedAt  time.Time   `json:"started_at"`
	DurationMs float64     `json:"duration_ms"`
}

// CallPhases is a call's set-up, step by step: when each step ended, in milliseconds
// from dialling (or answering); 0 for a step this side does not take or did not reach.
// The caller looks the callee up, gathers its candidates (and its relay allocation),
// delivers the invitation, rings until the answer; the callee gathers and delivers its
// acceptance. Then both run the connectivity checks until each has a live path to send
// on, and the first audio frame arrives.
type CallPhases struct {
	LookupMs     float64 `json:"lookup_ms,omitempty"`
	GatherMs     float64 `json:"gather_ms,omitempty"`
	InviteMs     float64 `json:"invite_ms,omitempty"` // caller: invitation delivered; callee: acceptance delivered
	AnswerMs     float64 `json:"answer_ms,omitempty"` // caller: the answer arrived (the ringing ended)
	PathMs       float64 `json:"path_ms,omitempty"`   // this side has a live path to send on (seen at the next 20 ms frame); the peer's first frames may come sooner
	FirstFrameMs float64 `json:"first_frame_ms,omitempty"`
}

// call is one call in progress.
type call struct {
	id       string
	peer     string
	outgoing bool
	started  time.Time         // when it was placed or began to ring, in real time (see Call)
	startAt  time.Time         // the same, by the client's clock (Config.Now)
	answers  chan *callsig.Msg // outgoing: the accept or reject
	hungUp   chan struct{}     // the peer hung up
	hangOnce sync.Once

	mu       sync.Mutex // mu protects the following fields
	state    string     // ringing, answering, active, missed, ended
	invite   *callsig.Msg
	peerCred identity.Credential
	peerBox  [32]byte
	leg      *leg
	pending  []*callsig.Msg // candidates that came before the leg
	// peerReason is the reason of the peer's hangup: callsig.ReasonFailed when its
	// side ended for want of audio, not by a person.
	peerReason string
	session    *media.Session
	sendq      chan callsig.Msg
	local      bool // Hangup was called here: the peer must still be told
}

func newCallID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (k *call) peerHungUp() { k.hangOnce.Do(func() { close(k.hungUp) }) }

// sender sends one call's signalling in order, so candidates never overtake the invite.
func (p *phone) sender(ctx context.Context, k *call) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-k.sendq:
			if !ok {
				return
			}
			k.mu.Lock()
			box := k.peerBox
			k.mu.Unlock()
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := p.sig.signal(sctx, k.peer, box, &m); err != nil {
				p.log.Debug("call signal not delivered", "call", k.id[:8], "type", m.T, "err", err)
			}
			cancel()
		}
	}
}

// openLeg brings up this side's transport for call k with a peer behind a NAT of class
// peerNAT; its signals go through k's queue, the punch timing past it.
func (p *phone) openLeg(ctx context.Context, k *call, controlling bool, peerNAT string) (*leg, error) {
	l, err := p.newLeg(ctx, k.id, controlling, peerNAT, k.queue, p.urgentSender(ctx, k))
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.leg = l
	k.mu.Unlock()
	return l, nil
}

// withDuration bounds ctx by d when d > 0. The bound is real time, not the client's
// clock: a call's length is the length of its audio, which the media session paces in
// real time.
func withDuration(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

// urgentSender returns a function that sends a message of call k at once, in its own
// goroutine, past the queue of candidates.
func (p *phone) urgentSender(ctx context.Context, k *call) func(callsig.Msg) {
	return func(m callsig.Msg) {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			k.mu.Lock()
			box := k.peerBox
			k.mu.Unlock()
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := p.sig.signal(sctx, k.peer, box, &m); err != nil {
				p.log.Debug("call signal not delivered", "call", k.id[:8], "type", m.T, "err", err)
			}
		}()
	}
}

// hangupSignal tells the peer of call k that it is over, for reason, and waits (a little)
// until the message is handed to the supernode: the call's context may be done already.
func (p *phone) hangupSignal(ctx context.Context, k *call, reason string) {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	k.mu.Lock()
	box := k.peerBox
	k.mu.Unlock()
	m := callsig.Msg{T: callsig.THangup, Call: k.id, Reason: reason}
	if err := p.sig.signal(hctx, k.peer, box, &m); err != nil {
		p.log.Debug("call signal not delivered", "call", k.id[:8], "type", m.T, "err", err)
	}
}

func (k *call) queue(m callsig.Msg) {
	k.mu.Lock()
	q := k.sendq
	k.mu.Unlock()
	if q == nil {
		return
	}
	select {
	case q <- m:
	default: // a call that floods its own queue loses candidates, not the client
	}
}

func (p *phone) ringTimeout() time.Duration {
	if p.cfg.RingTimeout > 0 {
		return p.cfg.RingTimeout
	}
	return 30 * time.Second
}

// Call places a call to name and runs it to its end: the callee is found through the
// overlay, invited, and once it answers the audio flows on the best path until
// opts.Duration passes, the source ends, the peer hangs up or ctx is done.
func (c *Client) Call(ctx context.Context, name string, opts CallOptions) (CallReport, error) {
	return c.phone.place(ctx, name, opts)
}

// place is Client.Call.
func (p *phone) place(ctx context.Context, name string, opts CallOptions) (CallReport, error) {
	rep := CallReport{Peer: name, Outgoing: true, StartedAt: p.now()}
	// A call's report measures in real time (its set-up, signalling and duration): the
	// audio it times runs on the media session's own real-time pacing, which a fake
	// clock does not move. Its timers (the ring timeout, the retries of the search, the
	// punch timing) are the client's clock's.
	start := time.Now()
	if name == p.user {
		return fail(rep, "failed", ErrCallSelf)
	}
	if err := p.sig.online(); err != nil {
		return fail(rep, "failed", err)
	}
	rec, err := p.sig.locate(ctx, name)
	rep.Phases.LookupMs = ms(time.Since(start))
	switch {
	case errors.Is(err, proto.ErrOffline):
		return fail(rep, "offline", err)
	case errors.Is(err, proto.ErrNoSuchUser):
		return fail(rep, "no such user", err)
	case err != nil:
		return fail(rep, "failed", err)
	}
	k := &call{id: newCallID(), peer: name, outgoing: true, state: "ringing", started: start, startAt: rep.StartedAt,
		answers: make(chan *callsig.Msg, 1), hungUp: make(chan struct{}), peerBox: rec.BoxKey,
		sendq: make(chan callsig.Msg, 64)}
	rep.Call = k.id
	p.mu.Lock()
	if len(p.calls) > 0 && !opts.inConf {
		p.mu.Unlock()
		return fail(rep, "failed", ErrInCall)
	}
	p.calls[k.id] = k
	p.mu.Unlock()
	defer p.endCall(k)

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l, err := p.openLeg(cctx, k, true, rec.NAT)
	if err != nil {
		return fail(rep, "failed", err)
	}
	defer l.close()
	inv := callsig.Msg{T: callsig.TInvite, Call: k.id, Box: p.boxPub[:], Conf: opts.conf}
	l.firstSignal(cctx, &inv, 50*time.Millisecond)
	rep.Phases.GatherMs = ms(time.Since(start))
	rep.LocalNAT = inv.NAT.Classic
	if err := p.sig.signal(cctx, name, rec.BoxKey, &inv); err != nil {
		if errors.Is(err, proto.ErrBlocked) {
			return fail(rep, "blocked", err)
		}
		return fail(rep, "failed", err)
	}
	rep.Phases.InviteMs = ms(time.Since(start))
	go p.sender(cctx, k)

	var ans *callsig.Msg
	ring := p.clk.NewTimer(p.ringTimeout())
	defer ring.Stop()
	// While it rings, every way out but an answer tells the callee at once, so that its
	// phone stops ringing now and not at its own ring timeout.
	select {
	case ans = <-k.answers:
	case <-ring.Chan():
		p.hangupSignal(ctx, k, callsig.ReasonTimeout)
		return fail(rep, "no answer", callErr(ErrNoAnswer, "%s did not answer", name))
	case <-k.hungUp:
		k.mu.Lock()
		local := k.local
		k.mu.Unlock()
		if !local { // the callee hung up instead of rejecting
			return fail(rep, "rejected", callErr(ErrCallRejected, "%s rejected the call", name))
		}
		// Hangup here while it rang.
		p.hangupSignal(ctx, k, callsig.ReasonCancelled)
		p.m.Inc("calls_cancelled")
		return fail(rep, "cancelled", callErr(ErrCallCancelled, "you hung up before %s answered", name))
	case <-ctx.Done():
		p.hangupSignal(ctx, k, callsig.ReasonCancelled)
		return fail(rep, "failed", ctx.Err())
	}
	if ans.T == callsig.TReject {
		switch ans.Reason {
		case callsig.ReasonBusy:
			return fail(rep, "busy", callErr(ErrCallBusy, "%s is busy", name))
		case callsig.ReasonBlocked:
			return fail(rep, "blocked", callErr(proto.ErrBlocked, "%s does not take your calls (blocked)", name))
		case callsig.ReasonTimeout: // the callee's phone stopped ringing
			return fail(rep, "no answer", callErr(ErrNoAnswer, "%s did not answer", name))
		}
		return fail(rep, "rejected", callErr(ErrCallRejected, "%s rejected the call", name))
	}
	rep.SignalMs = ms(time.Since(start))
	rep.Phases.AnswerMs = rep.SignalMs
	k.mu.Lock()
	peerCred := k.peerCred
	k.mu.Unlock()
	myCred := p.sig.self()
	key, err := callsig.MediaKey(l.ephPriv, ans.Eph, k.id, credBinding(myCred), credBinding(peerCred), l.ephPub, ans.Eph)
	if err != nil {
		return fail(rep, "failed", err)
	}
	return p.runMedia(cctx, k, l, key, ans, opts, rep, start)
}

// gatedSource sends silence until the call has a live path, then the real source: the
// first words of a call are not spoken into the void while ICE and the relays set up.
// The silence still goes out (no silence suppression), so it is what opens the paths.
type gatedSource struct {
	src    media.FrameSource // nil = silence
	live   func() bool
	open   bool
	opened func() // called once, when the first path is live
}

func (g *gatedSource) ReadFrame(pcm []int16) error {
	if !g.open {
		if g.live == nil || !g.live() {
			clear(pcm)
			return nil
		}
		g.open = true
		if g.opened != nil {
			g.opened()
		}
	}
	if g.src == nil {
		clear(pcm)
		return nil
	}
	return g.src.ReadFrame(pcm)
}

// credBinding is what of a credential the media key is bound to: the name and key it
// certifies.
func credBinding(cr identity.Credential) []byte {
	return append([]byte(cr.Name+"\x00"), cr.PubKey...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fail(rep CallReport, result string, err error) (CallReport, error) {
	rep.Result = result
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

// runMedia runs the audio of an answered call until it ends, and reports.
func (p *phone) runMedia(ctx context.Context, k *call, l *leg, key [32]byte, remote *callsig.Msg, opts CallOptions, rep CallReport, start time.Time) (CallReport, error) {
	gate := &gatedSource{src: opts.Source}
	s, err := media.NewSession(media.Config{
		Key: key, Caller: k.outgoing, Source: gate, Sink: opts.Sink,
		Logger: p.log.With("call", k.id[:8]), Metrics: p.m,
	})
	if err != nil {
		return fail(rep, "failed", err)
	}
	if remote.NAT != nil {
		rep.RemoteNAT = remote.NAT.Classic
		rep.Predicted = PredictPath(l.nat, *remote.NAT)
	}
	rep.LocalNAT = l.nat.Classic
	gate.live = func() bool { return s.Stats().ActiveKind != "" }
	pathAt := make(chan time.Duration, 1)
	gate.opened = func() { pathAt <- time.Since(start) }
	k.mu.Lock()
	k.session, k.state = s, "active"
	pending := k.pending
	k.pending = nil
	k.mu.Unlock()
	l.setSession(s)
	l.addRemote(remote)
	for _, m := range pending {
		l.addRemote(m)
	}
	l.beginPunch()
	p.ev.emit(Event{Kind: "call", Time: p.now(), Name: k.peer, Call: k.id, State: "active"})

	rctx, cancel := withDuration(ctx, opts.Duration)
	defer cancel()
	go func() {
		select {
		case <-k.hungUp:
			cancel()
		case <-rctx.Done():
		}
	}()
	firstAt := make(chan time.Duration, 1)
	go func() {
		select {
		case <-s.FirstFrame():
			firstAt <- time.Since(start)
		case <-rctx.Done():
		}
	}()
	runErr := s.Run(rctx)
	rep.Media = s.Stats()
	k.mu.Lock()
	local, peerReason := k.local, k.peerReason
	k.mu.Unlock()
	peerLeft := false
	select {
	case <-k.hungUp:
		peerLeft = !local
	default:
	}
	if !peerLeft {
		reason := callsig.ReasonHangup
		if rep.Media.FramesReceived == 0 && !local {
			reason = callsig.ReasonFailed // no audio and nobody hung up: our paths failed
		}
		p.hangupSignal(ctx, k, reason)
	}
	rep.Path = string(rep.Media.ActiveKind)
	rep.DurationMs = ms(time.Since(start))
	select {
	case d := <-firstAt:
		rep.SetupMs = ms(d)
		rep.Phases.FirstFrameMs = rep.SetupMs
	default:
	}
	select {
	case d := <-pathAt:
		rep.Phases.PathMs = ms(d)
	default:
	}
	rep.Result = "completed"
	if rep.Media.FramesReceived == 0 && (local || peerLeft && peerReason != callsig.ReasonFailed) {
		// Hung up, on either side, before the first frame came: the call ended as a
		// person asked, before any path carried audio, which says nothing of the paths.
		rep.Result = "hung up"
		rep.Error = "you hung up before any audio arrived"
		if peerLeft {
			rep.Error = k.peer + " hung up before any audio arrived"
		}
		p.m.Inc("calls_hung_up_before_audio")
		return rep, errors.New(rep.Error)
	}
	if rep.Media.FramesReceived == 0 {
		rep.Result = "failed"
		rep.Error = "no audio arrived: no path worked"
		p.m.Inc("calls_failed")
		return rep, errors.New(rep.Error)
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, context.DeadlineExceeded) {
		rep.Error = runErr.Error()
	}
	p.m.Inc("calls_completed")
	p.ev.emit(Event{Kind: "call", Time: p.now(), Name: k.peer, Call: k.id, State: "ended"})
	return rep, nil
}

func (p *phone) endCall(k *call) {
	p.mu.Lock()
	if p.calls[k.id] == k {
		delete(p.calls, k.id)
	}
	p.mu.Unlock()
	k.mu.Lock()
	k.state = "ended"
	k.mu.Unlock()
}

// onCallSignal handles call signalling from an opened e2ee message.
func (p *phone) onCallSignal(msg e2ee.Message, sender identity.Credential) error {
	m, err := callsig.Decode([]byte(msg.Text))
	if err != nil {
		p.m.Inc("call_signals_rejected")
		return proto.ErrRefused.With("call signal refused: %v", err)
	}
	p.m.Inc("call_signals_received")
	p.mu.Lock()
	k := p.calls[m.Call]
	p.mu.Unlock()
	if k != nil && k.peer != sender.Name {
		p.m.Inc("call_signals_rejected")
		return proto.ErrRefused.With("call %s is not with %s", m.Call[:8], sender.Name)
	}
	switch m.T {
	case callsig.TInvite:
		return p.onInvite(m, sender)
	case callsig.TAccept, callsig.TReject:
		if k == nil || !k.outgoing {
			return nil
		}
		k.mu.Lock()
		k.peerCred = sender
		k.mu.Unlock()
		select {
		case k.answers <- m:
		default:
		}
	case callsig.TCandidate:
		if k == nil {
			return nil
		}
		k.mu.Lock()
		l, active := k.leg, k.session != nil
		if !active {
			k.pending = append(k.pending, m)
		}
		k.mu.Unlock()
		if active {
			l.addRemote(m)
		}
	case callsig.THangup:
		if k == nil {
			return nil
		}
		k.mu.Lock()
		k.peerReason = m.Reason
		k.mu.Unlock()
		k.peerHungUp()
		p.ev.emit(Event{Kind: "call", Time: p.now(), Name: k.peer, Call: k.id, State: "hung up"})
	}
	return nil
}

// onInvite rings, or answers busy.
func (p *phone) onInvite(m *callsig.Msg, sender identity.Credential) error {
	if len(m.Box) != 32 {
		p.m.Inc("call_signals_rejected")
		return proto.ErrRefused.With("invite without a box key")
	}
	k := &call{id: m.Call, peer: sender.Name, state: "ringing", invite: m, started: time.Now(), startAt: p.now(),
		peerCred: sender, hungUp: make(chan struct{}), sendq: make(chan callsig.Msg, 64)}
	copy(k.peerBox[:], m.Box)
	p.mu.Lock()
	if _, dup := p.calls[m.Call]; dup {
		p.mu.Unlock()
		return nil
	}
	busy := len(p.calls) > 0 // a call in progress or ringing
	if !busy {
		p.calls[k.id] = k
	}
	p.mu.Unlock()
	if busy {
		p.m.Inc("calls_busy")
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			ctx, cancel := context.WithTimeout(p.runCtx(), 5*time.Second)
			defer cancel()
			p.sig.signal(ctx, k.peer, k.peerBox, &callsig.Msg{T: callsig.TReject, Call: k.id, Reason: callsig.ReasonBusy})
		}()
		return nil
	}
	p.m.Inc("calls_ringing")
	p.log.Info("incoming call", "from", k.peer, "call", k.id[:8])
	p.ev.emit(Event{Kind: "call", Time: p.now(), From: k.peer, Call: k.id, State: "ringing"})
	runCtx := p.runCtx()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := p.clk.NewTimer(p.ringTimeout())
		defer t.Stop()
		select {
		case <-t.Chan():
			// The caller's phone stops ringing with ours: it hears "no answer" now,
			// not at its own ring timeout.
			if p.missed(k, "unanswered") {
				ctx, cancel := context.WithTimeout(runCtx, 5*time.Second)
				p.sig.signal(ctx, k.peer, k.peerBox, &callsig.Msg{T: callsig.TReject, Call: k.id, Reason: callsig.ReasonTimeout})
				cancel()
			}
		case <-k.hungUp:
			p.missed(k, fmt.Sprintf("%s hung up before you answered", k.peer))
		case <-runCtx.Done():
		}
	}()
	if p.cfg.AutoAnswer {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.autoAnswer(k.id)
		}()
	}
	return nil
}

// missed ends incoming call k if it is still ringing, and records it as missed (why says
// how). A call answered or rejected meanwhile is left alone (missed returns false).
func (p *phone) missed(k *call, why string) bool {
	k.mu.Lock()
	ringing := k.state == "ringing"
	if ringing {
		k.state = "missed"
	}
	k.mu.Unlock()
	if !ringing {
		return false
	}
	p.endCall(k)
	p.m.Inc("calls_missed")
	p.recordReport(CallReport{Call: k.id, Peer: k.peer, Result: "missed", Error: why, StartedAt: k.startAt,
		DurationMs: ms(time.Since(k.started))})
	p.ev.emit(Event{Kind: "call", Time: p.now(), From: k.peer, Call: k.id, State: "missed"})
	return true
}

// Ringing lists the calls ringing now.
func (c *Client) Ringing() []CallReport { return c.phone.ringing() }

// ringing is Client.Ringing.
func (p *phone) ringing() []CallReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []CallReport
	for _, k := range p.calls {
		k.mu.Lock()
		if k.state == "ringing" && !k.outgoing {
			out = append(out, CallReport{Call: k.id, Peer: k.peer, Result: "ringing", StartedAt: k.startAt})
		}
		k.mu.Unlock()
	}
	return out
}

// Active lists the calls in progress, with their statistics so far.
func (c *Client) Active() []CallReport { return c.phone.active() }

// active is Client.Active.
func (p *phone) active() []CallReport {
	p.mu.Lock()
	calls := make([]*call, 0, len(p.calls))
	for _, k := range p.calls {
		calls = append(calls, k)
	}
	p.mu.Unlock()
	var out []CallReport
	for _, k := range calls {
		k.mu.Lock()
		s, state := k.session, k.state
		k.mu.Unlock()
		if s == nil || state != "active" {
			continue
		}
		st := s.Stats()
		out = append(out, CallReport{Call: k.id, Peer: k.peer, Outgoing: k.outgoing, Result: "in progress",
			Path: string(st.ActiveKind), Media: st, StartedAt: k.startAt, DurationMs: ms(time.Since(k.started))})
	}
	return out
}

// Answer answers a ringing call (id "" = the one ringing) and runs it to its end.
func (c *Client) Answer(ctx context.Context, id string, opts CallOptions) (CallReport, error) {
	return c.phone.answer(ctx, id, opts)
}

// answer is Client.Answer.
func (p *phone) answer(ctx context.Context, id string, opts CallOptions) (CallReport, error) {
	start := time.Now() // the report's measure, in real time as in Call
	k := p.callToAnswer(id)
	// Until a call is found the report names none: nothing of it is kept.
	rep := CallReport{StartedAt: p.now()}
	switch {
	case k == nil && id == "":
		return fail(rep, "failed", ErrNothingRinging)
	case k == nil || k.outgoing:
		return fail(rep, "failed", callErr(ErrNoSuchCall, "no call %s is ringing", id))
	}
	k.mu.Lock()
	if k.state != "ringing" {
		k.mu.Unlock()
		return fail(rep, "failed", callErr(ErrNothingRinging, "call %s is %s, not ringing", k.id[:8], k.state))
	}
	inv := k.invite
	if len(inv.Conf) > 0 && !opts.inConf {
		// Asked to mix a conference: call the others, and answer this call as one leg.
		k.mu.Unlock()
		reports, err := p.mix(ctx, inv.Conf, opts, k.id)
		rep := reports[len(reports)-1]
		return rep, err
	}
	k.state = "answering"
	k.mu.Unlock()
	rep.Call, rep.Peer = k.id, k.peer
	defer p.endCall(k)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	peerNAT := ""
	if inv.NAT != nil {
		peerNAT = inv.NAT.Classic
	}
	l, err := p.openLeg(cctx, k, false, peerNAT)
	if err != nil {
		return fail(rep, "failed", err)
	}
	defer l.close()
	acc := callsig.Msg{T: callsig.TAccept, Call: k.id}
	l.firstSignal(cctx, &acc, 50*time.Millisecond)
	rep.Phases.GatherMs = ms(time.Since(start))
	myCred := p.sig.self()
	key, err := callsig.MediaKey(l.ephPriv, inv.Eph, k.id, credBinding(k.peerCred), credBinding(myCred), inv.Eph, l.ephPub)
	if err != nil {
		return fail(rep, "failed", err)
	}
	if err := p.sig.signal(cctx, k.peer, k.peerBox, &acc); err != nil {
		return fail(rep, "failed", fmt.Errorf("accept not delivered: %w", err))
	}
	rep.Phases.InviteMs = ms(time.Since(start))
	go p.sender(cctx, k)
	return p.runMedia(cctx, k, l, key, inv, opts, rep, start)
}

// callToAnswer returns the call id names, or an incoming call that rings for id "", or
// nil: the call Answer or Reject acts on.
func (p *phone) callToAnswer(id string) *call {
	if id == "" {
		return p.ringingCall()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[id]
}

// ringingCall returns an incoming call that rings, or nil.
func (p *phone) ringingCall() *call {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.calls {
		x.mu.Lock()
		ringing := !x.outgoing && x.state == "ringing"
		x.mu.Unlock()
		if ringing {
			return x
		}
	}
	return nil
}

// Reject refuses a ringing call (id "" = the one ringing).
func (c *Client) Reject(ctx context.Context, id string) error { return c.phone.reject(ctx, id) }

// reject is Client.Reject.
func (p *phone) reject(ctx context.Context, id string) error {
	k := p.callToAnswer(id)
	if k == nil || k.outgoing {
		if id == "" {
			return ErrNothingRinging
		}
		return callErr(ErrNoSuchCall, "no call %s is ringing", id)
	}
	k.mu.Lock()
	ringing := k.state == "ringing"
	if ringing {
		k.state = "ended"
	}
	k.mu.Unlock()
	if !ringing {
		return callErr(ErrNothingRinging, "call %s is not ringing", k.id[:8])
	}
	p.endCall(k)
	k.peerHungUp() // the ring timer stops; the call is not missed, it was refused
	p.recordReport(CallReport{Call: k.id, Peer: k.peer, Result: "rejected", Error: "you rejected the call",
		StartedAt: k.startAt, DurationMs: ms(time.Since(k.started))})
	return p.sig.signal(ctx, k.peer, k.peerBox, &callsig.Msg{T: callsig.TReject, Call: k.id, Reason: callsig.ReasonRejected})
}

// Hangup ends the call in progress (id "" = any): an outgoing call that still rings is
// cancelled (the callee stops ringing and counts a missed call), an incoming one that
// rings is rejected, and rejected says so.
func (c *Client) Hangup(id string) (rejected bool, err error) { return c.phone.hangup(id) }

// hangup is Client.Hangup.
func (p *phone) hangup(id string) (rejected bool, err error) {
	p.mu.Lock()
	var k *call
	for _, x := range p.calls {
		if id == "" || x.id == id {
			k = x
		}
	}
	p.mu.Unlock()
	if k == nil {
		if id == "" {
			return false, callErr(ErrNoSuchCall, "no call is in progress or ringing")
		}
		return false, callErr(ErrNoSuchCall, "no call %s", id)
	}
	k.mu.Lock()
	incomingRinging := !k.outgoing && k.state == "ringing"
	k.local = true
	k.mu.Unlock()
	if incomingRinging {
		ctx, cancel := context.WithTimeout(p.runCtx(), 5*time.Second)
		defer cancel()
		return true, p.reject(ctx, k.id)
	}
	k.peerHungUp() // ends our session (or the ringing in Call); the peer is then told
	return false, nil
}

// Hold puts the call in progress (id "" = any) on hold, or takes it off: on hold the
// client sends one packet every 3 s instead of audio, and resumes where it was.
func (c *Client) Hold(id string, on bool) error { return c.phone.hold(id, on) }

// hold is Client.Hold.
func (p *phone) hold(id string, on bool) error {
	p.mu.Lock()
	var k *call
	for _, x := range p.calls {
		if id == "" || x.id == id {
			k = x
		}
	}
	p.mu.Unlock()
	if k == nil {
		return ErrNoSuchCall
	}
	k.mu.Lock()
	s := k.session
	k.mu.Unlock()
	if s == nil {
		return fmt.Errorf("call %s is not active yet", k.id[:8])
	}
	s.Hold(on)
	return nil
}

// autoAnswer answers with the configured audio and records to the configured directory.
func (p *phone) autoAnswer(id string) {
	opts, closeAll, err := p.answerAudio(id)
	if err != nil {
		p.log.Warn("cannot answer", "call", id[:8], "err", err)
		return
	}
	defer closeAll()
	rep, err := p.answer(p.runCtx(), id, opts)
	if err != nil {
		p.log.Warn("answered call failed", "call", id[:8], "err", err)
	}
	p.recordReport(rep)
}

// recordReport keeps rep among the reports of the last calls, and logs it.
func (p *phone) recordReport(rep CallReport) {
	p.mu.Lock()
	p.reports = append(p.reports, rep)
	if len(p.reports) > maxReports {
		p.reports = p.reports[len(p.reports)-maxReports:]
	}
	p.mu.Unlock()
	p.log.Info("call ended", "call", rep.Call, "peer", rep.Peer, "result", rep.Result, "path", rep.Path,
		"setup_ms", rep.SetupMs, "frames_received", rep.Media.FramesReceived)
}

// Reports lists the reports of the last calls this client answered or placed.
func (c *Client) Reports() []CallReport { return c.phone.lastReports() }

// lastReports is Client.Reports.
func (p *phone) lastReports() []CallReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]CallReport(nil), p.reports...)
}
