package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/metrics"
)

// Defaults and fixed timings.
const (
	DefaultJitterDelay   = 60 * time.Millisecond
	DefaultProbeInterval = 500 * time.Millisecond
	DefaultDeadAfter     = time.Second
	// HoldInterval is how often a held session sends a hold packet.
	HoldInterval = 3 * time.Second

	// overlap is how long media goes to both paths after an upgrade, so that a path
	// that drops its first packets (a NAT binding being refreshed) loses nothing.
	overlap = 5 * FrameDuration
	// byeRounds is how many ticks in a row a leaving session sends bye on every path.
	byeRounds = 2
	// flushTimeout bounds how long Run waits for writers to send the last packets.
	flushTimeout = 250 * time.Millisecond
	// maxRTT discards round-trip samples that cannot be real (a probe-reply echoed
	// across a send-time wrap or after a very long stall).
	maxRTT = 30 * time.Second
)

// Config configures a Session. Key is required.
type Config struct {
	// Key is the call's 32-byte key, agreed end to end by the call setup. It must be
	// fresh per call: two sessions in the same role under one key would reuse nonces.
	Key [32]byte
	// Caller says which side this is; the other side must say the opposite. The two
	// directions use distinct subkeys and nonce spaces.
	Caller bool
	Source FrameSource // outgoing audio; nil = silence
	Sink   FrameSink   // played-out audio; nil = discard
	// JitterDelay is the playout delay after the first frame; 0 = 60ms. Rounded up to
	// whole frames by the 20 ms tick.
	JitterDelay time.Duration
	// ProbeInterval is how often every path is probed; 0 = 500ms.
	ProbeInterval time.Duration
	// DeadAfter: a path with no packet for this long is dead; 0 = 1s. A path whose
	// probes go unanswered for DeadAfter + 2 probe intervals is dead too.
	DeadAfter time.Duration
	Now       func() time.Time // nil = time.Now
	Logger    *slog.Logger     // nil = slog.Default()
	Metrics   *metrics.Set     // nil = a fresh set
}

func (c *Config) validate() error {
	if c.Key == ([32]byte{}) {
		return fmt.Errorf("%w: Key is all zero; pass the key the call setup agreed", ErrConfig)
	}
	if c.JitterDelay < 0 || c.JitterDelay > 2*time.Second {
		return fmt.Errorf("%w: JitterDelay %v, want 0..2s", ErrConfig, c.JitterDelay)
	}
	if c.ProbeInterval < 0 || c.DeadAfter < 0 {
		return fmt.Errorf("%w: negative ProbeInterval or DeadAfter", ErrConfig)
	}
	return nil
}

// Session is one side of a call's audio. Create it with NewSession, add paths, Run it.
type Session struct {
	cfg          Config
	log          *slog.Logger
	m            *metrics.Set
	ciph         *Cipher
	epoch        time.Time // origin of the send-time clock
	first        chan struct{}
	holdInterval time.Duration // HoldInterval; tests shorten it
	replyTimeout time.Duration // a path without probe-replies for this long is dead
	upgradeAfter time.Duration // a better path must be live this long to take over

	pcm [FrameSamples]int16 // Run's goroutine: the frame read from Source
	out [FrameSamples]int16 // Run's goroutine: the frame played to Sink

	mu       sync.Mutex // mu protects all following fields
	paths    []*pathState
	started  bool
	stopping bool // writers' queues are closed; send nothing more
	readers  sync.WaitGroup
	writers  sync.WaitGroup
	runStart time.Time

	seq          uint64 // last sequence number sent
	frame        int64  // next frame index to send; media timestamp = frame*FrameSamples
	active       *pathState
	prev         *pathState // the path before an upgrade, fed until overlapUntil
	overlapUntil time.Time
	everActive   bool
	lastProbe    time.Time
	probed       bool
	targets      []*pathState // scratch for mediaTargetsLocked

	held       bool
	holdSent   bool
	holdSentAt time.Time
	sourceDone bool
	endErr     error // why the call ended, if Source or Sink failed
	drainUntil time.Time
	byeSent    int
	peerBye    bool
	peerByeIdx int64 // the frame index the peer's bye named: nothing at or after it

	win replayWindow
	jb  *jitterBuffer

	rxStarted     bool
	extTs         int64 // highest unwrapped media timestamp received
	baseIdx       int64 // lowest frame index received
	highIdx       int64 // highest frame index received
	heldSkip      int64 // frames not expected because the peer was on hold
	firstAt       time.Time
	lastAudioAt   time.Time
	haveTransit   bool
	lastTransit   int64
	jitter        float64 // samples
	maxGap        time.Duration
	peerHeld      bool
	peerHeldSince time.Time
	peerHeldTotal time.Duration

	st      Stats // counters only; Stats() fills in the rest
	changes []PathChange
}

