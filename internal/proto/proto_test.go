package proto

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestRoundTripAll(t *testing.T) {
	for typ := range registry {
		m := New(typ)
		if m.Type() != typ {
			t.Fatalf("type %d: New gives %T of type %d", typ, m, m.Type())
		}
	}
	in := &LoginOK{Name: "alice", Credential: []byte{1, 2, 3}, Expires: time.Unix(100, 0).UTC(),
		Seed: []SupernodeInfo{{ID: "abc", Addr: "192.0.2.1:7001", Since: time.Unix(50, 0).UTC()}}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(TLoginOK, b)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*LoginOK)
	if got.Name != "alice" || len(got.Seed) != 1 || got.Seed[0].Addr != "192.0.2.1:7001" || !got.Expires.Equal(in.Expires) {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		typ  Type
		body string
	}{
		{99, `{}`},
		{TLogin, `not json`},
		{TLogin, `{"name":"","password":"x"}`},
		{TLogin, fmt.Sprintf(`{"name":"%0100d","password":"x"}`, 0)},
		{TSNRegister, `{"name":"sn","addr":"nope"}`},
		{TSNRegister, `{"name":"sn","addr":"192.0.2.1:0"}`},
		{TAttach, `{"credential":""}`},
		{TPeersOK, `{"supernodes":[{"id":"x","addr":":1"}]}`},
		{TIndexStoreBatch, `{"records":[]}`},
		{TIndexStoreBatch, `{"records":["AQID",""]}`},
	}
	for _, c := range cases {
		if _, err := Decode(c.typ, []byte(c.body)); !errors.Is(err, ErrDecode) {
			t.Errorf("type %d body %s: err %v, want ErrDecode", c.typ, c.body, err)
		}
	}
}

func TestErrorIs(t *testing.T) {
	e := ErrRateLimited.With("slow down").WithRetry(3 * time.Second)
	if !errors.Is(fmt.Errorf("login: %w", e), ErrRateLimited) || errors.Is(e, ErrBusy) {
		t.Fatal("errors.Is by code broken")
	}
	if e.RetryAfter() != 3*time.Second || ErrRateLimited.RetryAfterMs != 0 {
		t.Fatal("WithRetry must copy")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(uint8(TLogin), []byte(`{"name":"alice","password":"hunter22"}`))
	f.Add(uint8(TLoginOK), []byte(`{"name":"a","credential":"AQID","seed":[{"id":"k","addr":"192.0.2.1:1","since":"2026-01-01T00:00:00Z"}]}`))
	f.Add(uint8(TError), []byte(`{"code":"busy","retry_after_ms":100}`))
	f.Add(uint8(TIndexStoreBatch), []byte(`{"records":["AQID","BAUG"]}`))
	f.Add(uint8(TVia), []byte(`{"to":"k2","kind":55,"body":{"name":"bob","watcher":"alice"}}`))
	f.Add(uint8(TWatchBatch), []byte(`{"watches":[{"name":"bob","watcher":"alice"},{"name":"carol","watcher":"alice"}]}`))
	f.Add(uint8(TWatchBatchOK), []byte(`{"presences":[{"name":"bob","online":true,"to":"alice","seq":3}]}`))
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m, err := Decode(Type(typ), body)
		if err != nil {
			return
		}
		if m.Type() != Type(typ) {
			t.Fatalf("decoded %T for type %d", m, typ)
		}
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := Decode(Type(typ), b); err != nil {
			t.Fatalf("re-decode of accepted message failed: %v", err)
		}
	})
}

// TestBusyAlternativesRoundTrip: a busy answer carries the supernodes to try instead,
// with their load; an old answer without them still decodes, and a bad one is refused.
func TestBusyAlternativesRoundTrip(t *testing.T) {
	alt := []SupernodeInfo{{ID: "k1", Addr: "192.0.2.1:7001", Clients: 10, MaxClients: 100}}
	b, err := Encode(ErrBusy.WithRetry(time.Second).WithAlternatives(alt))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(TError, b)
	if err != nil {
		t.Fatal(err)
	}
	e := m.(*Error)
	if !errors.Is(e, ErrBusy) || e.RetryAfter() != time.Second || len(e.Alternatives) != 1 || e.Alternatives[0].Clients != 10 {
		t.Fatalf("busy answer round trip: %+v", e)
	}
	if len(ErrBusy.Alternatives) != 0 {
		t.Fatal("WithAlternatives must copy")
	}
	if _, err := Decode(TError, []byte(`{"code":"busy","retry_after_ms":100}`)); err != nil {
		t.Fatalf("old busy answer: %v", err)
	}
	for _, bad := range []string{
		`{"code":"busy","alternatives":[{"id":"k","addr":"nope"}]}`,
		`{"code":"busy","alternatives":[{"id":"k","addr":"192.0.2.1:1","clients":-1}]}`,
		`{"code":"busy","retry_after_ms":-5}`,
	} {
		if _, err := Decode(TError, []byte(bad)); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err %v, want ErrDecode", bad, err)
		}
	}
	ok, err := Decode(TSNPeers, []byte(`{"version":3,"layer_size":7,"layer_wanted":10,"supernodes":[{"id":"k","addr":"192.0.2.1:1","clients":3,"max_clients":9}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if p := ok.(*SNPeers); !p.Short() || p.Supernodes[0].MaxClients != 9 {
		t.Fatalf("SNPeers %+v", p)
	}
}

// TestViaRefusesWhatIsNotHandedOn: a Via names one end (To from the sender, From from
// the contact), carries only the kinds that may be handed on, and never another Via.
func TestViaRefusesWhatIsNotHandedOn(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"to":"k2","kind":55,"body":{"name":"bob","watcher":"alice"}}`, true},
		{`{"from":"k1","kind":54,"body":{"name":"bob","seq":1},"sig":"AQID"}`, true},
		{`{"to":"k2","from":"k1","kind":55,"body":{}}`, false},
		{`{"kind":55,"body":{}}`, false},
		{`{"to":"k2","kind":59,"body":{"to":"k3","kind":55,"body":{}}}`, false},
		{`{"to":"k2","kind":52,"body":{"name":"bob"}}`, false},
		{`{"to":"k2","kind":55}`, false},
	} {
		_, err := Decode(TVia, []byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.body, err, c.ok)
		}
	}
}
