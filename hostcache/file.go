package hostcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
	"unique"

	"github.com/peerline/peerline/internal/atomicfile"
)

const (
	fileVersion   = 1
	maxFileSize   = 1 << 20 // 1 MiB: 200 entries take about 60 KiB
	fileMode      = 0o600
	corruptSuffix = ".corrupt"
)

// fileFormat is the JSON layout of the cache file.
type fileFormat struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// Open loads the cache stored at path. A missing file gives an empty cache.
// A corrupt file (unparseable, larger than 1 MiB, or of another version) is
// not an error: Open logs a warning, renames the file to path+".corrupt",
// starts empty and Corrupted reports true. Open returns an error only for
// invalid arguments (ErrNoPath, ErrInvalidOptions) and for I/O failures, such
// as an unreadable file or a corrupt file that cannot be moved aside.
func Open(path string, opts Options) (*Cache, error) {
	if path == "" {
		return nil, ErrNoPath
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := newCache(path, opts)

	buf := fileBufs.Get().(*[]byte)
	defer fileBufs.Put(buf)
	data, err := readFile(path, maxFileSize+1, (*buf)[:0])
	*buf = data[:0]
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hostcache: read %s: %w", path, err)
	}

	if c.loadWritten(data) {
		return c, nil
	}
	entries, dropped, err := decodeCounted(data)
	if err != nil {
		bad := path + corruptSuffix
		if rerr := os.Rename(path, bad); rerr != nil {
			return nil, fmt.Errorf("hostcache: %s is corrupt (%v) and cannot be moved aside; remove it: %w", path, err, rerr)
		}
		c.log.Warn("hostcache: corrupt host cache file moved aside; starting with an empty cache",
			"path", path, "moved_to", bad, "err", err)
		c.corrupted = true
		return c, nil
	}
	c.loadEntries(entries, dropped)
	return c, nil
}

// loadEntries fills the new cache c with entries decoded from its file, dropped of
// them invalid or duplicates.
func (c *Cache) loadEntries(entries []Entry, dropped int) {
	if dropped > 0 {
		c.log.Warn("hostcache: dropped invalid or duplicate entries from host cache file",
			"path", c.path, "dropped", dropped, "kept", len(entries))
	}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = make([]slot, 0, min(len(entries), MaxEntries)) // a full cache: no growth beyond its size
	for _, e := range entries {
		// A time from the future (the clock stepped back, or the file was
		// edited) would otherwise keep a success bonus or block age-out.
		e.LastSuccess, e.LastFailure = notAfter(e.LastSuccess, now), notAfter(e.LastFailure, now)
		if c.agedOut(&e, now) {
			continue
		}
		c.entries = append(c.entries, newSlot(e))
	}
	c.trimLocked(now)
}