// NewSession checks cfg and returns a session with no paths.
func NewSession(cfg Config) (*Session, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Source == nil {
		cfg.Source = Silence{}
	}
	if cfg.Sink == nil {
		cfg.Sink = Discard{}
	}
	if cfg.JitterDelay == 0 {
		cfg.JitterDelay = DefaultJitterDelay
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = new(metrics.Set)
	}
	c, err := NewCipher(cfg.Key, cfg.Caller)
	if err != nil {
		return nil, err
	}
	role := "callee"
	if cfg.Caller {
		role = "caller"
	}
	return &Session{
		cfg:          cfg,
		log:          cfg.Logger.With("role", role),
		m:            cfg.Metrics,
		ciph:         c,
		epoch:        cfg.Now(),
		first:        make(chan struct{}),
		holdInterval: HoldInterval,
		replyTimeout: cfg.DeadAfter + 2*cfg.ProbeInterval,
		upgradeAfter: cfg.ProbeInterval,
		jb:           newJitterBuffer(cfg.JitterDelay),
	}, nil
}

// AddPath gives the session a path to the peer; lower rank is preferred, ties go to
// the path added first. The session owns p from now on: it reads from it at all times,
// probes it, and closes it when Run returns (at once, if Run has returned already).
// Paths may be added before Run or while it runs.
func (s *Session) AddPath(kind PathKind, name string, p Path, rank int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		p.Close()
		return
	}
	ps := &pathState{idx: len(s.paths), kind: kind, name: name, rank: rank, p: p, out: make(chan []byte, writeQueue)}
	s.paths = append(s.paths, ps)
	s.log.Debug("media path added", "path", ps.label(), "rank", rank)
	if s.started {
		s.startPathLocked(ps)
	}
}

func (s *Session) startPathLocked(ps *pathState) {
	s.readers.Add(1)
	go s.read(ps)
	s.writers.Add(1)
	go s.write(ps)
}

// FirstFrame returns a channel closed when the first audio frame from the peer arrives.
func (s *Session) FirstFrame() <-chan struct{} { return s.first }

// Hold puts the call on hold (on) or takes it off. On hold the session reads nothing
// from Source and sends a hold packet every 3 s instead of audio; it keeps receiving
// and playing out the peer's audio. Off hold, audio resumes with the next tick.
func (s *Session) Hold(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == on {
		return
	}
	s.held, s.holdSent = on, false
	s.log.Info("media hold", "on", on)
}

// Run carries the call until ctx is done, Source ends (io.EOF), or the peer hangs up;
// then it sends bye (unless the peer left first), plays out what is buffered, closes
// every path and returns nil. It sends one frame from Source and plays one frame to
// Sink every 20 ms. An error from Source or Sink ends the call the same way and is
// returned. Run may be called once.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrRunning
	}
	s.started = true
	s.runStart = s.cfg.Now()
	for _, ps := range s.paths {
		s.startPathLocked(ps)
	}
	s.mu.Unlock()
	defer s.shutdown()

	t := time.NewTicker(FrameDuration)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.sourceDone = true
			s.sendByeLocked(s.cfg.Now())
			s.mu.Unlock()
			return nil
		case <-t.C:
		}
		if done, err := s.step(s.cfg.Now()); done {
			return err
		}
	}
}

