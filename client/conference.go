package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/media"
)

// Conferences. The most capable participant mixes: it holds a 1:1 call with every
// other participant and sends each the sum of everyone else's audio (its own voice
// included, the listener's excluded). Capability is judged by NAT: a participant whose
// NAT lets everyone reach it (public, then full cone, ...) carries every leg on the best
// paths; ties go to the one who started the conference. A mixer that is not the
// initiator learns it is one from the invite, which names the other participants.

// natRank orders NAT classes by how reachable they make a mixer; lower is better.
func natRank(classic string) int {
	switch classic {
	case "open":
		return 0
	case "full cone":
		return 1
	case "restricted cone":
		return 2
	case "port-restricted cone":
		return 4
	case "symmetric":
		return 5
	case "udp-blocked", "udp blocked":
		return 6
	}
	return 3 // unknown: as good as a cone
}

// ConferenceReport is what a conference did, as this client saw it: one report per leg
// (per other participant when this client mixed, else the one leg to the mixer).
type ConferenceReport struct {
	Mixer string       `json:"mixer"`
	Legs  []CallReport `json:"legs"`
}

// Conference starts a conference with names, and runs it to its end (opts.Duration, the
// end of opts.Source, or every other participant gone).
func (c *Client) Conference(ctx context.Context, names []string, opts CallOptions) (ConferenceReport, error) {
	return c.phone.conference(ctx, names, opts)
}

// conference is Client.Conference.
func (p *phone) conference(ctx context.Context, names []string, opts CallOptions) (ConferenceReport, error) {
	if err := p.sig.online(); err != nil {
		return ConferenceReport{}, err
	}
	if len(names) < 2 || len(names) > callsig.MaxConf {
		return ConferenceReport{}, fmt.Errorf("a conference takes 2 to %d other participants", callsig.MaxConf)
	}
	if slices.Contains(names, p.user) {
		return ConferenceReport{}, errors.New("you are in the conference already; name the others")
	}
	mixer, best := p.user, natRank(p.net.natStatus().Classic)
	if p.cfg.NoMixing {
		mixer, best = "", 1<<30
	}
	for _, n := range names {
		rec, err := p.sig.locate(ctx, n)
		if err != nil {
			return ConferenceReport{}, err
		}
		if r := natRank(rec.NAT); r < best {
			mixer, best = n, r
		}
	}
	p.log.Info("conference", "participants", names, "mixer", mixer)
	if mixer == p.user {
		legs, err := p.mix(ctx, names, opts, "")
		return ConferenceReport{Mixer: mixer, Legs: legs}, err
	}
	var others []string
	for _, n := range names {
		if n != mixer {
			others = append(others, n)
		}
	}
	opts.conf = others
	rep, err := p.place(ctx, mixer, opts)
	return ConferenceReport{Mixer: mixer, Legs: []CallReport{rep}}, err
}

// mix runs a conference with this client as the mixer: it calls every name (and, when
// hosting for someone else, answers the call with id answer), and mixes until the end.
func (p *phone) mix(ctx context.Context, names []string, opts CallOptions, answer string) ([]CallReport, error) {
	ctx, cancel := withDuration(ctx, opts.Duration)
	defer cancel()
	n := len(names)
	if answer != "" {
		n++
	}
	h := newHub(n, opts.Source, opts.Sink)
	reports := make([]CallReport, n)
	var wg sync.WaitGroup
	var live sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		live.Add(1)
		go func() {
			defer wg.Done()
			defer live.Done()
			o := CallOptions{Source: h.source(i), Sink: h.sink(i), conf: names, inConf: true}
			var rep CallReport
			var err error
			if answer != "" && i == n-1 {
				rep, err = p.answer(ctx, answer, o)
				// The one who asked for the conference left: it is over.
				cancel()
			} else {
				rep, err = p.place(ctx, names[i], o)
			}
			if err != nil {
				p.log.Info("conference leg ended", "peer", rep.Peer, "err", err)
			}
			reports[i] = rep
			h.leave(i)
		}()
	}
	hubDone := make(chan error, 1)
	go func() { hubDone <- h.run(ctx) }()
	go func() { live.Wait(); cancel() }()
	wg.Wait()
	cancel()
	err := <-hubDone
	return reports, err
}

