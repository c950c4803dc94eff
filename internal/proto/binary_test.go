package proto

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// samples holds a message of every type with a binary form, with every field set (the
// second of each pair) and with none set.
func samples() []Message {
	rec := []byte("a signed record")
	when := time.Date(2026, 12, 4, 1, 2, 3, 456789, time.UTC)
	return []Message{
		&OK{},
		&Ping{}, &Ping{Seq: 1 << 40},
		&Pong{}, &Pong{Seq: 7},
		&Publish{Record: rec},
		&Subscribe{}, &Subscribe{Names: []string{"bob", "carol"}},
		&IndexStore{Record: rec}, &IndexStore{Record: rec, Replicate: true},
		&IndexStoreBatch{Records: [][]byte{rec, []byte("another")}},
		&IndexLookup{Name: "bob", Asker: "alice"},
		&IndexResult{}, &IndexResult{Found: true, Online: true, Record: rec, LastSeen: when},
		&IndexGone{Name: "bob"}, &IndexGone{Name: "bob", Seq: 300},
		&Watch{Name: "bob", Watcher: "alice"},
		&WatchBatch{Watches: []Watch{{Name: "bob", Watcher: "alice"}, {Name: "carol", Watcher: "alice"}}},
		&WatchBatchOK{}, &WatchBatchOK{Presences: []Presence{{Name: "bob", Online: true, To: "alice", Seq: 3}, {Name: "carol", LastSeen: when}}},
		&Presence{Name: "bob"}, &Presence{Name: "bob", Online: true, LastSeen: when, To: "alice", Seq: 9},
		&Via{To: "k2", Kind: TWatch, Body: []byte(`{"name":"bob","watcher":"alice"}`)},
		&Via{From: "k1", Kind: TIndexGone, Body: []byte{3, 'b', 'o', 'b', 1}, Sig: []byte("sig"), BodyBinary: true},
		&Deliver{From: "alice", To: "bob", Envelope: []byte("sealed")},
		&Msg{To: "bob", Envelope: []byte("sealed")},
	}
}

