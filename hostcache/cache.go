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

	// mu protects all following fields.
	mu      sync.Mutex
	entries map[string]*Entry // by canonical Addr; never more than MaxEntries between calls
}

func newCache(path string, opts Options) *Cache {
	c := &Cache{
		path:        path,
		log:         opts.Logger,
		maxFailures: opts.MaxFailures,
		ageOut:      opts.AgeOut,
		now:         opts.Now,
		entries:     make(map[string]*Entry),
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
		e := c.entries[r.Addr]
		if e == nil {
			e = &Entry{Addr: r.Addr}
			c.entries[r.Addr] = e
		}
		if !r.Since.IsZero() {
			e.Since = r.Since
		}
		if r.PubKey != "" {
			e.PubKey = r.PubKey
		}
		if r.Source != "" {
			e.Source = r.Source
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
	if e := c.entries[addr]; e != nil {
		e.LastSuccess = now
		e.Failures = 0
	}
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
	e := c.entries[addr]
	if e == nil {
		return
	}
	e.LastFailure = now
	if e.Failures < math.MaxInt {
		e.Failures++
	}
	if c.agedOut(e, now) {
		delete(c.entries, addr)
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
	delete(c.entries, addr)
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
	ranked := c.rankedLocked(now)
	for _, e := range ranked[MaxEntries:] {
		delete(c.entries, e.Addr)
	}
	c.log.Debug("hostcache: dropped worst-ranked entries", "dropped", len(ranked)-MaxEntries, "kept", MaxEntries)
}

func (c *Cache) rankedLocked(now time.Time) []Entry {
	type scored struct {
		s float64
		e *Entry
	}
	list := make([]scored, 0, len(c.entries))
	for _, e := range c.entries {
		list = append(list, scored{score(e, now), e})
	}
	slices.SortFunc(list, func(a, b scored) int {
		if r := cmp.Compare(b.s, a.s); r != 0 {
			return r
		}
		return strings.Compare(a.e.Addr, b.e.Addr)
	})
	out := make([]Entry, len(list))
	for i, x := range list {
		out[i] = *x.e
	}
	return out
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