// loadWritten fills the new cache c from data if data is exactly as encode writes a
// file, and reports whether it was: what decodeCounted and Open's loop do, entry by
// entry, without the list of entries between them (a population restarting at once
// opens its caches at once, and that list was half of what an Open allocated).
func (c *Cache) loadWritten(data []byte) bool {
	if len(data) > maxFileSize {
		return false
	}
	now := c.clock()
	n := bytes.Count(data, []byte("\n  {"))
	entries := make([]slot, 0, n)
	seen := make(map[unique.Handle[string]]struct{}, n)
	dropped := 0
	ok := forEachWritten(data, func(e Entry) {
		e, err := normalize(e)
		if err != nil {
			dropped++
			return
		}
		addr := unique.Make(e.Addr)
		if _, dup := seen[addr]; dup {
			dropped++
			return
		}
		seen[addr] = struct{}{}
		// A time from the future (the clock stepped back, or the file was edited)
		// would otherwise keep a success bonus or block age-out.
		e.LastSuccess, e.LastFailure = notAfter(e.LastSuccess, now), notAfter(e.LastFailure, now)
		if c.agedOut(&e, now) {
			return
		}
		entries = append(entries, slotAt(addr, e))
	})
	if !ok {
		return false
	}
	if dropped > 0 {
		c.log.Warn("hostcache: dropped invalid or duplicate entries from host cache file",
			"path", c.path, "dropped", dropped, "kept", len(seen))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = entries
	c.trimLocked(now)
	return true
}

func notAfter(t, now time.Time) time.Time {
	if t.After(now) {
		return now
	}
	return t
}

// fileBufs hold the bytes of a file being read or written: nothing decoded from them
// keeps them (strings are copied out), and a population of clients reads and writes its
// caches at once.
var fileBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// readFile reads at most limit bytes of path into b's array (or a larger one).
func readFile(path string, limit int64, b []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return b, err
	}
	defer f.Close()
	size := int64(512)
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		size = min(fi.Size()+1, limit) // +1: read to EOF in one buffer
	}
	if int64(cap(b)) < size {
		b = make([]byte, 0, size)
	}
	b = b[:0]
	for int64(len(b)) < limit {
		if len(b) == cap(b) {
			b = slices.Grow(b, int(min(int64(cap(b)), limit-int64(len(b)))))
		}
		n, err := f.Read(b[len(b):min(cap(b), int(limit))])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b[:0], err
		}
	}
	return b, nil
}

// Save writes the cache to Path() atomically: a temporary file in the same
// directory is written, synced and renamed over the old file, then the
// directory is synced. The file has mode 0600 and lists the entries in ranked
// order. The directory must exist. A cache unchanged since its last Save is not
// written again.
func (c *Cache) Save() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	now := c.clock()
	c.mu.Lock()
	version, ranked := c.version, c.rankedLocked(now)
	c.mu.Unlock()
	if c.wrote && version == c.saved {
		return nil // nothing changed since the last write: a client merges the same seed often
	}
	buf := fileBufs.Get().(*[]byte)
	defer fileBufs.Put(buf)
	data, err := appendFile((*buf)[:0], ranked)
	*buf = data[:0]
	if err != nil {
		return fmt.Errorf("hostcache: encode: %w", err)
	}
	if err := atomicfile.WriteFile(c.path, data, fileMode); err != nil {
		return fmt.Errorf("hostcache: save %s: %w", c.path, err)
	}
	c.saved, c.wrote = version, true
	return nil
}

// encode returns the file contents for entries, which should be in ranked order: one
// entry per line, which keeps the file readable and diffable. Entries are written by
// hand, field by field as encoding/json would write them (decode reads them back with
// it, and the fuzz test holds the two to each other): a population of clients writes
// the file after every attach, and reflection was most of a write's cost.
func encode(entries []Entry) ([]byte, error) {
	return appendFile(make([]byte, 0, 64+224*len(entries)), entries)
}

// appendFile appends the file contents for entries to b.
func appendFile(b []byte, entries []Entry) ([]byte, error) {
	b = fmt.Appendf(b, "{\"version\": %d, \"entries\": [", fileVersion)
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n  "...)
		var err error
		if b, err = appendEntry(b, e); err != nil {
			return nil, err
		}
	}
	if len(entries) > 0 {
		b = append(b, '\n')
	}
	return append(b, "]}\n"...), nil
}

