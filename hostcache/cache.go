package hostcache

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unique"
)

// MaxEntries is the most entries a Cache holds.
const MaxEntries = 200

// Values for Entry.Source. Source is a label for logs and diagnostics; the
// cache does not rank by it and accepts other short values.
const (
	SourceLogin     = "login"     // from the login server's seed
	SourceSupernode = "supernode" // from a supernode
	SourceManual    = "manual"    // configured by the user
)

// Entry is one supernode in the cache.
type Entry struct {
	// Addr is host:port of the supernode's TCP control port, in the
	// canonical form described in the package comment.
	Addr string `json:"addr"`
	// PubKey is the supernode's public key (base64). It is opaque to the
	// cache, which keeps it and updates it on Merge.
	PubKey string `json:"pubkey,omitempty"`
	// Since is when the supernode came up, as reported by seeds; zero means
	// unknown and ranks as no uptime.
	Since time.Time `json:"since"`
	// LastSuccess is when this node last reached the supernode; zero means never.
	LastSuccess time.Time `json:"last_success,omitzero"`
	// LastFailure is when this node last failed to reach the supernode; zero means never.
	LastFailure time.Time `json:"last_failure,omitzero"`
	// Failures counts consecutive failures since the last success.
	Failures int `json:"failures,omitempty"`
	// Source says where the entry came from: SourceLogin, SourceSupernode or SourceManual.
	Source string `json:"source,omitempty"`
}

// Options configures a Cache. The zero value is ready to use.
type Options struct {
	// Logger receives warnings (a corrupt file) and debug events (entries
	// ignored, dropped or aged out). nil means slog.Default().
	Logger *slog.Logger

	// MaxFailures is the number of consecutive failures after which an entry
	// with no recent success is aged out (see AgeOut). 0 means 5.
	MaxFailures int

	// AgeOut is how old the last success of an entry with at least
	// MaxFailures consecutive failures may be before the entry is removed; an
	// entry that never succeeded is always old enough. 0 means 7 days.
	AgeOut time.Duration

	// Now is the clock used for ranking and for the times recorded by
	// MarkSuccess and MarkFailure. nil means time.Now.
	Now func() time.Time
}

const (
	defaultMaxFailures = 5
	defaultAgeOut      = 7 * 24 * time.Hour
)

func (o Options) validate() error {
	if o.MaxFailures < 0 {
		return fmt.Errorf("%w: MaxFailures is %d; use 0 for the default (%d) or a positive count", ErrInvalidOptions, o.MaxFailures, defaultMaxFailures)
	}
	if o.AgeOut < 0 {
		return fmt.Errorf("%w: AgeOut is %v; use 0 for the default (%v) or a positive duration", ErrInvalidOptions, o.AgeOut, defaultAgeOut)
	}
	return nil
}

// Cache is a ranked, size-limited set of supernode entries backed by a file.
// Create one with Open.
type Cache struct {
	path        string
	log         *slog.Logger
	maxFailures int
	ageOut      time.Duration
	now         func() time.Time
	corrupted   bool // set by Open, read-only afterwards

	// saveMu serialises Save, so that a Save that took its snapshot later
	// also renames later and the file never goes back in time.
	saveMu sync.Mutex
	saved  uint64 // the version last written; guarded by saveMu
	wrote  bool   // a Save has written the file; guarded by saveMu

	// mu protects all following fields.
	mu      sync.Mutex
	entries []slot // distinct canonical Addrs; never more than MaxEntries between calls
	version uint64 // counts changes to entries, so that Save can skip an unchanged cache
}

// slot is how the cache holds an entry. What seeds and supernodes report of a supernode
// (address, key, start time, source) is interned: the clients of a population hear of
// the same few hundred supernodes, so a process that simulates 100,000 clients holds
// each report once instead of once per client, and a real client pays 16 bytes per
// entry. This node's own observations take memory only once there are any.
type slot struct {
	addr unique.Handle[string] // canonical
	rep  unique.Handle[report]
	obs  *observed // nil: never marked
}

// report is the part of an Entry besides its address that others report.
type report struct {
	PubKey, Source string
	Since          time.Time // UTC, no monotonic reading: comparable
}