// step is one 20 ms tick of Run: read a frame from Source, tickLocked, play a frame to
// Sink. It reports when the call is over, with the Source's or Sink's error if one
// ended it. Tests drive it with a fake clock.
func (s *Session) step(now time.Time) (done bool, err error) {
	s.mu.Lock()
	read := !s.held && !s.sourceDone && !s.peerBye
	s.mu.Unlock()
	var pcm []int16
	if read {
		if rerr := s.cfg.Source.ReadFrame(s.pcm[:]); rerr == nil {
			pcm = s.pcm[:]
		} else {
			if !errors.Is(rerr, io.EOF) {
				err = fmt.Errorf("media: audio source: %w", rerr)
			}
			s.log.Info("media source ended", "err", rerr)
			s.mu.Lock()
			s.sourceDone = true
			s.endErr = err
			s.mu.Unlock()
		}
	}

	s.mu.Lock()
	ulaw, st := s.tickLocked(now, pcm)
	if st == playFrame {
		DecodeUlaw(s.out[:], ulaw) // under mu: ulaw is the jitter buffer's slot
	}
	done = s.endedLocked(now)
	err = s.endErr
	s.mu.Unlock()

	if st != playNothing {
		if st != playFrame {
			clear(s.out[:])
		}
		if werr := s.cfg.Sink.WriteFrame(s.out[:], st == playConcealed); werr != nil {
			s.log.Info("media sink failed", "err", werr)
			s.mu.Lock()
			if s.endErr == nil {
				s.endErr = fmt.Errorf("media: audio sink: %w", werr)
			}
			s.sourceDone = true
			s.mu.Unlock()
		}
	}
	return done, err
}

// endedLocked reports whether a call that is ending has drained: bye sent (or received),
// and the jitter buffer played out up to where the peer stopped, or the drain time up.
func (s *Session) endedLocked(now time.Time) bool {
	if !s.sourceDone && !s.peerBye {
		return false
	}
	if s.drainUntil.IsZero() {
		s.drainUntil = now.Add(s.cfg.JitterDelay + 2*FrameDuration)
	}
	if !s.peerBye && s.byeSent < byeRounds {
		return false
	}
	if !now.Before(s.drainUntil) {
		return true
	}
	if s.peerBye {
		return !s.jb.started || s.jb.next >= s.peerByeIdx
	}
	return !s.jb.buffered()
}

// shutdown stops every goroutine: the writers get a moment to send what is queued (the
// bye), then the paths are closed, which ends the readers.
func (s *Session) shutdown() {
	s.mu.Lock()
	s.stopping = true
	for _, ps := range s.paths {
		close(ps.out)
	}
	s.mu.Unlock()

	flushed := make(chan struct{})
	go func() {
		s.writers.Wait()
		close(flushed)
	}()
	t := time.NewTimer(flushTimeout)
	select {
	case <-flushed:
	case <-t.C:
	}
	t.Stop()

	s.mu.Lock()
	paths := append([]*pathState(nil), s.paths...)
	s.mu.Unlock()
	for _, ps := range paths {
		ps.p.Close()
	}
	<-flushed
	s.readers.Wait()
}

func (s *Session) read(ps *pathState) {
	defer s.readers.Done()
	buf := make([]byte, MaxPacketLen+1) // one more, so that overlong datagrams show
	for {
		n, err := ps.p.Read(buf)
		if err != nil {
			s.mu.Lock()
			s.pathClosedLocked(ps, "read", err)
			s.mu.Unlock()
			return
		}
		s.receive(ps, buf[:n], s.cfg.Now())
	}
}

func (s *Session) write(ps *pathState) {
	defer s.writers.Done()
	for b := range ps.out {
		if _, err := ps.p.Write(b); err != nil {
			s.m.Inc("media_write_errors")
			if isClosedErr(err) {
				s.mu.Lock()
				s.pathClosedLocked(ps, "write", err)
				s.mu.Unlock()
			}
		}
	}
}

func (s *Session) pathClosedLocked(ps *pathState, op string, err error) {
	if ps.closed {
		return
	}
	ps.closed = true
	if !s.stopping {
		s.log.Info("media path closed", "path", ps.label(), "op", op, "err", err)
	}
}

// usec is the send-time clock.
func (s *Session) usec(now time.Time) uint32 { return uint32(now.Sub(s.epoch).Microseconds()) }

