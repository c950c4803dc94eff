package hostcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/syncbuf"
)

// fakeClock is an injectable clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newLogger returns a logger writing text records of every level to a buffer.
func newLogger() (*slog.Logger, *syncbuf.Buffer) {
	buf := new(syncbuf.Buffer)
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// open opens a cache at path with the clock and a discarding logger.
func open(t *testing.T, path string, clk *fakeClock, opts Options) *Cache {
	t.Helper()
	opts.Now = clk.Now
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	return c
}

func newTestCache(t *testing.T, clk *fakeClock) *Cache {
	t.Helper()
	return open(t, filepath.Join(t.TempDir(), "hostcache.json"), clk, Options{})
}

func addrs(entries []Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Addr
	}
	return out
}

func wantOrder(t *testing.T, c *Cache, want ...string) {
	t.Helper()
	if got := addrs(c.Ranked()); !slices.Equal(got, want) {
		t.Errorf("Ranked() = %v, want %v", got, want)
	}
}

func find(c *Cache, addr string) (Entry, bool) {
	for _, e := range c.Ranked() {
		if e.Addr == addr {
			return e, true
		}
	}
	return Entry{}, false
}

func addr(i int) string { return fmt.Sprintf("10.0.%d.%d:33033", i/256, i%256) }

func TestMergeNeverExceedsMaxEntries(t *testing.T) {
	clk := newClock()
	now := clk.Now()

	// Entry i came up i minutes ago, so the 200 with the largest i are best.
	many := make([]Entry, 1000)
	for i := range many {
		many[i] = Entry{Addr: addr(i), Since: now.Add(-time.Duration(i) * time.Minute), Source: SourceLogin}
	}
	check := func(t *testing.T, c *Cache) {
		t.Helper()
		if c.Len() != MaxEntries {
			t.Fatalf("Len() = %d, want %d", c.Len(), MaxEntries)
		}
		got := c.Ranked()
		if len(got) != MaxEntries {
			t.Fatalf("len(Ranked()) = %d, want %d", len(got), MaxEntries)
		}
		for i, e := range got {
			if want := addr(999 - i); e.Addr != want {
				t.Fatalf("Ranked()[%d] = %s, want %s (the longest-lived must be kept)", i, e.Addr, want)
			}
		}
	}

	t.Run("one call", func(t *testing.T) {
		c := newTestCache(t, clk)
		c.Merge(many...)
		check(t, c)
	})
	t.Run("one at a time", func(t *testing.T) {
		c := newTestCache(t, clk)
		for _, e := range many {
			c.Merge(e)
			if c.Len() > MaxEntries {
				t.Fatalf("Len() = %d after merging %s, want <= %d", c.Len(), e.Addr, MaxEntries)
			}
		}
		check(t, c)
	})
	t.Run("reverse order", func(t *testing.T) {
		c := newTestCache(t, clk)
		for _, e := range slices.Backward(many) {
			c.Merge(e)
		}
		check(t, c)
	})
}

func TestMergeAddressValidation(t *testing.T) {
	clk := newClock()
	for _, tc := range []struct {
		in, want string // want "" means ignored
	}{
		{"", ""},
		{"example.com", ""},
		{"example.com:", ""},
		{"example.com:0", ""},
		{"example.com:65536", ""},
		{"example.com:-1", ""},
		{"example.com:+80", ""},
		{"example.com:http", ""},
		{":33033", ""},
		{"[::1:33033", ""},
		{"::1:33033", ""},
		{"bad host:80", ""},
		{"bad\nhost:80", ""},
		{"\xff:80", ""},
		{strings.Repeat("a", 400) + ":80", ""},
		{"example.com:1", "example.com:1"},
		{"example.com:65535", "example.com:65535"},
		{"example.com:0080", "example.com:80"},
		{"203.0.113.7:33033", "203.0.113.7:33033"},
		{"[2001:db8::1]:33033", "[2001:db8::1]:33033"},
		{"[fe80::1%eth0]:33033", "[fe80::1%eth0]:33033"},
		{"[sn.example.net]:33033", "sn.example.net:33033"},
		{"[::1]:00080", "[::1]:80"},
	} {
		c := newTestCache(t, clk)
		c.Merge(Entry{Addr: tc.in})
		got := addrs(c.Ranked())
		var want []string
		if tc.want != "" {
			want = []string{tc.want}
		}
		if !slices.Equal(got, want) {
			t.Errorf("Merge(%q): entries %q, want %q", tc.in, got, want)
		}
	}
}