// hub mixes one conference every 20 ms: each leg's latest frame in, everyone else's
// sum out, and the mixer's own voice in and everyone's sum out to its own sink.
type hub struct {
	own     media.FrameSource
	ownSink media.FrameSink

	mu   sync.Mutex  // mu protects the following fields
	in   [][][]int16 // per leg: frames received, oldest first, at most hubDepth
	out  [][][]int16 // per leg: mixes to send
	gone []bool
}

// hubDepth bounds each leg's queues: 3 frames (60 ms); older frames are dropped so the
// mix never lags behind.
const hubDepth = 3

func newHub(n int, own media.FrameSource, sink media.FrameSink) *hub {
	if own == nil {
		own = media.Silence{}
	}
	if sink == nil {
		sink = media.Discard{}
	}
	return &hub{own: own, ownSink: sink, in: make([][][]int16, n), out: make([][][]int16, n), gone: make([]bool, n)}
}

func (h *hub) leave(i int) {
	h.mu.Lock()
	h.gone[i] = true
	h.in[i], h.out[i] = nil, nil
	h.mu.Unlock()
}

func push(q [][]int16, f []int16) [][]int16 {
	if len(q) >= hubDepth {
		q = q[1:]
	}
	return append(q, f)
}

// run mixes until ctx ends; the mixer's own source ending silences it, nothing more. It
// mixes a frame every frame duration of real time, not of the client's clock: the legs'
// media sessions send and play their frames at that pace.
func (h *hub) run(ctx context.Context) error {
	t := time.NewTicker(media.FrameDuration)
	defer t.Stop()
	n := len(h.in)
	var m media.Mixer
	in := make([][]int16, n+1)
	out := make([][]int16, n+1)
	for i := range out {
		out[i] = make([]int16, media.FrameSamples)
	}
	ownFrame := make([]int16, media.FrameSamples)
	ownDone := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !ownDone {
			if err := h.own.ReadFrame(ownFrame); err != nil {
				ownDone = true
				clear(ownFrame)
			}
		}
		in[n] = ownFrame
		h.mu.Lock()
		for i := 0; i < n; i++ {
			in[i] = nil
			if len(h.in[i]) > 0 {
				in[i], h.in[i] = h.in[i][0], h.in[i][1:]
			}
		}
		m.Mix(out, in)
		for i := 0; i < n; i++ {
			if !h.gone[i] {
				h.out[i] = push(h.out[i], slices.Clone(out[i]))
			}
		}
		h.mu.Unlock()
		if err := h.ownSink.WriteFrame(out[n], false); err != nil {
			return err
		}
	}
}

// source is what leg i sends: the mix for it, or silence while none is ready.
func (h *hub) source(i int) media.FrameSource { return hubSource{h, i} }

// sink takes what leg i receives.
func (h *hub) sink(i int) media.FrameSink { return hubSink{h, i} }

type hubSource struct {
	h *hub
	i int
}

func (s hubSource) ReadFrame(pcm []int16) error {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if q := s.h.out[s.i]; len(q) > 0 {
		copy(pcm, q[0])
		s.h.out[s.i] = q[1:]
		return nil
	}
	clear(pcm)
	return nil
}

type hubSink struct {
	h *hub
	i int
}

func (s hubSink) WriteFrame(pcm []int16, lost bool) error {
	if lost {
		return nil // concealment is silence, which the mixer assumes for a missing frame
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if !s.h.gone[s.i] {
		s.h.in[s.i] = push(s.h.in[s.i], slices.Clone(pcm))
	}
	return nil
}
