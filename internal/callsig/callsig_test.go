package callsig

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peerline/peerline/internal/fuzzseed"
	"golang.org/x/crypto/curve25519"
)

func ephemeral(t testing.TB) (priv, pub []byte) {
	priv = make([]byte, 32)
	rand.Read(priv)
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

const callID = "00112233445566778899aabbccddeeff"

func TestRoundTrip(t *testing.T) {
	_, pub := ephemeral(t)
	m := &Msg{T: TInvite, Call: callID, NAT: &NAT{Classic: "symmetric"}, Ufrag: "u", Pwd: "p",
		Cands: []string{"candidate:1 1 udp 2130706431 192.0.2.1 4000 typ host"}, Relays: []string{"203.0.113.5:50000"},
		Public: []string{"198.51.100.7"}, Eph: pub, Conf: []string{"carol"}}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.T != m.T || got.NAT.Classic != "symmetric" || got.Relays[0] != m.Relays[0] || string(got.Eph) != string(pub) || got.Conf[0] != "carol" {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	_, pub := ephemeral(t)
	for name, s := range badSeeds(pub) {
		if _, err := Decode([]byte(s)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func badSeeds(pub []byte) map[string]string {
	_ = pub
	return map[string]string{
		"empty":         ``,
		"not_json":      `hello`,
		"unknown_type":  `{"t":"ring","call":"` + callID + `"}`,
		"short_call":    `{"t":"hangup","call":"00"}`,
		"nonhex_call":   `{"t":"hangup","call":"zz112233445566778899aabbccddeeff"}`,
		"invite_no_key": `{"t":"invite","call":"` + callID + `"}`,
		"hangup_key":    `{"t":"hangup","call":"` + callID + `","eph":"AAAA"}`,
		"bad_relay":     `{"t":"candidate","call":"` + callID + `","relays":["nowhere"]}`,
		"bad_public":    `{"t":"candidate","call":"` + callID + `","public":["1.2.3"]}`,
		"trailing":      `{"t":"hangup","call":"` + callID + `"} {}`,
		"too_many":      `{"t":"candidate","call":"` + callID + `","cands":[` + strings.Repeat(`"c",`, MaxCands) + `"c"]}`,
		"empty_cand":    `{"t":"candidate","call":"` + callID + `","cands":[""]}`,
		"long":          `{"t":"hangup","call":"` + callID + `","reason":"` + strings.Repeat("x", MaxLen) + `"}`,
	}
}

func TestMediaKeyAgrees(t *testing.T) {
	aPriv, aPub := ephemeral(t)
	bPriv, bPub := ephemeral(t)
	ka, err := MediaKey(aPriv, bPub, callID, []byte("credA"), []byte("credB"), aPub, bPub)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := MediaKey(bPriv, aPub, callID, []byte("credA"), []byte("credB"), aPub, bPub)
	if err != nil {
		t.Fatal(err)
	}
	if ka != kb {
		t.Fatal("the two sides derived different keys")
	}
	kc, _ := MediaKey(bPriv, aPub, callID, []byte("credA"), []byte("credC"), aPub, bPub)
	if kc == ka {
		t.Fatal("the key does not depend on the credentials")
	}
	if _, err := MediaKey(aPriv, make([]byte, 32), callID, nil, nil, aPub, bPub); err == nil {
		t.Fatal("a low-order peer key was accepted")
	}
}

func FuzzDecode(f *testing.F) {
	_, pub := ephemeral(f)
	good, _ := Encode(&Msg{T: TAccept, Call: callID, Eph: pub, Cands: []string{"candidate:1 1 udp 1 192.0.2.1 1 typ host"}})
	f.Add(good)
	for _, s := range badSeeds(pub) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("a decoded message does not encode: %v", err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
	})
}

// TestWriteCorpus writes the seed corpus when asked:
// PEERLINE_WRITE_CORPUS=1 go test -run TestWriteCorpus ./internal/callsig/
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("PEERLINE_WRITE_CORPUS") == "" {
		t.Skip("set PEERLINE_WRITE_CORPUS=1 to rewrite testdata/fuzz/FuzzDecode")
	}
	_, pub := ephemeral(t)
	dir := "testdata/fuzz/FuzzDecode"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	good, _ := Encode(&Msg{T: TInvite, Call: callID, Eph: pub, NAT: &NAT{Classic: "full cone"}, Relays: []string{"203.0.113.1:3478"}, Cands: []string{"candidate:1 1 udp 1 192.0.2.1 1 typ host"}})
	seeds := badSeeds(pub)
	seeds["valid_invite"] = string(good)
	cancelled, _ := Encode(&Msg{T: THangup, Call: callID, Reason: ReasonCancelled})
	seeds["valid_hangup_cancelled"] = string(cancelled)
	for name, s := range seeds {
		if err := fuzzseed.Write(filepath.Join(dir, name), []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
}