// sendLocked seals p once, with the next sequence number, and queues it on every path
// in to (copies of one packet share its sequence number, so the receiver keeps one).
func (s *Session) sendLocked(now time.Time, to []*pathState, p *Packet) {
	if s.stopping || len(to) == 0 {
		return
	}
	s.seq++
	p.Seq = s.seq
	p.SendTime = s.usec(now)
	b, err := s.ciph.Seal(make([]byte, 0, MinPacketLen+len(p.Payload)+replyBodyLen), p)
	if err != nil {
		// Only ErrSeqExhausted can happen here, after 178 years.
		s.log.Error("media seal", "err", err)
		return
	}
	for _, ps := range to {
		if ps.closed {
			continue
		}
		select {
		case ps.out <- b:
			ps.pktsSent++
			ps.bytesSent += uint64(len(b))
			s.st.BytesSent += uint64(len(b))
		default:
			s.m.Inc("media_send_queue_full")
		}
	}
}

func (s *Session) openPathsLocked() []*pathState {
	t := s.targets[:0]
	for _, ps := range s.paths {
		if !ps.closed {
			t = append(t, ps)
		}
	}
	s.targets = t
	return t
}

// mediaTargetsLocked is where audio and hold packets go: the active path (and the one
// it replaced, just after an upgrade), or every open path when none is live.
func (s *Session) mediaTargetsLocked(now time.Time) []*pathState {
	if s.active == nil {
		return s.openPathsLocked()
	}
	t := append(s.targets[:0], s.active)
	if s.prev != nil && s.prev != s.active && !s.prev.closed && now.Before(s.overlapUntil) {
		t = append(t, s.prev)
	}
	s.targets = t
	return t
}

func (s *Session) sendByeLocked(now time.Time) {
	if s.byeSent >= byeRounds || s.peerBye {
		return
	}
	s.byeSent++
	s.sendLocked(now, s.openPathsLocked(), &Packet{Type: TypeBye, Timestamp: uint32(s.frame * FrameSamples)})
}

// tickLocked advances the call by one 20 ms frame at now: path selection, probes, the
// outgoing frame (pcm, nil when there is none) or hold or bye packet, and playout. It
// returns what to play; ulaw is valid until the next receive.
func (s *Session) tickLocked(now time.Time, pcm []int16) (ulaw []byte, st playState) {
	s.selectPathLocked(now)
	ts := uint32(s.frame * FrameSamples)
	if !s.probed || now.Sub(s.lastProbe) >= s.cfg.ProbeInterval {
		s.probed, s.lastProbe = true, now
		for _, ps := range s.paths {
			if !ps.closed {
				s.sendLocked(now, []*pathState{ps}, &Packet{Type: TypeProbe, Timestamp: ts})
			}
		}
	}
	switch {
	case s.sourceDone:
		s.sendByeLocked(now)
	case s.held:
		if !s.holdSent || now.Sub(s.holdSentAt) >= s.holdInterval {
			s.holdSent, s.holdSentAt = true, now
			s.sendLocked(now, s.mediaTargetsLocked(now), &Packet{Type: TypeHold, Timestamp: ts})
			s.st.HoldSent++
		}
	case pcm != nil:
		var payload [FrameSamples]byte
		s.sendLocked(now, s.mediaTargetsLocked(now), &Packet{Type: TypeAudio, Timestamp: ts, Payload: EncodeUlaw(payload[:], pcm)})
		s.st.FramesSent++
		s.m.Inc("media_frames_sent")
	}
	s.frame++

	ulaw, st = s.jb.pop(now)
	if st == playConcealed {
		s.st.Concealed++
		s.m.Inc("media_frames_concealed")
	}
	return ulaw, st
}

// aliveLocked: packets arrive on the path and its probes are answered.
func (s *Session) aliveLocked(ps *pathState, now time.Time) bool {
	return !ps.closed &&
		!ps.lastRecv.IsZero() && now.Sub(ps.lastRecv) < s.cfg.DeadAfter &&
		!ps.lastReply.IsZero() && now.Sub(ps.lastReply) < s.replyTimeout
}

