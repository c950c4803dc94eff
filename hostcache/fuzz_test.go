package hostcache

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

// fuzzNow is FuzzDecode's clock: between the times its seeds hold.
func fuzzNow() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }

// FuzzDecode checks that decode never panics on any file, and that what it
// accepts is valid and survives encode and decode unchanged: everything Open
// loads, Save can write back and Open load again.
// Seeds are in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		// The parser of encode's own output gives what encoding/json gives.
		if fast, ok := decodeWritten(data); ok {
			var slow fileFormat
			if err := json.Unmarshal(data, &slow); err != nil {
				t.Fatalf("decodeWritten accepted what encoding/json refuses (%v):\n%q", err, data)
			}
			if slow.Version != fileVersion || !slices.Equal(fast, slow.Entries) {
				t.Fatalf("decodeWritten and encoding/json differ on %q:\n fast %+v\n json %+v", data, fast, slow)
			}
		}
		// Open's entry-by-entry load of such a file gives the cache the decoded entries
		// give.
		quiet := Options{Now: fuzzNow, Logger: slog.New(slog.DiscardHandler)}
		fast, slow := newCache("fuzz", quiet), newCache("fuzz", quiet)
		if fast.loadWritten(data) {
			es, dropped, err := decodeCounted(data)
			if err != nil {
				t.Fatalf("loadWritten loaded what decode refuses (%v)", err)
			}
			slow.loadEntries(es, dropped)
			if a, b := fast.Ranked(), slow.Ranked(); !slices.Equal(a, b) {
				t.Fatalf("loadWritten and decode differ on %q:\n fast %+v\n slow %+v", data, a, b)
			}
		}
		entries, err := decode(data)
		if err != nil {
			if entries != nil {
				t.Fatalf("decode returned entries with error %v", err)
			}
			return
		}
		seen := make(map[string]bool, len(entries))
		for _, e := range entries {
			n, err := normalize(e)
			if err != nil {
				t.Fatalf("decode returned invalid entry %+v: %v", e, err)
			}
			if n != e {
				t.Fatalf("decode returned an entry that is not normalized:\n got %+v\nnorm %+v", e, n)
			}
			if seen[e.Addr] {
				t.Fatalf("decode returned duplicate address %q", e.Addr)
			}
			seen[e.Addr] = true
		}
		out, err := encode(entries)
		if err != nil {
			t.Fatalf("encode of decoded entries failed: %v", err)
		}
		// The hand-written encoder writes each entry as encoding/json does.
		for _, e := range entries {
			got, err := appendEntry(nil, e)
			if err != nil {
				t.Fatalf("appendEntry(%+v): %v", e, err)
			}
			want, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("json.Marshal(%+v): %v", e, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("appendEntry differs from encoding/json:\n got %s\nwant %s", got, want)
			}
		}
		plain := !bytes.ContainsFunc(out, func(r rune) bool { return r != '\n' && (r < 0x20 || r >= 0x7f || r == '\\') })
		if fast, ok := decodeWritten(out); plain && !ok || ok && !slices.Equal(fast, entries) {
			t.Fatalf("decodeWritten does not read encode's output back (%v):\n%s", ok, out)
		}
		again, err := decode(out)
		if err != nil {
			t.Fatalf("decode of encoded entries failed: %v\n%s", err, out)
		}
		if len(again) != len(entries) {
			t.Fatalf("round trip: %d entries, want %d", len(again), len(entries))
		}
		for i := range entries {
			if again[i] != entries[i] {
				t.Fatalf("round trip changed entry %d:\n got %+v\nwant %+v", i, again[i], entries[i])
			}
		}
	})
}

// FuzzCanonicalAddr checks that canonicalAddr's allocation-free fast path
// agrees with the slow path (net.JoinHostPort) and that it is idempotent.
func FuzzCanonicalAddr(f *testing.F) {
	for _, s := range []string{
		"203.0.113.7:33033", "[2001:db8::1]:33033", "[fe80::1%eth0]:1", "[sn.example.net]:080",
		"h:0", "h:65536", ":80", "[a]b]:1", "[[a]]:1", "a b:1", "\xff:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		got, err := canonicalAddr(addr)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("canonicalAddr accepted %q, SplitHostPort did not: %v", addr, err)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			t.Fatalf("canonicalAddr accepted port %q of %q", port, addr)
		}
		if want := net.JoinHostPort(host, strconv.FormatUint(p, 10)); got != want {
			t.Fatalf("canonicalAddr(%q) = %q, want %q", addr, got, want)
		}
		if again, err := canonicalAddr(got); err != nil || again != got {
			t.Fatalf("canonicalAddr(%q) = %q, %v; not idempotent", got, again, err)
		}
	})
}
