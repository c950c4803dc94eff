package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	h := Header{Type: 7, Flags: FlagResponse, ID: 0xdeadbeef}
	b, err := AppendFrame(nil, h, []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != HeaderLen+7 {
		t.Fatalf("frame length %d", len(b))
	}
	got, body, n, err := ParseFrame(append(b, 0xff))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(b) || got.Type != 7 || got.ID != 0xdeadbeef || !got.IsResponse() || got.IsError() || string(body) != `{"a":1}` {
		t.Fatalf("got %+v body %q n %d", got, body, n)
	}
	rh, rbody, err := ReadFrame(bytes.NewReader(b))
	if err != nil || rh != got || !bytes.Equal(rbody, body) {
		t.Fatalf("ReadFrame = %+v %q %v", rh, rbody, err)
	}
}

func TestRejects(t *testing.T) {
	good, _ := AppendFrame(nil, Header{Type: 1}, []byte("x"))
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"short header", good[:5], ErrShort},
		{"short body", good[:HeaderLen], ErrShort},
		{"version", mut(func(b []byte) { b[0] = 2 }), ErrVersion},
		{"type zero", mut(func(b []byte) { b[1] = 0 }), ErrType},
		{"flags", mut(func(b []byte) { b[3] = 0x80 }), ErrFlags},
		{"oversized", mut(func(b []byte) { b[8] = 0x7f }), ErrTooLarge},
	}
	for _, c := range cases {
		if _, _, _, err := ParseFrame(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := AppendFrame(nil, Header{Type: 1}, make([]byte, MaxBody+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("AppendFrame oversized: %v", err)
	}
	// A reader that claims a huge body must be refused before any allocation.
	huge := mut(func(b []byte) { b[8], b[9], b[10], b[11] = 0xff, 0xff, 0xff, 0xff })
	if _, _, err := ReadFrame(bytes.NewReader(huge)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFrame huge: %v", err)
	}
	if _, _, err := ReadFrame(bytes.NewReader(good[:HeaderLen])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadFrame truncated body: %v", err)
	}
}

func FuzzParseFrame(f *testing.F) {
	good, _ := AppendFrame(nil, Header{Type: 3, ID: 9}, []byte(`{"name":"alice"}`))
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, n, err := ParseFrame(b)
		if err != nil {
			return
		}
		if n != HeaderLen+len(body) || int(h.Len) != len(body) || len(body) > MaxBody {
			t.Fatalf("inconsistent parse: %+v n=%d body=%d", h, n, len(body))
		}
		again, err := AppendFrame(nil, h, body)
		if err != nil {
			t.Fatalf("re-encode of a parsed frame failed: %v", err)
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encode differs")
		}
		rh, rb, err := ReadFrame(bytes.NewReader(b))
		if err != nil || rh != h || !bytes.Equal(rb, body) {
			t.Fatalf("ReadFrame disagrees with ParseFrame: %v", err)
		}
	})
}