// selectPathLocked updates liveness and picks the path media goes to.
func (s *Session) selectPathLocked(now time.Time) {
	var best *pathState
	for _, ps := range s.paths {
		alive := s.aliveLocked(ps, now)
		if alive && !ps.alive {
			ps.aliveSince = now
		}
		ps.alive = alive
		if alive && (best == nil || ps.rank < best.rank) {
			best = ps
		}
	}
	cur := s.active
	switch {
	case cur != nil && cur.alive:
		if best != cur && best.rank < cur.rank && now.Sub(best.aliveSince) >= s.upgradeAfter {
			s.switchLocked(now, best, "upgrade: a better-ranked path is live")
			s.prev, s.overlapUntil = cur, now.Add(overlap)
		}
	case best != nil:
		reason := "first live path"
		switch {
		case cur != nil && cur.closed:
			reason = "failover: path closed"
		case cur != nil && now.Sub(cur.lastRecv) >= s.cfg.DeadAfter:
			reason = "failover: nothing received for " + s.cfg.DeadAfter.String()
		case cur != nil:
			reason = "failover: probes unanswered"
		case s.everActive:
			reason = "recovered: a path is live again"
		}
		s.switchLocked(now, best, reason)
		s.prev = nil
	case cur != nil:
		s.switchLocked(now, nil, "no live path: sending on every open path")
		s.prev = nil
	}
}

func (s *Session) switchLocked(now time.Time, to *pathState, reason string) {
	from := s.active
	s.active = to
	if to != nil {
		s.everActive = true
	}
	s.changes = append(s.changes, PathChange{At: now, From: from.label(), To: to.label(), Reason: reason})
	s.m.Inc("media_path_changes")
	s.log.Info("media path change", "from", from.label(), "to", to.label(), "reason", reason)
}

// receive handles one datagram from ps. The error says why a packet was dropped; the
// session has already counted it.
func (s *Session) receive(ps *pathState, b []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.receiveLocked(ps, b, now)
}

func (s *Session) receiveLocked(ps *pathState, b []byte, now time.Time) error {
	h, err := ParseHeader(b)
	if err != nil {
		return s.badLocked(ps, err)
	}
	if s.win.check(h.Seq) == replayed {
		return s.replayedLocked(ps, h)
	}
	p, err := s.ciph.openParsed(h, b)
	if err != nil {
		return s.badLocked(ps, err)
	}
	switch s.win.accept(h.Seq, ps.idx) {
	case duplicate:
		// Authentic: the path works, even though the other copy won.
		ps.lastRecv = now
		s.st.Duplicates++
		s.m.Inc("media_packets_duplicate")
		return fmt.Errorf("%w: %s %d again, over %s", ErrReplay, h.Type, h.Seq, ps.label())
	case replayed:
		return s.replayedLocked(ps, h)
	}
	ps.lastRecv = now
	ps.pktsRecv++
	ps.bytesRecv += uint64(len(b))
	s.st.BytesReceived += uint64(len(b))

	switch p.Type {
	case TypeAudio:
		s.audioLocked(&p, now)
	case TypeProbe:
		s.sendLocked(now, []*pathState{ps}, &Packet{Type: TypeProbeReply, Timestamp: uint32(s.frame * FrameSamples), EchoSeq: p.Seq, EchoTime: p.SendTime})
	case TypeProbeReply:
		if rtt := time.Duration(s.usec(now)-p.EchoTime) * time.Microsecond; rtt < maxRTT {
			ps.lastReply = now
			ps.observeRTT(rtt)
		}
	case TypeHold:
		s.peerHoldLocked(&p, now)
	case TypeBye:
		if !s.peerBye {
			s.peerBye = true
			s.peerByeIdx = s.frameIndexLocked(p.Timestamp)
			s.log.Info("media peer hung up")
		}
	}
	return nil
}

func (s *Session) badLocked(ps *pathState, err error) error {
	s.st.BadPackets++
	s.m.Inc("media_packets_bad")
	s.log.Debug("media bad packet", "path", ps.label(), "err", err)
	return err
}

func (s *Session) replayedLocked(ps *pathState, h Header) error {
	s.st.Replayed++
	s.m.Inc("media_packets_replayed")
	s.log.Debug("media replayed packet", "path", ps.label(), "type", h.Type, "seq", h.Seq)
	return fmt.Errorf("%w: %s %d over %s", ErrReplay, h.Type, h.Seq, ps.label())
}

// frameIndexLocked unwraps a media timestamp (RTP style, relative to the highest seen)
// and returns its frame index.
func (s *Session) frameIndexLocked(ts uint32) int64 {
	var ext int64
	if !s.rxStarted && s.extTs == 0 {
		ext = int64(ts)
	} else {
		ext = s.extTs + int64(int32(ts-uint32(s.extTs)))
	}
	s.extTs = max(s.extTs, ext)
	idx := ext / FrameSamples
	if ext < 0 && ext%FrameSamples != 0 {
		idx--
	}
	return idx
}

