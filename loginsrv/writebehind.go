package loginsrv

import (
	"context"
	"errors"
	"sync"
	"time"
)

// writeBehind batches the database writes that need not be on a request's path: the
// last-seen time of each login and resume, and the row of each supernode (registrations,
// heartbeats and departures).
// Writing each at once put a write on every login's and registration's path, and in a
// storm thousands queued on SQLite's one writer: resumes failed on their deadline, a
// layer of supernodes registering at once (the login server restarted) waited behind
// them, missed heartbeats and registered again. They are held in memory and written
// together, in one transaction each, every SeenFlush and when Run ends. Readers see
// the pending last-seen time over the stored one, so the directory is never behind; a
// crash of the process loses at most one interval of them, and supernode rows only
// seed a restarted server's list of supernodes (Server.Run).
type writeBehind struct {
	mu   sync.Mutex // mu protects the following fields
	seen map[string]time.Time
	sns  map[string]SupernodeRecord
}

func newWriteBehind() *writeBehind {
	return &writeBehind{seen: make(map[string]time.Time), sns: make(map[string]SupernodeRecord)}
}

// noteSeen records that name was seen at t.
func (w *writeBehind) noteSeen(name string, t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.noteSeenLocked(name, t)
}

func (w *writeBehind) noteSeenLocked(name string, t time.Time) {
	if cur, ok := w.seen[name]; !ok || t.After(cur) {
		w.seen[name] = t
	}
}

// lastSeen returns the time noted for name and not yet written.
func (w *writeBehind) lastSeen(name string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.seen[name]
	return t, ok
}

// noteSupernode records a registration, heartbeat or departure; a later one of the same
// supernode (by LastHeartbeat, or Left for a departure) replaces it, keeping the first
// FirstSeen.
func (w *writeBehind) noteSupernode(r SupernodeRecord) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.noteSupernodeLocked(r)
}

func (w *writeBehind) noteSupernodeLocked(r SupernodeRecord) {
	if cur, ok := w.sns[r.ID]; ok {
		if cur.noted().After(r.noted()) {
			return
		}
		if !cur.FirstSeen.IsZero() {
			r.FirstSeen = cur.FirstSeen
		}
	}
	w.sns[r.ID] = r
}

// noted is when what r says happened: its departure, or else its last heartbeat.
func (r SupernodeRecord) noted() time.Time {
	if !r.Left.IsZero() {
		return r.Left
	}
	return r.LastHeartbeat
}

// flush writes what is pending, each kind in one batch. What could not be written stays
// pending (unless newer was noted meanwhile) for the next flush.
func (w *writeBehind) flush(ctx context.Context, st Store) (seen, sns int, err error) {
	w.mu.Lock()
	seenBatch, snBatch := w.seen, w.sns
	w.seen, w.sns = make(map[string]time.Time, len(seenBatch)), make(map[string]SupernodeRecord, len(snBatch))
	w.mu.Unlock()
	var errSeen, errSNs error
	if len(seenBatch) > 0 {
		if errSeen = st.TouchUsers(ctx, seenBatch); errSeen == nil {
			seen = len(seenBatch)
		}
	}
	if len(snBatch) > 0 {
		rs := make([]SupernodeRecord, 0, len(snBatch))
		for _, r := range snBatch {
			rs = append(rs, r)
		}
		if errSNs = st.UpsertSupernodes(ctx, rs); errSNs == nil {
			sns = len(rs)
		}
	}
	if errSeen != nil || errSNs != nil {
		w.mu.Lock()
		if errSeen != nil {
			for name, t := range seenBatch {
				w.noteSeenLocked(name, t)
			}
		}
		if errSNs != nil {
			for _, r := range snBatch {
				w.noteSupernodeLocked(r)
			}
		}
		w.mu.Unlock()
	}
	return seen, sns, errors.Join(errSeen, errSNs)
}

// runWriteBehind flushes every SeenFlush until ctx ends, then once more.
func (s *Server) runWriteBehind(ctx context.Context) {
	t := s.clk.NewTicker(s.cfg.SeenFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.flushWrites(fctx)
			cancel()
			return
		case <-t.Chan():
			s.flushWrites(ctx)
		}
	}
}

func (s *Server) flushWrites(ctx context.Context) {
	seen, sns, err := s.writes.flush(ctx, s.cfg.Store)
	if err != nil {
		s.m.Inc("write_behind_failures")
		s.log.Warn("batched writes failed; kept for the next flush", "err", err)
	}
	if seen > 0 {
		s.m.Add("last_seen_written", uint64(seen))
	}
	if sns > 0 {
		s.m.Add("supernode_rows_written", uint64(sns))
	}
	if seen+sns > 0 {
		s.m.Inc("write_behind_flushes")
	}
}
