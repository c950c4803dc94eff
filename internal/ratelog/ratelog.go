// Package ratelog bounds how much a flood can make a server log. It wraps a slog.Handler:
// each message (the constant text a call site logs) may appear Burst times per Interval,
// and a message that names a source (an attribute such as "remote") at most once per
// Interval for that source. What is held back is counted (log_suppressed) and summed up
// in one line, "log lines suppressed", the next time the window of that message turns.
//
// Log growth is then bounded by the number of distinct messages in the code, whatever
// the rate or the number of addresses of the traffic that causes them.
package ratelog

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/metrics"
)

// Options tune the limits. The zero value of each field takes the default it names.
type Options struct {
	Burst      int              // lines of one message per Interval; 0 = 20
	Interval   time.Duration    // the window; 0 = 10 s
	SourceKeys []string         // attributes that name a source; nil = remote, addr, src
	Counter    metrics.Counter  // counts log_suppressed; nil = not counted
	Now        func() time.Time // the clock; nil = time.Now
}

// maxSources bounds the per-source keys remembered in one window: past it, only the
// per-message limit applies until the window turns.
const maxSources = 4096

// maxMessages bounds the message windows: past it (messages built at run time, such as a
// library's formatted lines), every new message shares one window, so the bound on log
// growth holds for them too.
const maxMessages = 1024

// overflowKey is the window of the messages past maxMessages.
const overflowKey = "\x00other messages"

// New returns a handler that passes to next what the limits allow.
func New(next slog.Handler, o Options) slog.Handler {
	if o.Burst <= 0 {
		o.Burst = 20
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.SourceKeys == nil {
		o.SourceKeys = []string{"remote", "addr", "src"}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &handler{next: next, st: &state{o: o, msgs: make(map[string]*window), srcs: make(map[srcKey]struct{})}}
}

// Wrap returns l with its handler limited by New, counting into m. A nil l stays nil.
func Wrap(l *slog.Logger, m metrics.Counter) *slog.Logger {
	if l == nil {
		return nil
	}
	if _, ok := l.Handler().(*handler); ok {
		return l
	}
	return slog.New(New(l.Handler(), Options{Counter: m}))
}

type window struct {
	start      time.Time
	n          int    // lines passed in this window
	suppressed uint64 // lines held back in this window
	level      slog.Level
}

type srcKey struct{ msg, src string }

// state is shared by a handler and every handler derived from it with WithAttrs or
// WithGroup, so that one limit covers a whole role's logger.
type state struct {
	o Options

	mu        sync.Mutex // mu protects the following fields
	msgs      map[string]*window
	srcs      map[srcKey]struct{} // sources seen in the current source window
	srcWindow time.Time
}

type handler struct {
	next slog.Handler
	st   *state
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{next: h.next.WithAttrs(as), st: h.st}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), st: h.st}
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	pass, summary := h.st.admit(r)
	if summary != nil {
		if err := h.next.Handle(ctx, *summary); err != nil {
			return err
		}
	}
	if !pass {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// admit decides whether r passes, and returns the summary line of the window of r's
// message that just ended, if it held anything back.
func (st *state) admit(r slog.Record) (bool, *slog.Record) {
	now := st.o.Now()
	src := st.source(r)
	st.mu.Lock()
	defer st.mu.Unlock()
	var summary *slog.Record
	key := r.Message
	w := st.msgs[key]
	if w == nil && len(st.msgs) >= maxMessages {
		key = overflowKey
		w = st.msgs[key]
	}
	if w == nil {
		w = &window{start: now}
		st.msgs[key] = w
	}
	if now.Sub(w.start) >= st.o.Interval {
		if w.suppressed > 0 {
			s := slog.NewRecord(now, w.level, "log lines suppressed", 0)
			what := key
			if key == overflowKey {
				what = "(other messages)"
			}
			s.AddAttrs(slog.String("msg", what), slog.Uint64("count", w.suppressed), slog.Duration("interval", now.Sub(w.start).Round(time.Millisecond)))
			summary = &s
		}
		*w = window{start: now}
	}
	if now.Sub(st.srcWindow) >= st.o.Interval {
		clear(st.srcs)
		st.srcWindow = now
	}
	pass := w.n < st.o.Burst
	if pass && src != "" {
		k := srcKey{r.Message, src}
		if _, seen := st.srcs[k]; seen {
			pass = false
		} else if len(st.srcs) < maxSources {
			st.srcs[k] = struct{}{}
		}
	}
	if !pass {
		if w.suppressed == 0 || r.Level > w.level {
			w.level = r.Level
		}
		w.suppressed++
		if st.o.Counter != nil {
			st.o.Counter.Inc("log_suppressed")
		}
		return false, summary
	}
	w.n++
	return true, summary
}

// source returns the value of r's first source attribute, or "": an address without
// its port, so that one host's many connections are one source.
func (st *state) source(r slog.Record) string {
	var src string
	r.Attrs(func(a slog.Attr) bool {
		for _, k := range st.o.SourceKeys {
			if a.Key == k {
				src = a.Value.String()
				if ap, err := netip.ParseAddrPort(src); err == nil {
					src = ap.Addr().Unmap().String()
				}
				return false
			}
		}
		return true
	})
	return src
}