func (s *Session) audioLocked(p *Packet, now time.Time) {
	idx := s.frameIndexLocked(p.Timestamp)
	s.st.FramesReceived++
	s.m.Inc("media_frames_received")
	if !s.rxStarted {
		s.rxStarted = true
		s.baseIdx, s.highIdx = idx, idx
		s.firstAt = now
		close(s.first)
		s.log.Info("media first frame", "setup", now.Sub(s.runStart))
	}

	resumed := false
	switch s.jb.push(idx, p.Payload, now) {
	case pushLate:
		s.st.Late++
		s.m.Inc("media_frames_late")
	case pushResync:
		if s.peerHeld {
			resumed = true
			if idx > s.highIdx+1 {
				s.heldSkip += idx - s.highIdx - 1
			}
			s.peerHeld = false
			s.peerHeldTotal += now.Sub(s.peerHeldSince)
			s.log.Info("media peer resumed from hold")
		}
	}
	s.highIdx = max(s.highIdx, idx)
	s.baseIdx = min(s.baseIdx, idx)

	// RFC 3550 interarrival jitter, in samples.
	transit := int64(now.Sub(s.epoch)*SampleRate/time.Second) - int64(p.Timestamp)
	if s.haveTransit && !resumed {
		d := transit - s.lastTransit
		if d < 0 {
			d = -d
		}
		s.jitter += (float64(d) - s.jitter) / 16
	}
	s.lastTransit, s.haveTransit = transit, true

	if !s.lastAudioAt.IsZero() && !resumed && now.After(s.lastAudioAt) {
		gap := now.Sub(s.lastAudioAt)
		s.maxGap = max(s.maxGap, gap)
		// The gap belongs to every change that happened during it (give or take a
		// couple of frames: the peer's change, which caused it, is not simultaneous).
		const slack = 2 * FrameDuration
		for i := len(s.changes) - 1; i >= 0; i-- {
			c := &s.changes[i]
			if c.At.Before(s.lastAudioAt.Add(-slack)) {
				break
			}
			if !c.At.After(now.Add(slack)) {
				c.GapMs = max(c.GapMs, ms(gap))
			}
		}
	}
	if now.After(s.lastAudioAt) {
		s.lastAudioAt = now
	}
}

func (s *Session) peerHoldLocked(p *Packet, now time.Time) {
	idx := s.frameIndexLocked(p.Timestamp)
	if s.rxStarted && idx <= s.highIdx {
		return // overtaken by the audio that ended the hold
	}
	if !s.peerHeld {
		s.peerHeld, s.peerHeldSince = true, now
		s.log.Info("media peer on hold")
	}
	s.jb.hold(idx)
}

// Stats returns a snapshot of the call.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	st := s.st
	if s.rxStarted {
		expected := s.highIdx - s.baseIdx + 1 - s.heldSkip
		if lost := expected - int64(st.FramesReceived); lost > 0 {
			st.Lost = uint64(lost)
		}
		if expected > 0 {
			st.LossPercent = 100 * float64(st.Lost) / float64(expected)
		}
		st.SetupMs = ms(s.firstAt.Sub(s.runStart))
	} else {
		st.SetupMs = -1
	}
	st.JitterMs = s.jitter * 1000 / SampleRate
	st.MaxGapMs = ms(s.maxGap)
	if a := s.active; a != nil {
		st.ActiveKind, st.ActiveName = a.kind, a.name
		st.RTTMs = ms(a.srtt)
	}
	for _, ps := range s.paths {
		st.Paths = append(st.Paths, PathStats{
			Kind: ps.kind, Name: ps.name, Rank: ps.rank,
			Alive: s.aliveLocked(ps, now), Closed: ps.closed, RTTMs: ms(ps.srtt),
			PacketsSent: ps.pktsSent, PacketsReceived: ps.pktsRecv,
			BytesSent: ps.bytesSent, BytesReceived: ps.bytesRecv,
		})
	}
	st.PathChanges = append([]PathChange(nil), s.changes...)
	st.Held, st.PeerHeld, st.PeerHungUp = s.held, s.peerHeld, s.peerBye
	st.PeerHeldMs = ms(s.peerHeldTotal)
	if s.peerHeld {
		st.PeerHeldMs += ms(now.Sub(s.peerHeldSince))
	}
	return st
}
