package relay

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"github.com/peerline/peerline/internal/fuzzseed"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/Fuzz* from the seeds in fuzz_test.go")

// fuzzSeeds are the checked-in seeds of FuzzFrameLen and FuzzScreen: TURN frames and
// requests as clients and attackers send them. Transaction IDs are fixed so that the
// files do not change from run to run.
func fuzzSeeds(t testing.TB) map[string][]byte {
	tx := stun.NewTransactionIDSetter([stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	build := func(setters ...stun.Setter) []byte {
		m, err := stun.Build(setters...)
		if err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	good, goodPW, _ := Credentials(testSecret, "alice", 100*365*24*time.Hour, time.Unix(1700000000, 0))
	authed := func(user, pw string) []byte {
		return build(tx, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport,
			stun.NewUsername(user), stun.NewRealm(DefaultRealm), stun.NewNonce("nonce"),
			stun.MessageIntegrity(turn.GenerateAuthKey(user, DefaultRealm, pw)), stun.Fingerprint)
	}
	binding := build(tx, stun.BindingRequest)
	return map[string][]byte{
		"binding":            binding,
		"allocate":           build(tx, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport),
		"allocate-good":      authed(good, goodPW),
		"allocate-bad-pw":    authed(good, "guess"),
		"allocate-expired":   authed("1000:alice", password1(testSecret, "1000:alice")),
		"allocate-malformed": authed("alice", "whatever"),
		"no-nonce": build(tx, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport,
			stun.NewUsername(good), stun.NewRealm(DefaultRealm), stun.MessageIntegrity([]byte("k"))),
		"send-indication": build(tx, stun.NewType(stun.MethodSend, stun.ClassIndication),
			stun.RawAttribute{Type: stun.AttrData, Value: []byte("hello")}),
		"channel-data":  {0x40, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0, 0, 0},
		"channel-max":   {0x7F, 0xFF, 0xFF, 0xF8},
		"channel-wraps": {0x40, 0x00, 0xFF, 0xFD, 0, 0, 0, 0, 0},
		"stun-wraps":    append(append([]byte{0, 1, 0xFF, 0xF0}, binding[4:20]...), make([]byte, 4)...),
		"truncated":     binding[:12],
		"two-frames":    append(append([]byte(nil), binding...), binding...),
		"http":          []byte("GET / HTTP/1.1\r\nHost: relay\r\n\r\n"),
		"random":        bytes.Repeat([]byte{0xFF, 0x13, 0x37}, 11),
	}
}

func TestFuzzCorpus(t *testing.T) {
	for _, target := range []string{"FuzzFrameLen", "FuzzScreen"} {
		fuzzseed.Sync(t, filepath.Join("testdata", "fuzz", target), fuzzSeeds(t), *updateCorpus, nil)
	}
}

// onceConn is a net.Conn whose Read returns data once, then io.EOF.
type onceConn struct {
	net.Conn
	data []byte
}

func (c *onceConn) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *onceConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1} }

// FuzzFrameLen checks that the relay's TCP framing agrees with pion's STUNConn, which
// reframes what tcpConn.Read returns: a frame the relay cuts is the frame pion reads, and
// bytes the relay cannot frame yet do not give pion a frame either. (Pion holds a frame
// shorter than 9 bytes until more bytes come; it still reads the same frames in order.)
func FuzzFrameLen(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := frameLen(b)
		pion := turn.NewSTUNConn(&onceConn{data: b})
		buf := make([]byte, 1<<17)
		switch {
		case err == nil:
			if size < 4 || size > len(b) || size > 0xFFFF {
				t.Fatalf("frame size %d of %d bytes", size, len(b))
			}
			// Pion needs 9 bytes to tell any frame's size, so a shorter frame is read
			// once the next one arrives: a Binding request follows it here.
			next := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
			pion = turn.NewSTUNConn(&onceConn{data: append(append([]byte(nil), b[:size]...), next...)})
			n, _, perr := pion.ReadFrom(buf)
			if perr != nil || n != size {
				t.Fatalf("relay cuts a %d-byte frame, pion reads %d (%v)", size, n, perr)
			}
		case errors.Is(err, errIncomplete):
			if n, _, perr := pion.ReadFrom(buf); perr == nil {
				t.Fatalf("relay waits for more bytes, pion read a %d-byte frame", n)
			}
		case errors.Is(err, errBadFrame):
			// Pion refuses it too, or (for sizes its 16-bit arithmetic wraps) misframes it.
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// FuzzScreen feeds arbitrary frames to the credential check. It must not panic; what it
// answers must be a 401 error response to the same transaction, with REALM and NONCE,
// and never passed on to pion as well.
func FuzzScreen(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	s, err := New(Config{Secret: testSecret, Listen: "127.0.0.1:0", Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		f.Fatal(err)
	}
	release(f, s)
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		resp, pass := s.screenSTUN(b, src)
		if !bytes.Equal(in, b) {
			t.Fatal("screenSTUN modified its input")
		}
		s.screenUDP(b, false, src)
		if resp == nil {
			return
		}
		if pass {
			t.Fatal("answered and passed on")
		}
		m := &stun.Message{Raw: resp}
		if err := m.Decode(); err != nil {
			t.Fatalf("own response does not decode: %v", err)
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(m); err != nil || code.Code != stun.CodeUnauthorized || m.Type.Class != stun.ClassErrorResponse {
			t.Fatalf("response %v, want a 401 error response", m)
		}
		if !m.Contains(stun.AttrNonce) || !m.Contains(stun.AttrRealm) {
			t.Fatal("401 without NONCE or REALM")
		}
		req := &stun.Message{Raw: in}
		if req.Decode() != nil || req.TransactionID != m.TransactionID {
			t.Fatal("transaction ID not echoed")
		}
	})
}
