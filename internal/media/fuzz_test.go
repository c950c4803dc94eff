package media

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/fuzzseed"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/Fuzz* from the seeds in fuzz_test.go")

// openErrors are the errors Open may return.
var openErrors = []error{ErrMalformed, ErrVersion, ErrAuth}

// receiveErrors are the errors a session's receive may return.
var receiveErrors = []error{ErrMalformed, ErrVersion, ErrAuth, ErrReplay}

func isOneOf(err error, errs []error) bool {
	return slices.ContainsFunc(errs, func(e error) bool { return errors.Is(err, e) })
}

func mustCipher(t testing.TB, caller bool) *Cipher {
	c, err := NewCipher(testKey, caller)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustSeal(t testing.TB, c *Cipher, p Packet) []byte {
	b, err := c.Seal(nil, &p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// packetSeeds are FuzzOpen's seeds: packets the caller sends, as the callee receives
// them, with the error Open must give (nil: opens). Sealing is deterministic, so they
// do not change unless the format does.
func packetSeeds(t testing.TB) map[string]struct {
	pkt  []byte
	want error
} {
	c := mustCipher(t, true)
	ulaw := EncodeUlaw(make([]byte, FrameSamples), expectedFrames(&Sine{}, 1)[0])
	audio := mustSeal(t, c, Packet{Type: TypeAudio, Seq: 7, Timestamp: 960, SendTime: 123456, Payload: ulaw})
	mod := func(b []byte, fn func([]byte) []byte) []byte { return fn(bytes.Clone(b)) }
	other, _ := NewCipher([32]byte{9}, true)
	return map[string]struct {
		pkt  []byte
		want error
	}{
		"audio":         {audio, nil},
		"audio_1byte":   {mustSeal(t, c, Packet{Type: TypeAudio, Seq: 8, Payload: []byte{0xff}}), nil},
		"audio_max":     {mustSeal(t, c, Packet{Type: TypeAudio, Seq: MaxSeq, Payload: make([]byte, MaxPayload)}), nil},
		"probe":         {mustSeal(t, c, Packet{Type: TypeProbe, Seq: 1, SendTime: 99}), nil},
		"probe_reply":   {mustSeal(t, c, Packet{Type: TypeProbeReply, Seq: 2, EchoSeq: 1, EchoTime: 99}), nil},
		"hold":          {mustSeal(t, c, Packet{Type: TypeHold, Seq: 3, Timestamp: 16000}), nil},
		"bye":           {mustSeal(t, c, Packet{Type: TypeBye, Seq: 4}), nil},
		"empty":         {[]byte{}, ErrMalformed},
		"header_only":   {audio[:HeaderLen], ErrMalformed},
		"truncated":     {audio[:len(audio)-1], ErrAuth},
		"bad_version":   {mod(audio, func(b []byte) []byte { b[0] = 2; return b }), ErrVersion},
		"unknown_type":  {mod(audio, func(b []byte) []byte { b[1] = 9; return b }), ErrMalformed},
		"seq_zero":      {mod(audio, func(b []byte) []byte { clear(b[2:8]); return b }), ErrMalformed},
		"probe_as_hold": {mod(mustSeal(t, c, Packet{Type: TypeProbe, Seq: 5}), func(b []byte) []byte { b[1] = byte(TypeHold); return b }), ErrAuth},
		"flipped_tag":   {mod(audio, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrAuth},
		"flipped_body":  {mod(audio, func(b []byte) []byte { b[20] ^= 0x80; return b }), ErrAuth},
		"other_key":     {mustSeal(t, other, Packet{Type: TypeAudio, Seq: 7, Payload: ulaw}), ErrAuth},
		"reflected":     {mustSeal(t, mustCipher(t, false), Packet{Type: TypeAudio, Seq: 7, Payload: ulaw}), ErrAuth},
		"oversized":     {append(bytes.Clone(audio), make([]byte, MaxPacketLen)...), ErrMalformed},
		"reply_wrong_length": {mod(mustSeal(t, c, Packet{Type: TypeProbeReply, Seq: 6, EchoSeq: 1}), func(b []byte) []byte {
			return b[:len(b)-1]
		}), ErrMalformed},
	}
}

// bodySeeds are FuzzBody's seeds: a type byte followed by a decrypted body.
func bodySeeds(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	callee := mustCipher(t, false)
	for name, s := range packetSeeds(t) {
		if s.want != nil {
			continue
		}
		b := bytes.Clone(s.pkt)
		if _, err := callee.Open(b); err != nil {
			t.Fatal(err)
		}
		out[name] = append([]byte{b[1]}, b[HeaderLen:len(b)-TagLen]...)
	}
	out["short"] = []byte{byte(TypeAudio), 0, 0, 0}
	out["reply_echo_zero"] = append([]byte{byte(TypeProbeReply)}, make([]byte, 20)...)
	return out
}

// wavSeeds are FuzzWAV's seeds.
func wavSeeds(t testing.TB) map[string][]byte {
	mk := func(tag uint16, ch int, rate int, bits uint16, n int, extra ...[]byte) []byte {
		return buildWAV(tag, ch, rate, bits, make([]byte, n), extra...)
	}
	return map[string][]byte{
		"mono_8k":     wavBytes(t, expectedFrames(&Sine{}, 2)),
		"stereo_16k":  mk(wavFormatPCM, 2, 16000, 16, 640),
		"mono_44k":    mk(wavFormatPCM, 1, 44100, 16, 1000),
		"with_list":   mk(wavFormatPCM, 1, 8000, 16, 320, []byte("LIST\x03\x00\x00\x00abc\x00")),
		"extensible":  mk(wavFormatExtensible, 1, 8000, 16, 320),
		"float":       mk(3, 1, 8000, 32, 320),
		"8bit":        mk(wavFormatPCM, 1, 8000, 8, 320),
		"streaming":   streamingWAV(),
		"truncated":   mk(wavFormatPCM, 1, 8000, 16, 320)[:30],
		"not_riff":    []byte("RIFX\x00\x00\x00\x00WAVE"),
		"odd_samples": mk(wavFormatPCM, 2, 8000, 16, 7),
	}
}

type corpus struct {
	target string
	seeds  map[string][]byte
	check  func(t testing.TB, name string, data []byte)
}

func corpora(t *testing.T) []corpus {
	ps := packetSeeds(t)
	packets := map[string][]byte{}
	for name, s := range ps {
		packets[name] = s.pkt
	}
	callee := mustCipher(t, false)
	return []corpus{
		{"FuzzOpen", packets, func(t testing.TB, name string, data []byte) {
			want := ps[name].want
			if _, err := callee.Open(data); (want == nil) != (err == nil) || (want != nil && !errors.Is(err, want)) {
				t.Errorf("FuzzOpen seed %s: %v, want %v", name, err, want)
			}
		}},
		{"FuzzBody", bodySeeds(t), nil},
		{"FuzzWAV", wavSeeds(t), nil},
	}
}

// TestFuzzCorpus checks that the checked-in seeds are the ones built here and still
// give their outcomes, so that a format change cannot silently turn them into junk.
// Run with -update-corpus to rewrite them.
func TestFuzzCorpus(t *testing.T) {
	for _, c := range corpora(t) {
		fuzzseed.Sync(t, filepath.Join("testdata", "fuzz", c.target), c.seeds, *updateCorpus, c.check)
	}
}

// FuzzOpen feeds arbitrary datagrams to the callee's Open and to a session's receive.
// Neither may panic; every failure must be classified; anything Open accepts must be
// canonical (sealing what it returned gives the same bytes back).
//
// Random bytes almost never pass the tag, so this mostly exercises the header checks;
// FuzzBody reaches the parser behind the AEAD.
func FuzzOpen(f *testing.F) {
	for _, s := range packetSeeds(f) {
		f.Add(s.pkt)
	}
	callee := mustCipher(f, false)
	caller := mustCipher(f, true)
	s, err := NewSession(Config{Key: testKey, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		f.Fatal(err)
	}
	s.AddPath(KindDirect, "fuzz", newNopPath(), 0)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if err := s.receive(s.paths[0], bytes.Clone(pkt), time.Unix(0, 0)); err != nil && !isOneOf(err, receiveErrors) {
			t.Fatalf("receive: unclassified error: %v", err)
		}
		take(s, 0) // probe-replies
		b := bytes.Clone(pkt)
		p, err := callee.Open(b)
		if err != nil {
			if !isOneOf(err, openErrors) {
				t.Fatalf("Open: unclassified error: %v", err)
			}
			return
		}
		again, err := caller.Seal(nil, &p)
		if err != nil {
			t.Fatalf("accepted %+v does not seal: %v", p, err)
		}
		if !bytes.Equal(again, pkt) {
			t.Fatalf("accepted packet is not canonical")
		}
	})
}

// FuzzBody feeds a type byte and an arbitrary decrypted body to the parser behind the
// AEAD. Anything it accepts must seal and open back to the same packet.
func FuzzBody(f *testing.F) {
	for _, b := range bodySeeds(f) {
		f.Add(b)
	}
	caller, callee := mustCipher(f, true), mustCipher(f, false)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		h := Header{Type: Type(in[0]), Seq: 1}
		p, err := parseBody(h, in[1:])
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		sealed, err := caller.Seal(nil, &p)
		if err != nil {
			t.Fatalf("parsed %+v does not seal: %v", p, err)
		}
		q, err := callee.Open(sealed)
		if err != nil {
			t.Fatalf("sealed packet does not open: %v", err)
		}
		if q.Type != p.Type || q.Timestamp != p.Timestamp || q.SendTime != p.SendTime || q.EchoSeq != p.EchoSeq || q.EchoTime != p.EchoTime || !bytes.Equal(q.Payload, p.Payload) {
			t.Fatalf("round trip changed the packet: %+v -> %+v", p, q)
		}
	})
}

// FuzzWAV feeds arbitrary files to the WAV reader: no panic, classified header errors,
// and bounded output (the reader produces at most what the data can hold, resampled).
func FuzzWAV(f *testing.F) {
	for _, b := range wavSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewWAVReader(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrNotWAV) && !errors.Is(err, ErrUnsupportedWAV) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		fm := r.Format()
		// Samples in the file at most, then resampled to 8 kHz, in frames, plus one.
		limit := len(data)/(2*fm.Channels)*SampleRate/fm.SampleRate/FrameSamples + 2
		pcm := make([]int16, FrameSamples)
		for n := 0; ; n++ {
			err := r.ReadFrame(pcm)
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if n > limit {
				t.Fatalf("more than %d frames from %d bytes at %d Hz", limit, len(data), fm.SampleRate)
			}
		}
	})
}