func TestMergeIgnoresOversizedFields(t *testing.T) {
	c := newTestCache(t, newClock())
	c.Merge(
		Entry{Addr: "a:1", PubKey: strings.Repeat("k", maxPubKeyLen+1)},
		Entry{Addr: "b:1", Source: strings.Repeat("s", maxSourceLen+1)},
		Entry{Addr: "c:1", Since: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		Entry{Addr: "d:1", PubKey: strings.Repeat("k", maxPubKeyLen)},
	)
	wantOrder(t, c, "d:1")
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
}

func TestMergeUpdates(t *testing.T) {
	clk := newClock()
	c := newTestCache(t, clk)
	t0 := clk.Now().Add(-48 * time.Hour)
	c.Merge(Entry{Addr: "sn:1", PubKey: "key1", Since: t0, Source: SourceLogin})
	c.MarkSuccess("sn:1")
	clk.Advance(time.Minute)
	c.MarkFailure("sn:1")

	// Empty fields in a report keep what the cache has; local observations
	// in a report are ignored.
	c.Merge(Entry{Addr: "sn:1", LastSuccess: clk.Now(), Failures: 0, LastFailure: time.Time{}})
	e, _ := find(c, "sn:1")
	want := Entry{
		Addr: "sn:1", PubKey: "key1", Since: t0, Source: SourceLogin,
		LastSuccess: clk.Now().Add(-time.Minute), LastFailure: clk.Now(), Failures: 1,
	}
	if !entryEqual(e, want) {
		t.Errorf("after empty report:\n got %+v\nwant %+v", e, want)
	}

	// Non-empty fields replace.
	t1 := clk.Now().Add(-time.Hour)
	c.Merge(Entry{Addr: "sn:01", PubKey: "key2", Since: t1, Source: SourceSupernode})
	e, _ = find(c, "sn:1")
	want.PubKey, want.Since, want.Source = "key2", t1, SourceSupernode
	if !entryEqual(e, want) {
		t.Errorf("after full report:\n got %+v\nwant %+v", e, want)
	}

	// A new entry starts with no observations, whatever the report says.
	c.Merge(Entry{Addr: "new:1", LastSuccess: clk.Now(), LastFailure: clk.Now(), Failures: 3})
	e, _ = find(c, "new:1")
	if want := (Entry{Addr: "new:1"}); !entryEqual(e, want) {
		t.Errorf("new entry: got %+v, want %+v", e, want)
	}
}

func TestRanking(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }

	t.Run("uptime", func(t *testing.T) {
		c := newTestCache(t, clk)
		c.Merge(
			Entry{Addr: "hour:1", Since: ago(time.Hour)},
			Entry{Addr: "unknown:1"},
			Entry{Addr: "week:1", Since: ago(7 * 24 * time.Hour)},
			Entry{Addr: "future:1", Since: now.Add(time.Hour)},
			Entry{Addr: "day:1", Since: ago(24 * time.Hour)},
			Entry{Addr: "minute:1", Since: ago(time.Minute)},
		)
		// Unknown Since and a Since in the future both count as no uptime;
		// the tie is broken by Addr.
		wantOrder(t, c, "week:1", "day:1", "hour:1", "minute:1", "future:1", "unknown:1")
	})

	t.Run("uptime credit is capped", func(t *testing.T) {
		c := newTestCache(t, clk)
		c.Merge(
			Entry{Addr: "b:1", Since: ago(60 * 24 * time.Hour)},
			Entry{Addr: "a:1", Since: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Second)},
			Entry{Addr: "c:1", Since: ago(30 * 24 * time.Hour)},
		)
		// All beyond 30 days score the same, so Addr decides.
		wantOrder(t, c, "a:1", "b:1", "c:1")
	})

	t.Run("failures demote", func(t *testing.T) {
		c := newTestCache(t, clk)
		c.Merge(
			Entry{Addr: "old:1", Since: ago(30 * 24 * time.Hour)},
			Entry{Addr: "day:1", Since: ago(24 * time.Hour)},
			Entry{Addr: "hour:1", Since: ago(time.Hour)},
		)
		wantOrder(t, c, "old:1", "day:1", "hour:1")
		c.MarkFailure("old:1")
		wantOrder(t, c, "day:1", "old:1", "hour:1")
		c.MarkFailure("old:1")
		wantOrder(t, c, "day:1", "hour:1", "old:1")
		c.MarkFailure("day:1")
		wantOrder(t, c, "hour:1", "day:1", "old:1")
		// Success clears the failures.
		c.MarkSuccess("old:1")
		wantOrder(t, c, "old:1", "hour:1", "day:1")
	})

	t.Run("recent success bonus", func(t *testing.T) {
		c := newTestCache(t, clk)
		c.Merge(
			Entry{Addr: "a:1", Since: ago(4 * time.Hour)},
			Entry{Addr: "b:1", Since: ago(2 * time.Hour)},
			Entry{Addr: "c:1", Since: ago(100 * time.Hour)},
		)
		wantOrder(t, c, "c:1", "a:1", "b:1")
		c.MarkSuccess("b:1")
		wantOrder(t, c, "c:1", "b:1", "a:1")
		clk.Advance(time.Hour) // the bonus lasts an hour, inclusive...
		wantOrder(t, c, "c:1", "b:1", "a:1")
		clk.Advance(time.Second) // ...and no longer
		wantOrder(t, c, "c:1", "a:1", "b:1")
	})

	t.Run("ties broken by Addr", func(t *testing.T) {
		c := newTestCache(t, clk)
		since := ago(time.Hour)
		c.Merge(Entry{Addr: "c:1", Since: since}, Entry{Addr: "a:2", Since: since}, Entry{Addr: "a:1", Since: since}, Entry{Addr: "b:1", Since: since})
		for range 10 {
			wantOrder(t, c, "a:1", "a:2", "b:1", "c:1")
		}
	})
}

