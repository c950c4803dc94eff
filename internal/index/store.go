package index

import (
	"sync"
	"time"
)

// Entry is what a holder keeps for one user.
type Entry struct {
	Raw      []byte // the signed record as received
	Rec      Record
	Offline  bool      // the user logged off (signed) or their supernode reported them gone
	LastSeen time.Time // when the user was last known online
}

// Store holds the records a supernode is responsible for. It is safe for concurrent use.
type Store struct {
	mu   sync.Mutex // mu protects m
	m    map[string]*Entry
	keep time.Duration
}

// NewStore returns an empty store. Offline entries are kept for keep after their user
// left, so searches can say "offline, last seen T" (0 = 72 hours, Skype's promise).
func NewStore(keep time.Duration) *Store {
	if keep <= 0 {
		keep = 72 * time.Hour
	}
	return &Store{m: make(map[string]*Entry), keep: keep}
}

// Put stores a verified record unless the store holds one with an equal or higher
// sequence number (ErrStale).
func (s *Store) Put(raw []byte, rec Record, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[rec.Name]; ok && old.Rec.Seq >= rec.Seq {
		return ErrStale
	}
	e := &Entry{Raw: raw, Rec: rec, Offline: rec.Offline, LastSeen: now}
	s.m[rec.Name] = e
	return nil
}

// Gone marks name offline because the supernode bySN, which the record names as the user's
// supernode, saw the user's connection die. Any other supernode is ignored: a supernode can
// only speak for the users attached to it. It reports whether the entry changed.
func (s *Store) Gone(name, bySN string, seq uint64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[name]
	if !ok || e.Offline || e.Rec.Supernode != bySN || e.Rec.Seq > seq {
		return false
	}
	e.Offline = true
	e.LastSeen = now
	return true
}

// Get returns the entry for name. An online record past its expiry reads as offline,
// last seen at its expiry.
func (s *Store) Get(name string, now time.Time) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[name]
	if !ok {
		return Entry{}, false
	}
	out := *e
	if !out.Offline && !now.Before(out.Rec.Expires) {
		out.Offline = true
		out.LastSeen = out.Rec.Expires
	}
	return out, true
}

// Expire drops entries whose user has been offline longer than the keep period, and turns
// expired online records offline. It returns the names that went offline.
func (s *Store) Expire(now time.Time) (wentOffline []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, e := range s.m {
		if !e.Offline && !now.Before(e.Rec.Expires) {
			e.Offline = true
			e.LastSeen = e.Rec.Expires
			wentOffline = append(wentOffline, name)
		}
		if e.Offline && now.Sub(e.LastSeen) > s.keep {
			delete(s.m, name)
		}
	}
	return wentOffline
}

// Delete removes name.
func (s *Store) Delete(name string) {
	s.mu.Lock()
	delete(s.m, name)
	s.mu.Unlock()
}

// Len is the number of entries.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Snapshot returns a copy of every entry (for hand-off and repair).
func (s *Store) Snapshot() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, 0, len(s.m))
	for _, e := range s.m {
		out = append(out, *e)
	}
	return out
}
