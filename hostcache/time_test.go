package hostcache

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// oldParse is what the scanner did before parseShortestUTC: time.Parse, and a format
// back that must give the same bytes.
func oldParse(b []byte) (time.Time, bool) {
	if len(b) == 0 || b[len(b)-1] != 'Z' {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, false
	}
	var buf [40]byte
	if !bytes.Equal(t.AppendFormat(buf[:0], time.RFC3339Nano), b) {
		return time.Time{}, false
	}
	return t, true
}

// TestParseShortestUTC holds parseShortestUTC to time.Parse and a format back, on the
// times appendTime writes and on near misses.
func TestParseShortestUTC(t *testing.T) {
	inputs := []string{
		"2026-12-04T05:06:07Z", "2026-12-04T05:06:07.5Z", "2026-12-04T05:06:07.123456789Z",
		"0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
		"2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
		"2026-12-04T24:00:00Z", "2026-12-04T23:60:00Z", "2026-12-04T23:59:60Z",
		"2026-13-04T00:00:00Z", "2026-00-04T00:00:00Z", "2026-12-00T00:00:00Z",
		"2026-12-04T05:06:07.50Z", "2026-12-04T05:06:07.Z", "2026-12-04T05:06:07.1234567891Z",
		"2026-12-04T05:06:07z", "2026-12-04T05:06:07+00:00", "2026-12-04 05:06:07Z",
		"2026-12-04T05:06:07", "+026-12-04T05:06:07Z", "2026-1a-04T05:06:07Z", "Z", "",
		"2026-12-04T05:06:07.-1Z", "2026-12-04T05:06:07.1e3Z",
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		tm := time.Unix(r.Int64N(253402300799), 0).UTC()
		switch r.IntN(3) {
		case 1:
			tm = tm.Add(time.Duration(r.IntN(1e9)))
		case 2:
			tm = tm.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
		}
		inputs = append(inputs, tm.Format(time.RFC3339Nano))
	}
	for _, in := range inputs {
		got, gok := parseShortestUTC([]byte(in))
		want, wok := oldParse([]byte(in))
		if gok != wok || !got.Equal(want) || got.Location() != want.Location() {
			t.Fatalf("%q: parseShortestUTC gives %v, %v; time.Parse %v, %v", in, got, gok, want, wok)
		}
	}
}