// appendEntry appends e as a JSON object with the fields and omissions of its tags.
func appendEntry(b []byte, e Entry) ([]byte, error) {
	var err error
	b = append(b, `{"addr":`...)
	b = appendString(b, e.Addr)
	if e.PubKey != "" {
		b = append(b, `,"pubkey":`...)
		b = appendString(b, e.PubKey)
	}
	b = append(b, `,"since":`...)
	if b, err = appendTime(b, e.Since); err != nil {
		return nil, err
	}
	if !e.LastSuccess.IsZero() {
		b = append(b, `,"last_success":`...)
		if b, err = appendTime(b, e.LastSuccess); err != nil {
			return nil, err
		}
	}
	if !e.LastFailure.IsZero() {
		b = append(b, `,"last_failure":`...)
		if b, err = appendTime(b, e.LastFailure); err != nil {
			return nil, err
		}
	}
	if e.Failures != 0 {
		b = append(b, `,"failures":`...)
		b = strconv.AppendInt(b, int64(e.Failures), 10)
	}
	if e.Source != "" {
		b = append(b, `,"source":`...)
		b = appendString(b, e.Source)
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string: as is when it needs no escaping (addresses,
// base64 keys and sources always), through encoding/json otherwise.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as time.Time's MarshalJSON does, failing as it does on a year
// outside [0, 9999].
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("hostcache: time %v: year outside [0,9999]", t)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// decode parses a cache file. It fails if the file is larger than 1 MiB, is
// not JSON of the file format, or has a version other than 1. Invalid and
// duplicate entries are dropped one by one (the first of duplicates is kept);
// the rest are returned normalized, in file order. decode does not rank or
// cap the entries, which needs the clock.
func decode(data []byte) ([]Entry, error) {
	entries, _, err := decodeCounted(data)
	return entries, err
}

// decodeCounted is decode that also counts the dropped entries.
func decodeCounted(data []byte) (entries []Entry, dropped int, err error) {
	if len(data) > maxFileSize {
		return nil, 0, fmt.Errorf("%w: more than %d bytes", errTooLarge, maxFileSize)
	}
	var f fileFormat
	if es, ok := decodeWritten(data); ok {
		f = fileFormat{Version: fileVersion, Entries: es}
	} else if err := json.Unmarshal(data, &f); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errSyntax, err)
	}
	if f.Version != fileVersion {
		return nil, 0, fmt.Errorf("%w: %d, want %d", errVersion, f.Version, fileVersion)
	}
	seen := make(map[string]bool, len(f.Entries))
	entries = f.Entries[:0:len(f.Entries)] // normalized in place
	for _, e := range f.Entries {
		n, err := normalize(e)
		if err != nil || seen[n.Addr] {
			dropped++
			continue
		}
		seen[n.Addr] = true
		entries = append(entries, n)
	}
	return entries, dropped, nil
}

// decodeWritten parses data if it is exactly as encode writes a file, and reports
// whether it was; anything else (a hand-edited file, escapes, other spacing) is left to
// encoding/json. It gives what encoding/json gives for the same bytes (FuzzDecode holds
// the two to each other) at a tenth of the cost: every client reads its cache at start,
// so a mass reboot reads the whole population's at once.
func decodeWritten(data []byte) ([]Entry, bool) {
	entries := make([]Entry, 0, bytes.Count(data, []byte("\n  {")))
	if !forEachWritten(data, func(e Entry) { entries = append(entries, e) }) {
		return nil, false
	}
	return entries, true
}

// forEachWritten calls f with each entry of data, in order, and reports whether data
// is exactly as encode writes a file. When it is not, f may have been called for the
// entries before the first difference: what it did with them is to be discarded.
func forEachWritten(data []byte, f func(Entry)) bool {
	s := scanner{b: data}
	if !s.lit("{\"version\": " + strconv.Itoa(fileVersion) + ", \"entries\": [") {
		return false
	}
	for first := true; ; first = false {
		if first && s.lit("]}\n") || !first && s.lit("\n]}\n") {
			return len(s.b) == 0
		}
		if !first && !s.lit(",") {
			return false
		}
		e, ok := s.entry()
		if !ok {
			return false
		}
		f(e)
	}
}

// scanner reads the bytes encode writes, field by field.
type scanner struct{ b []byte }

// lit consumes l if the input starts with it.
func (s *scanner) lit(l string) bool {
	if len(s.b) < len(l) || string(s.b[:len(l)]) != l {
		return false
	}
	s.b = s.b[len(l):]
	return true
}

// entry reads "\n  {...}" with appendEntry's fields in appendEntry's order.
func (s *scanner) entry() (e Entry, ok bool) {
	if !s.lit("\n  {\"addr\":") {
		return e, false
	}
	if e.Addr, ok = s.str(); !ok {
		return e, false
	}
	if s.lit(`,"pubkey":`) {
		if e.PubKey, ok = s.str(); !ok {
			return e, false
		}
	}
	if !s.lit(`,"since":`) {
		return e, false
	}
	if e.Since, ok = s.time(); !ok {
		return e, false
	}
	if s.lit(`,"last_success":`) {
		if e.LastSuccess, ok = s.time(); !ok {
			return e, false
		}
	}
	if s.lit(`,"last_failure":`) {
		if e.LastFailure, ok = s.time(); !ok {
			return e, false
		}
	}
	if s.lit(`,"failures":`) {
		if e.Failures, ok = s.int(); !ok {
			return e, false
		}
	}
	if s.lit(`,"source":`) {
		if e.Source, ok = s.str(); !ok {
			return e, false
		}
	}
	return e, s.lit("}")
}

// raw reads a JSON string of printable ASCII without escapes and returns its bytes.
func (s *scanner) raw() ([]byte, bool) {
	if !s.lit(`"`) {
		return nil, false
	}
	for i, c := range s.b {
		switch {
		case c == '"':
			v := s.b[:i]
			s.b = s.b[i+1:]
			return v, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// str reads a string as raw does. The sources encode writes are interned.
func (s *scanner) str() (string, bool) {
	b, ok := s.raw()
	switch {
	case !ok:
		return "", false
	case string(b) == SourceLogin:
		return SourceLogin, true
	case string(b) == SourceSupernode:
		return SourceSupernode, true
	}
	return string(b), true
}

// time reads a time as appendTime writes it: RFC 3339 in UTC, in its shortest form (the
// form it formats back to, which encoding/json would also accept).
func (s *scanner) time() (time.Time, bool) {
	b, ok := s.raw()
	if !ok {
		return time.Time{}, false
	}
	return parseShortestUTC(b)
}

// parseShortestUTC parses b if it is what time.Time.AppendFormat(time.RFC3339Nano)
// writes for a time in UTC: "2006-01-02T15:04:05Z", with a fraction of 1 to 9 digits
// and no trailing zero before the Z when the time has one. It gives what time.Parse
// gives, at a tenth of a parse and a format to compare with (every client reads its
// cache at start, a few hundred times); anything else is refused, and the file is then
// left to encoding/json.
func parseShortestUTC(b []byte) (time.Time, bool) {
	const base = len("2006-01-02T15:04:05")
	if len(b) < base+1 || b[len(b)-1] != 'Z' || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	num := func(p []byte) (int, bool) {
		n := 0
		for _, c := range p {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(b[0:4])
	month, ok2 := num(b[5:7])
	day, ok3 := num(b[8:10])
	hour, ok4 := num(b[11:13])
	minute, ok5 := num(b[14:16])
	sec, ok6 := num(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || month < 1 || month > 12 || day < 1 ||
		day > daysIn(time.Month(month), year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	nsec := 0
	if frac := b[base : len(b)-1]; len(frac) > 0 {
		digits := frac[1:]
		if frac[0] != '.' || len(digits) < 1 || len(digits) > 9 || digits[len(digits)-1] == '0' {
			return time.Time{}, false
		}
		n, ok := num(digits)
		if !ok {
			return time.Time{}, false
		}
		for range 9 - len(digits) {
			n *= 10
		}
		nsec = n
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

// daysIn is the number of days of month m of year.
func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// int reads a decimal integer as strconv writes it.
func (s *scanner) int() (int, bool) {
	n := 0
	for n < len(s.b) && (s.b[n] == '-' && n == 0 || s.b[n] >= '0' && s.b[n] <= '9') {
		n++
	}
	v, err := strconv.Atoi(string(s.b[:n]))
	if err != nil || strconv.Itoa(v) != string(s.b[:n]) {
		return 0, false
	}
	s.b = s.b[n:]
	return v, true
}
