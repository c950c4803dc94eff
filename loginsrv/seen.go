package loginsrv

import (
	"context"
	"sync"
	"time"
)

// lastSeen batches the last-seen times that logins and resumes record. Writing each one
// at once put a database write on every login's path: in a storm, thousands of them
// queued on SQLite's one writer with the supernodes' registrations behind them, and
// resumes failed on their deadline. Times are held in memory and written together, in
// one transaction, every flush interval (and when Serve ends). Readers see the pending
// time over the stored one, so the directory is never behind; a crash of the process
// loses at most one interval of last-seen times, nothing else.
type lastSeen struct {
	mu      sync.Mutex // mu protects pending
	pending map[string]time.Time
}

func newLastSeen() *lastSeen { return &lastSeen{pending: make(map[string]time.Time)} }

// note records that name was seen at t.
func (ls *lastSeen) note(name string, t time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if cur, ok := ls.pending[name]; !ok || t.After(cur) {
		ls.pending[name] = t
	}
}

// get returns the time noted for name and not yet written.
func (ls *lastSeen) get(name string) (time.Time, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	t, ok := ls.pending[name]
	return t, ok
}

// flush writes the pending times in one batch. Times that could not be written stay
// pending (unless a later one was noted meanwhile) for the next flush.
func (ls *lastSeen) flush(ctx context.Context, st Store) (int, error) {
	ls.mu.Lock()
	batch := ls.pending
	ls.pending = make(map[string]time.Time, len(batch))
	ls.mu.Unlock()
	if len(batch) == 0 {
		return 0, nil
	}
	if err := st.TouchUsers(ctx, batch); err != nil {
		ls.mu.Lock()
		for name, t := range batch {
			if cur, ok := ls.pending[name]; !ok || t.After(cur) {
				ls.pending[name] = t
			}
		}
		ls.mu.Unlock()
		return 0, err
	}
	return len(batch), nil
}

// runLastSeen flushes every interval until ctx ends, then once more.
func (s *Server) runLastSeen(ctx context.Context) {
	t := time.NewTicker(s.cfg.SeenFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.flushLastSeen(fctx)
			cancel()
			return
		case <-t.C:
			s.flushLastSeen(ctx)
		}
	}
}

func (s *Server) flushLastSeen(ctx context.Context) {
	n, err := s.seen.flush(ctx, s.cfg.Store)
	if err != nil {
		s.m.Inc("last_seen_flush_failures")
		s.log.Warn("last-seen times not written; kept for the next flush", "err", err)
		return
	}
	if n > 0 {
		s.m.Add("last_seen_written", uint64(n))
		s.m.Inc("last_seen_flushes")
	}
}