// TestBinaryRoundTrip: every message with a binary form comes back from it as it went,
// and as it comes back from JSON (Via's BodyBinary aside, which JSON does not carry).
func TestBinaryRoundTrip(t *testing.T) {
	covered := map[Type]bool{}
	for _, m := range samples() {
		covered[m.Type()] = true
		b, err := AppendBinary(nil, m)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		got, err := DecodeBinary(m.Type(), b)
		if err != nil {
			t.Fatalf("%T %+v: %v", m, m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%T: binary round trip %+v, want %+v", m, got, m)
		}
		if v, ok := m.(*Via); ok && v.BodyBinary {
			continue
		}
		j, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		fromJSON, err := Decode(m.Type(), j)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !reflect.DeepEqual(got, fromJSON) {
			t.Errorf("%T: binary gives %+v, JSON %+v", m, got, fromJSON)
		}
	}
	for t0 := range registry {
		if _, has := New(t0).(binaryForm); Forwardable(t0) && !has {
			t.Errorf("type %d (%T) is handed on in a Via but has no binary form", t0, New(t0))
		}
		if _, has := New(t0).(binaryForm); has != covered[t0] {
			t.Errorf("type %d (%T): binary form %v, in the samples %v", t0, New(t0), has, covered[t0])
		}
	}
}

func TestBinaryRejects(t *testing.T) {
	presence, _ := AppendBinary(nil, &Presence{Name: "bob", Online: true})
	cases := []struct {
		name string
		typ  Type
		body []byte
	}{
		{"no binary form", TLogin, []byte{0}},
		{"unknown type", 99, nil},
		{"empty", TPresence, nil},
		{"truncated", TPresence, presence[:len(presence)-1]},
		{"left over", TPresence, append(append([]byte(nil), presence...), 0)},
		{"bool 2", TIndexStore, []byte{1, 'r', 2}},
		{"length beyond the body", TPublish, []byte{200, 1, 'r'}},
		{"count beyond the body", TSubscribe, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"empty name fails validation", TIndexGone, []byte{0, 0}},
		{"bad time", TIndexResult, []byte{0, 0, 0, 2}},
		{"nanoseconds out of range", TIndexResult, []byte{0, 0, 0, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03}},
		{"via of a kind not handed on", TVia, []byte{2, 'k', '2', 0, byte(TLogin), 1, '{', 0, 0}},
		{"overlong varint", TPing, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
	}
	for _, c := range cases {
		if _, err := DecodeBinary(c.typ, c.body); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err %v, want ErrDecode", c.name, err)
		}
	}
}

// TestEncodeFor: binary for a peer that reads it, JSON for one that does not, and a Via
// whose body is binary re-encoded for a JSON peer unless it is signed.
func TestEncodeFor(t *testing.T) {
	p := &Presence{Name: "bob", Online: true}
	if _, bin, _ := EncodeFor(p, true); !bin {
		t.Error("Presence not binary for a peer that reads it")
	}
	if b, bin, _ := EncodeFor(p, false); bin || b[0] != '{' {
		t.Errorf("Presence for a JSON peer: binary %v, %q", bin, b)
	}
	if _, bin, _ := EncodeFor(&LoginOK{Name: "a"}, true); bin {
		t.Error("LoginOK has no binary form but went binary")
	}
	inner, _ := AppendBinary(nil, &Watch{Name: "bob", Watcher: "alice"})
	b, bin, err := EncodeFor(&Via{From: "k1", Kind: TWatch, Body: inner, BodyBinary: true}, false)
	if err != nil || bin {
		t.Fatalf("binary Via for a JSON peer: %v, binary %v", err, bin)
	}
	m, err := Decode(TVia, b)
	if err != nil {
		t.Fatal(err)
	}
	v := m.(*Via)
	w, err := DecodeAs(v.Kind, v.Body, v.BodyBinary)
	if err != nil || w.(*Watch).Watcher != "alice" {
		t.Fatalf("re-encoded body: %+v %v", w, err)
	}
	gone, _ := AppendBinary(nil, &IndexGone{Name: "bob", Seq: 1})
	if _, _, err := EncodeFor(&Via{From: "k1", Kind: TIndexGone, Body: gone, Sig: []byte("s"), BodyBinary: true}, false); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("signed binary Via for a JSON peer: %v, want unreachable", err)
	}
}

// FuzzDecodeBinary: whatever the bytes, DecodeBinary returns a message or ErrDecode, and a
// message it accepts encodes to bytes that decode to the same message, in binary and in
// JSON.
func FuzzDecodeBinary(f *testing.F) {
	for _, m := range samples() {
		b, _ := AppendBinary(nil, m)
		f.Add(uint8(m.Type()), b)
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m, err := DecodeBinary(Type(typ), body)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error %v is not ErrDecode", err)
			}
			return
		}
		b, err := AppendBinary(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeBinary(Type(typ), b)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-decode: %+v %v, want %+v", again, err, m)
		}
		if v, ok := m.(*Via); ok && v.BodyBinary {
			return
		}
		if _, err := Encode(m); err != nil {
			if v, ok := m.(*Via); ok && v.Body != nil {
				return // a binary Via's body need not be JSON
			}
			t.Fatalf("JSON of an accepted message: %v", err)
		}
	})
}

var benchPresence = &Presence{Name: "user-01234", Online: true, To: "user-04321", Seq: 12}

func BenchmarkDecode(b *testing.B) {
	j, _ := Encode(benchPresence)
	bin, _ := AppendBinary(nil, benchPresence)
	b.Run("presence/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Decode(TPresence, j)
		}
	})
	b.Run("presence/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			DecodeBinary(TPresence, bin)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	b.Run("presence/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Encode(benchPresence)
		}
	})
	b.Run("presence/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			AppendBinary(nil, benchPresence)
		}
	})
}