// observed is the part of an Entry this node observed itself.
type observed struct {
	LastSuccess, LastFailure time.Time
	Failures                 int
}

func newSlot(e Entry) slot { return slotAt(unique.Make(e.Addr), e) }

// slotAt is newSlot for an entry whose address handle is made already.
func slotAt(addr unique.Handle[string], e Entry) slot {
	s := slot{addr: addr, rep: unique.Make(report{PubKey: e.PubKey, Source: e.Source, Since: e.Since})}
	if !e.LastSuccess.IsZero() || !e.LastFailure.IsZero() || e.Failures != 0 {
		s.obs = &observed{LastSuccess: e.LastSuccess, LastFailure: e.LastFailure, Failures: e.Failures}
	}
	return s
}

func (s slot) entry() Entry {
	r := s.rep.Value()
	e := Entry{Addr: s.addr.Value(), PubKey: r.PubKey, Source: r.Source, Since: r.Since}
	if s.obs != nil {
		e.LastSuccess, e.LastFailure, e.Failures = s.obs.LastSuccess, s.obs.LastFailure, s.obs.Failures
	}
	return e
}

// findLocked returns the index of the entry for the canonical addr, or -1. A scan of at
// most MaxEntries handles (pointer comparisons) beats a map here: it costs nothing to hold.
func (c *Cache) findLocked(addr string) int {
	h := unique.Make(addr)
	for i := range c.entries {
		if c.entries[i].addr == h {
			return i
		}
	}
	return -1
}

// removeLocked deletes the entry at index i.
func (c *Cache) removeLocked(i int) {
	c.entries = slices.Delete(c.entries, i, i+1)
	c.version++
}