func TestScore(t *testing.T) {
	now := newClock().Now()
	for _, tc := range []struct {
		name string
		e    Entry
		want float64
	}{
		{"unknown", Entry{}, 0},
		{"one minute", Entry{Since: now.Add(-time.Minute)}, 1},
		{"three minutes", Entry{Since: now.Add(-3 * time.Minute)}, 2},
		{"future", Entry{Since: now.Add(time.Hour)}, 0},
		{"recent success", Entry{Since: now.Add(-time.Minute), LastSuccess: now.Add(-time.Hour)}, 5},
		{"old success", Entry{Since: now.Add(-time.Minute), LastSuccess: now.Add(-time.Hour - 1)}, 1},
		{"two failures", Entry{Since: now.Add(-3 * time.Minute), Failures: 2}, 2 - 16},
	} {
		if got := score(&tc.e, now); got != tc.want {
			t.Errorf("%s: score = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAgeOut(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()

	t.Run("never succeeded", func(t *testing.T) {
		c := open(t, filepath.Join(dir, "a.json"), clk, Options{MaxFailures: 3, AgeOut: 24 * time.Hour})
		c.Merge(Entry{Addr: "sn:1"}, Entry{Addr: "other:1"})
		c.MarkFailure("sn:1")
		c.MarkFailure("sn:1")
		if _, ok := find(c, "sn:1"); !ok {
			t.Fatal("removed after 2 failures, MaxFailures is 3")
		}
		c.MarkFailure("sn:1")
		if _, ok := find(c, "sn:1"); ok {
			t.Fatal("still present after 3 failures and no success")
		}
		if c.Len() != 1 {
			t.Errorf("Len() = %d, want 1 (other entries stay)", c.Len())
		}
	})

	t.Run("recent success protects", func(t *testing.T) {
		c := open(t, filepath.Join(dir, "b.json"), clk, Options{MaxFailures: 3, AgeOut: 24 * time.Hour})
		c.Merge(Entry{Addr: "sn:1"})
		c.MarkSuccess("sn:1")
		for range 5 {
			clk.Advance(time.Hour)
			c.MarkFailure("sn:1")
		}
		e, ok := find(c, "sn:1")
		if !ok || e.Failures != 5 {
			t.Fatalf("entry = %+v, %v; want present with 5 failures (success 5h ago, AgeOut 24h)", e, ok)
		}
		clk.Advance(19 * time.Hour) // success exactly 24h ago: not older than AgeOut
		c.MarkFailure("sn:1")
		if _, ok := find(c, "sn:1"); !ok {
			t.Fatal("removed with success exactly AgeOut ago")
		}
		clk.Advance(time.Second)
		c.MarkFailure("sn:1")
		if _, ok := find(c, "sn:1"); ok {
			t.Fatal("still present with success older than AgeOut and 7 failures")
		}
	})

	t.Run("defaults", func(t *testing.T) {
		c := open(t, filepath.Join(dir, "c.json"), clk, Options{})
		c.Merge(Entry{Addr: "sn:1"})
		c.MarkSuccess("sn:1")
		clk.Advance(7*24*time.Hour + time.Second)
		for i := range 4 {
			c.MarkFailure("sn:1")
			if _, ok := find(c, "sn:1"); !ok {
				t.Fatalf("removed after %d failures, default MaxFailures is 5", i+1)
			}
		}
		c.MarkFailure("sn:1")
		if c.Len() != 0 {
			t.Fatal("still present after 5 failures and a success older than 7 days")
		}
	})

	t.Run("on load", func(t *testing.T) {
		path := filepath.Join(dir, "d.json")
		c := open(t, path, clk, Options{MaxFailures: 10})
		c.Merge(Entry{Addr: "sn:1"}, Entry{Addr: "ok:1"})
		for range 4 {
			c.MarkFailure("sn:1")
		}
		if err := c.Save(); err != nil {
			t.Fatal(err)
		}
		c = open(t, path, clk, Options{MaxFailures: 4})
		wantOrder(t, c, "ok:1")
	})
}

func TestUnknownAddressesAreIgnored(t *testing.T) {
	c := newTestCache(t, newClock())
	c.Merge(Entry{Addr: "sn:1"})
	c.MarkSuccess("other:1")
	c.MarkFailure("other:1")
	c.MarkFailure("not an address")
	c.Remove("other:1")
	c.Remove("")
	wantOrder(t, c, "sn:1")
	c.Remove("sn:01") // canonical form matches
	wantOrder(t, c)
}

func TestSaveOpenRoundTrip(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "hostcache.json")
	c := open(t, path, clk, Options{})
	now := clk.Now()
	c.Merge(
		Entry{Addr: "203.0.113.7:33033", PubKey: "a2V5MQ==", Since: now.Add(-72 * time.Hour), Source: SourceLogin},
		Entry{Addr: "[2001:db8::7]:33033", PubKey: "a2V5Mg==", Since: now.Add(-3 * time.Hour), Source: SourceSupernode},
		Entry{Addr: "sn.example.net:443", Source: SourceManual},
		// A non-UTC Since with nanoseconds must survive the round trip.
		Entry{Addr: "198.51.100.1:33033", Since: now.Add(-5*time.Hour - 123456789).In(time.FixedZone("x", 5*3600+1800))},
	)
	c.MarkSuccess("[2001:db8::7]:33033")
	c.MarkFailure("sn.example.net:443")
	clk.Advance(10 * time.Minute)
	before := c.Ranked()
	if err := c.Save(); err != nil {
		t.Fatalf("Save: %v", err)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %v, want 0600", perm)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int `json:"version"`
		Entries []struct {
			Addr string `json:"addr"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("file is not JSON: %v\n%s", err, raw)
	}
	if f.Version != 1 {
		t.Errorf("version = %d, want 1", f.Version)
	}
	var fileOrder []string
	for _, e := range f.Entries {
		fileOrder = append(fileOrder, e.Addr)
	}
	if !slices.Equal(fileOrder, addrs(before)) {
		t.Errorf("file order %v, want ranked order %v", fileOrder, addrs(before))
	}

	// "Restart": a new Cache from the same file.
	c2 := open(t, path, clk, Options{})
	if c2.Corrupted() {
		t.Error("Corrupted() = true for a file written by Save")
	}
	after := c2.Ranked()
	if len(after) != len(before) {
		t.Fatalf("after reopen %d entries, want %d", len(after), len(before))
	}
	for i := range before {
		if !entryEqual(after[i], before[i]) {
			t.Errorf("entry %d after reopen:\n got %+v\nwant %+v", i, after[i], before[i])
		}
	}
	if c2.Path() != path {
		t.Errorf("Path() = %q, want %q", c2.Path(), path)
	}

	// Saving an existing, more permissive file makes it 0600.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c2.Save(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode after resave = %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpenMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostcache.json")
	c := open(t, path, newClock(), Options{})
	if c.Len() != 0 || c.Corrupted() {
		t.Fatalf("Len() = %d, Corrupted() = %v; want 0, false", c.Len(), c.Corrupted())
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Open created the file: %v", err)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(path); !strings.Contains(string(raw), `"entries": []`) {
		t.Errorf("empty cache saved as %s", raw)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	isDir := filepath.Join(dir, "dir")
	if err := os.Mkdir(isDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		opts Options
		is   error
	}{
		{"empty path", "", Options{}, ErrNoPath},
		{"negative MaxFailures", filepath.Join(dir, "x"), Options{MaxFailures: -1}, ErrInvalidOptions},
		{"negative AgeOut", filepath.Join(dir, "x"), Options{AgeOut: -time.Second}, ErrInvalidOptions},
		{"parent is a file", filepath.Join(notDir, "hostcache.json"), Options{}, nil},
		{"path is a directory", isDir, Options{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(tc.path, tc.opts)
			if err == nil {
				t.Fatalf("Open succeeded: %v", c)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Open error %v, want %v", err, tc.is)
			}
		})
	}
}

func TestOpenCorrupt(t *testing.T) {
	valid, err := encode([]Entry{{Addr: "sn:1", Since: newClock().Now()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("\x00\xff\x13garbage\n\x7f")},
		{"truncated", valid[:len(valid)/2]},
		{"wrong version", bytes.Replace(valid, []byte(`"version": 1`), []byte(`"version": 2`), 1)},
		{"no version", []byte(`{"entries":[{"addr":"sn:1"}]}`)},
		{"not an object", []byte(`[{"addr":"sn:1"}]`)},
		{"huge number", []byte(`{"version":1,"entries":[{"addr":"sn:1","failures":1e400}]}`)},
		{"trailing data", append(slices.Clone(valid), "{}"...)},
		{"oversized", append(slices.Clone(valid), bytes.Repeat([]byte(" "), maxFileSize)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			path := filepath.Join(t.TempDir(), "hostcache.json")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			log, buf := newLogger()
			c := open(t, path, clk, Options{Logger: log})
			if !c.Corrupted() {
				t.Fatal("Corrupted() = false")
			}
			if c.Len() != 0 {
				t.Errorf("Len() = %d, want 0", c.Len())
			}
			logged := buf.String()
			if !strings.Contains(logged, "level=WARN") || !strings.Contains(logged, "path="+path) || !strings.Contains(logged, "err=") {
				t.Errorf("want a warning with path and err, logged:\n%s", logged)
			}
			moved, err := os.ReadFile(path + ".corrupt")
			if err != nil {
				t.Fatalf("corrupt file not moved aside: %v", err)
			}
			if !bytes.Equal(moved, tc.data) {
				t.Error(".corrupt file does not hold the original bytes")
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("corrupt file still at path: %v", err)
			}

			// The cache works and saves.
			c.Merge(Entry{Addr: "sn:2", Since: clk.Now().Add(-time.Hour)})
			c.MarkSuccess("sn:2")
			if err := c.Save(); err != nil {
				t.Fatalf("Save after corrupt: %v", err)
			}
			c2 := open(t, path, clk, Options{})
			if c2.Corrupted() {
				t.Error("Corrupted() after a good save")
			}
			wantOrder(t, c2, "sn:2")
		})
	}
}

func TestOpenDropsInvalidEntries(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "hostcache.json")
	data := `{"version":1,"unknown":true,"entries":[
		{"addr":"good:1","since":"2026-02-01T00:00:00Z"},
		{"addr":"no-port"},
		{"addr":"neg:1","failures":-1},
		{"addr":"good:01","since":"2026-01-01T00:00:00Z"},
		null,
		{"addr":"good:2","since":"2026-02-28T00:00:00+05:00","pubkey":"k"}
	]}`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	log, buf := newLogger()
	c := open(t, path, clk, Options{Logger: log})
	if c.Corrupted() {
		t.Fatal("Corrupted() = true for a file with some invalid entries")
	}
	wantOrder(t, c, "good:1", "good:2")
	if e, _ := find(c, "good:1"); !e.Since.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("duplicate replaced the first entry: %+v", e)
	}
	if !strings.Contains(buf.String(), "dropped=4") {
		t.Errorf("want a warning counting 4 dropped entries, logged:\n%s", buf.String())
	}
}

func TestOpenCapsAndClampsFutureTimes(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	entries := make([]Entry, 300)
	for i := range entries {
		entries[i] = Entry{Addr: addr(i), Since: now.Add(-time.Duration(i) * time.Hour)}
	}
	// From a clock that was a day ahead.
	entries[0].LastSuccess = now.Add(24 * time.Hour)
	entries[0].LastFailure = now.Add(24 * time.Hour)
	data, err := encode(entries)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hostcache.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, path, clk, Options{})
	got := c.Ranked()
	if len(got) != MaxEntries {
		t.Fatalf("loaded %d entries, want %d", len(got), MaxEntries)
	}
	for i, e := range got {
		if want := addr(299 - i); e.Addr != want {
			t.Fatalf("Ranked()[%d] = %s, want %s", i, e.Addr, want)
		}
	}

	// entries[0] has the least uptime and was cut above; load it alone.
	small, err := encode(entries[:1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, small, 0o600); err != nil {
		t.Fatal(err)
	}
	c = open(t, path, clk, Options{})
	e, _ := find(c, addr(0))
	if !e.LastSuccess.Equal(now) || !e.LastFailure.Equal(now) {
		t.Errorf("future times not clamped to now: %+v", e)
	}
	clk.Advance(time.Hour + time.Second)
	if got, want := score(&e, clk.Now()), score(&Entry{Since: e.Since}, clk.Now()); got != want {
		t.Errorf("success bonus still counted an hour after load: score %v, want %v", got, want)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestSaveSkipsUnchanged: a Save with nothing changed since the last one leaves the
// file alone; any change is written.
func TestSaveSkipsUnchanged(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "hostcache.json")
	c := open(t, path, clk, Options{})
	c.Merge(Entry{Addr: addr(1), Since: clk.Now()})
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(path)
	c.Merge(Entry{Addr: addr(1), Since: clk.Now()}) // the same report again
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(path); !os.SameFile(st1, st2) {
		t.Fatal("an unchanged cache was written again")
	}
	c.MarkSuccess(addr(1))
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	if st3, _ := os.Stat(path); os.SameFile(st1, st3) {
		t.Fatal("a change was not written")
	}
	re := open(t, path, clk, Options{})
	if r := re.Ranked(); len(r) != 1 || r[0].LastSuccess.IsZero() {
		t.Fatalf("saved %+v", r)
	}
}

func TestSaveLeavesNoTempFiles(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	path := filepath.Join(dir, "hostcache.json")
	c := open(t, path, clk, Options{})
	for i := range 20 {
		c.Merge(Entry{Addr: addr(i), Since: clk.Now()})
		if err := c.Save(); err != nil {
			t.Fatal(err)
		}
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"hostcache.json"}) {
		t.Errorf("directory holds %v, want only hostcache.json", got)
	}

	// A failed rename (a non-empty directory in the way) must clean up too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}
	c.Merge(Entry{Addr: addr(99), Since: clk.Now()}) // something to write
	if err := c.Save(); err == nil {
		t.Fatal("Save over a non-empty directory succeeded")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"hostcache.json"}) {
		t.Errorf("after a failed save the directory holds %v, want only hostcache.json", got)
	}

	// A missing directory is an error, not a panic or a silent success.
	c2 := open(t, filepath.Join(dir, "missing", "hostcache.json"), clk, Options{})
	if err := c2.Save(); err == nil {
		t.Error("Save into a missing directory succeeded")
	}
}

func TestConcurrentUse(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	path := filepath.Join(dir, "hostcache.json")
	log, _ := newLogger()
	c := open(t, path, clk, Options{Logger: log, MaxFailures: 3})

	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				a := addr((w*rounds + i) % 700)
				switch i % 8 {
				case 0:
					c.Merge(Entry{Addr: a, Since: clk.Now().Add(-time.Duration(i) * time.Minute), Source: SourceSupernode})
				case 1:
					c.MarkSuccess(a)
				case 2:
					c.MarkFailure(a)
				case 3:
					c.Remove(a)
				case 4:
					if r := c.Ranked(); len(r) > MaxEntries {
						t.Errorf("Ranked() has %d entries", len(r))
					}
				case 5:
					if n := c.Len(); n > MaxEntries {
						t.Errorf("Len() = %d", n)
					}
				case 6:
					if err := c.Save(); err != nil {
						t.Errorf("Save: %v", err)
					}
				case 7:
					clk.Advance(time.Second)
					batch := make([]Entry, 50)
					for j := range batch {
						batch[j] = Entry{Addr: addr(w*1000 + i*50 + j)}
					}
					c.Merge(batch...)
				}
			}
		})
	}
	wg.Wait()

	if n := c.Len(); n > MaxEntries {
		t.Fatalf("Len() = %d", n)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	c2 := open(t, path, clk, Options{MaxFailures: 3})
	if c2.Corrupted() || c2.Len() != c.Len() {
		t.Errorf("reopened: Corrupted() = %v, Len() = %d; want false, %d", c2.Corrupted(), c2.Len(), c.Len())
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"hostcache.json"}) {
		t.Errorf("directory holds %v, want only hostcache.json", got)
	}
}

// entryEqual compares entries with time.Time.Equal.
func entryEqual(a, b Entry) bool {
	return a.Addr == b.Addr && a.PubKey == b.PubKey && a.Source == b.Source && a.Failures == b.Failures &&
		a.Since.Equal(b.Since) && a.LastSuccess.Equal(b.LastSuccess) && a.LastFailure.Equal(b.LastFailure)
}

// BenchmarkMergeRanked measures the hot path of a full cache: a seed of 200
// entries merged over existing ones, then the ranking read to pick where to
// connect.
//
//	$ go test -run='^$' -bench=MergeRanked -benchmem -count=3 ./hostcache
//	BenchmarkMergeRanked-2   20728   58583 ns/op   30720 B/op   2 allocs/op   (AMD EPYC, 2 CPUs, go1.26.8)
func BenchmarkMergeRanked(b *testing.B) {
	clk := newClock()
	c, err := Open(filepath.Join(b.TempDir(), "hostcache.json"), Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	seed := make([]Entry, MaxEntries)
	for i := range seed {
		seed[i] = Entry{Addr: addr(i), PubKey: "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=", Since: clk.Now().Add(-time.Duration(i) * time.Minute), Source: SourceLogin}
	}
	c.Merge(seed...)
	for i := 0; i < MaxEntries; i += 3 {
		c.MarkFailure(addr(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Merge(seed...)
		if r := c.Ranked(); len(r) != MaxEntries {
			b.Fatalf("len(Ranked()) = %d", len(r))
		}
	}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    string
		addrs   []string // nil with err
		dropped int
		err     error
	}{
		{"empty entries", `{"version":1,"entries":[]}`, []string{}, 0, nil},
		{"null entries", `{"version":1,"entries":null}`, []string{}, 0, nil},
		{"file order kept", `{"version":1,"entries":[{"addr":"b:1"},{"addr":"a:1"}]}`, []string{"b:1", "a:1"}, 0, nil},
		{"first duplicate wins", `{"version":1,"entries":[{"addr":"a:01","source":"x"},{"addr":"a:1"}]}`, []string{"a:1"}, 1, nil},
		{"invalid dropped", `{"version":1,"entries":[null,{},{"addr":"a"},{"addr":"a:1","failures":-2},{"addr":"b:2"}]}`, []string{"b:2"}, 4, nil},
		{"time out of range after UTC", `{"version":1,"entries":[{"addr":"a:1","since":"9999-12-31T23:00:00-02:00"}]}`, []string{}, 1, nil},
		{"max failures", `{"version":1,"entries":[{"addr":"a:1","failures":9223372036854775807}]}`, []string{"a:1"}, 0, nil},
		{"failures overflow", `{"version":1,"entries":[{"addr":"a:1","failures":9223372036854775808}]}`, nil, 0, errSyntax},
		{"version 2", `{"version":2,"entries":[]}`, nil, 0, errVersion},
		{"version 1.0", `{"version":1.0,"entries":[]}`, nil, 0, errSyntax},
		{"no version", `{"entries":[]}`, nil, 0, errVersion},
		{"trailing garbage", `{"version":1,"entries":[]}x`, nil, 0, errSyntax},
		{"too large", `{"version":1,"entries":[]}` + strings.Repeat(" ", maxFileSize), nil, 0, errTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, dropped, err := decodeCounted([]byte(tc.data))
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				if entries != nil {
					t.Errorf("entries %v with error", entries)
				}
				return
			}
			if got := addrs(entries); !slices.Equal(got, tc.addrs) || dropped != tc.dropped {
				t.Errorf("got %q dropped %d, want %q dropped %d", got, dropped, tc.addrs, tc.dropped)
			}
		})
	}
}

func TestFailureCountSaturates(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "hostcache.json")
	data := fmt.Sprintf(`{"version":1,"entries":[{"addr":"a:1","failures":%d,"last_success":%q}]}`,
		math.MaxInt, clk.Now().Format(time.RFC3339))
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, path, clk, Options{})
	c.MarkFailure("a:1")
	if e, ok := find(c, "a:1"); !ok || e.Failures != math.MaxInt {
		t.Fatalf("entry = %+v, %v; want Failures to stay at MaxInt", e, ok)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkHeld reports the memory a full cache holds once its seed is merged, as in a
// process that simulates a population whose host caches list the same supernodes.
//
//	$ go test -run='^$' -bench=Held -benchtime=2000x ./hostcache
func BenchmarkHeld(b *testing.B) {
	clk := newClock()
	seed := make([]Entry, MaxEntries)
	for i := range seed {
		seed[i] = Entry{Addr: addr(i), PubKey: "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=", Since: clk.Now().Add(-time.Duration(i) * time.Minute), Source: SourceLogin}
	}
	dir := b.TempDir()
	caches := make([]*Cache, 0, b.N)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; b.Loop(); i++ {
		c, err := Open(filepath.Join(dir, strconv.Itoa(i)), Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		// As a client does: the seed, one supernode reached, one that failed.
		c.Merge(seed...)
		c.MarkSuccess(addr(i % MaxEntries))
		c.MarkFailure(addr((i + 1) % MaxEntries))
		caches = append(caches, c)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(caches)), "held-B/cache")
	runtime.KeepAlive(caches)
}

// BenchmarkSaveFull is the cost of writing a full cache (200 entries) that changed since
// its last write: what every client pays after an attach.
//
//	$ go test -run='^$' -bench=SaveFull ./hostcache
func BenchmarkSaveFull(b *testing.B) {
	clk := newClock()
	c, err := Open(filepath.Join(b.TempDir(), "hostcache.json"), Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < MaxEntries; i++ {
		c.Merge(Entry{Addr: addr(i), PubKey: "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=", Since: clk.Now().Add(-time.Duration(i) * time.Minute), Source: SourceLogin})
	}
	for i := 0; b.Loop(); i++ {
		c.MarkSuccess(addr(i % MaxEntries))
		if err := c.Save(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenFull is the cost of loading a full cache (200 entries, as a client does at
// every start): the file as Save writes it, and the same file compacted, which only
// encoding/json reads.
//
//	$ go test -run='^$' -bench=OpenFull -benchmem ./hostcache
func BenchmarkOpenFull(b *testing.B) {
	clk := newClock()
	path := filepath.Join(b.TempDir(), "hostcache.json")
	c, err := Open(path, Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < MaxEntries; i++ {
		c.Merge(Entry{Addr: addr(i), PubKey: "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=", Since: clk.Now().Add(-time.Duration(i) * time.Minute), Source: SourceLogin})
		if i%3 == 0 {
			c.MarkSuccess(addr(i))
		}
	}
	if err := c.Save(); err != nil {
		b.Fatal(err)
	}
	written, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, written); err != nil {
		b.Fatal(err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"as-written", written}, {"compacted", compact.Bytes()}} {
		b.Run(f.name, func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "hostcache.json")
			if err := os.WriteFile(p, f.data, 0o600); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				c, err := Open(p, Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
				if err != nil || c.Len() != MaxEntries || c.Corrupted() {
					b.Fatalf("Open: %v, %d entries", err, c.Len())
				}
			}
		})
	}
}