func newCache(path string, opts Options) *Cache {
	c := &Cache{
		path:        path,
		log:         opts.Logger,
		maxFailures: opts.MaxFailures,
		ageOut:      opts.AgeOut,
		now:         opts.Now,
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.maxFailures == 0 {
		c.maxFailures = defaultMaxFailures
	}
	if c.ageOut == 0 {
		c.ageOut = defaultAgeOut
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// clock returns the current time without a monotonic reading or location, as
// stored in entries.
func (c *Cache) clock() time.Time { return c.now().UTC() }

// Path returns the file the cache was opened from and saves to.
func (c *Cache) Path() string { return c.path }

// Corrupted reports whether Open found the file corrupt, moved it aside to
// Path()+".corrupt" and started empty.
func (c *Cache) Corrupted() bool { return c.corrupted }

// Len returns the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Merge adds entries whose Addr is new and updates those already present:
// Since is replaced when the reported one is non-zero, PubKey and Source when
// the reported ones are non-empty. LastSuccess, LastFailure and Failures in
// the input are ignored (they are this node's own observations). Entries with
// an invalid address or field are ignored. If the cache then holds more than
// MaxEntries, the worst-ranked entries are dropped.
func (c *Cache) Merge(entries ...Entry) {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range entries {
		r, err := normalize(Entry{Addr: in.Addr, PubKey: in.PubKey, Since: in.Since, Source: in.Source})
		if err != nil {
			c.log.Debug("hostcache: ignoring reported entry", "addr", in.Addr, "err", err)
			continue
		}
		i := c.findLocked(r.Addr)
		if i < 0 {
			c.entries = append(c.entries, newSlot(r))
			c.version++
			continue
		}
		old := c.entries[i].rep.Value()
		rep := old
		if !r.Since.IsZero() {
			rep.Since = r.Since
		}
		if r.PubKey != "" {
			rep.PubKey = r.PubKey
		}
		if r.Source != "" {
			rep.Source = r.Source
		}
		if rep != old {
			c.entries[i].rep = unique.Make(rep)
			c.version++
		}
	}
	c.trimLocked(now)
}

// MarkSuccess records that addr was reached now: LastSuccess = now and
// Failures = 0. Unknown addresses are ignored.
func (c *Cache) MarkSuccess(addr string) {
	addr, err := canonicalAddr(addr)
	if err != nil {
		return
	}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.findLocked(addr); i >= 0 {
		o := c.entries[i].observe()
		o.LastSuccess = now
		c.version++
		o.Failures = 0
	}
}

// observe returns the slot's observations, allocating them at the first.
func (s *slot) observe() *observed {
	if s.obs == nil {
		s.obs = &observed{}
	}
	return s.obs
}

// MarkFailure records that reaching addr failed now: LastFailure = now and
// Failures + 1. The entry is then removed if it has aged out (see Options).
// Unknown addresses are ignored.
func (c *Cache) MarkFailure(addr string) {
	addr, err := canonicalAddr(addr)
	if err != nil {
		return
	}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.findLocked(addr)
	if i < 0 {
		return
	}
	o := c.entries[i].observe()
	o.LastFailure = now
	c.version++
	if o.Failures < math.MaxInt {
		o.Failures++
	}
	if e := c.entries[i].entry(); c.agedOut(&e, now) {
		c.removeLocked(i)
		c.log.Debug("hostcache: entry aged out", "addr", addr, "failures", e.Failures, "last_success", e.LastSuccess)
	}
}

// Remove deletes addr from the cache, if present.
func (c *Cache) Remove(addr string) {
	addr, err := canonicalAddr(addr)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.findLocked(addr); i >= 0 {
		c.removeLocked(i)
	}
}

// Ranked returns a copy of the entries, best first.
func (c *Cache) Ranked() []Entry {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rankedLocked(now)
}

// agedOut reports whether e meets the age-out rule at now.
func (c *Cache) agedOut(e *Entry, now time.Time) bool {
	return e.Failures >= c.maxFailures &&
		(e.LastSuccess.IsZero() || now.Sub(e.LastSuccess) > c.ageOut)
}

// trimLocked drops the worst-ranked entries beyond MaxEntries.
func (c *Cache) trimLocked(now time.Time) {
	if len(c.entries) <= MaxEntries {
		return
	}
	order := c.orderLocked(now)
	kept := make([]slot, 0, MaxEntries) // not the grown array: a full cache stays small
	for _, x := range order[:MaxEntries] {
		kept = append(kept, c.entries[x.i])
	}
	c.entries = kept
	c.version++
	c.log.Debug("hostcache: dropped worst-ranked entries", "dropped", len(order)-MaxEntries, "kept", MaxEntries)
}

func (c *Cache) rankedLocked(now time.Time) []Entry {
	order := c.orderLocked(now)
	ranked := make([]Entry, len(order))
	for i, x := range order {
		ranked[i] = c.entries[x.i].entry()
	}
	return ranked
}

// ranked is an entry's place in the order: its score and index in c.entries.
type ranked struct {
	s float64
	i int
}

// orderLocked returns the entries' indices, best first: by score, then by address. It
// ranks the slots as they are held, without building an Entry for each (a client
// population ranks its caches at every attach and merge).
func (c *Cache) orderLocked(now time.Time) []ranked {
	list := make([]ranked, len(c.entries))
	for i, sl := range c.entries {
		r := sl.rep.Value()
		e := Entry{Since: r.Since}
		if sl.obs != nil {
			e.LastSuccess, e.Failures = sl.obs.LastSuccess, sl.obs.Failures
		}
		list[i] = ranked{score(&e, now), i}
	}
	slices.SortFunc(list, func(a, b ranked) int {
		if r := cmp.Compare(b.s, a.s); r != 0 {
			return r
		}
		return strings.Compare(c.entries[a.i].addr.Value(), c.entries[b.i].addr.Value())
	})
	return list
}

// Ranking weights; the package comment explains the choice.
const (
	uptimeUnit          = time.Minute
	maxUptimeCredit     = 30 * 24 * time.Hour
	recentSuccessWindow = time.Hour
	successBonus        = 4.0
	failurePenalty      = 8.0
)

// score is the single ranking function: higher is better. It depends only on
// e and now.
func score(e *Entry, now time.Time) float64 {
	var s float64
	if !e.Since.IsZero() {
		up := min(max(now.Sub(e.Since), 0), maxUptimeCredit)
		s = math.Log2(1 + float64(up)/float64(uptimeUnit))
	}
	if !e.LastSuccess.IsZero() && now.Sub(e.LastSuccess) <= recentSuccessWindow {
		s += successBonus
	}
	return s - failurePenalty*float64(e.Failures)
}
