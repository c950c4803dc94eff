package client_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/media"
)

// tonePower is the power of the frequency f (Hz) in pcm (8 kHz), by the Goertzel
// algorithm, per sample.
func tonePower(pcm []int16, f float64) float64 {
	w := 2 * math.Pi * f / media.SampleRate
	coeff := 2 * math.Cos(w)
	var s1, s2 float64
	for _, x := range pcm {
		s := float64(x) + coeff*s1 - s2
		s2, s1 = s1, s
	}
	return (s1*s1 + s2*s2 - coeff*s1*s2) / float64(len(pcm)*len(pcm))
}

// readWAVSamples reads the samples of a WAV file written by media.WAVWriter.
func readWAVSamples(t *testing.T, path string) []int16 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = b[44:]
	pcm := make([]int16, len(b)/2)
	for i := range pcm {
		pcm[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return pcm
}

func writeTone(t *testing.T, path string, f float64, frames int) {
	w, err := media.CreateWAV(path)
	if err != nil {
		t.Fatal(err)
	}
	src := &media.Sine{Freq: f, Frames: frames}
	pcm := make([]int16, media.FrameSamples)
	for src.ReadFrame(pcm) == nil {
		w.WriteFrame(pcm, false)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// hears checks that pcm carries the tones want and not the tone not (the listener's own).
func hears(t *testing.T, who string, pcm []int16, want []float64, not float64) {
	t.Helper()
	own := tonePower(pcm, not)
	for _, f := range want {
		p := tonePower(pcm, f)
		t.Logf("%s hears %4.0f Hz at %.3g (own %4.0f Hz at %.3g)", who, f, p, not, own)
		if p < 100*own || p == 0 {
			t.Errorf("%s: %.0f Hz at %.3g is not clearly above their own %.0f Hz at %.3g", who, f, p, not, own)
		}
	}
}

// TestConference: alice, bob and carol each send their own tone; everyone hears the
// others' tones and not their own. First alice mixes (all NATs are equal and she started
// it); then alice may not mix, and bob, the most capable of the others, does.
func TestConference(t *testing.T) {
	for _, aliceMixes := range []bool{true, false} {
		name := map[bool]string{true: "initiator-mixes", false: "bob-mixes"}[aliceMixes]
		t.Run(name, func(t *testing.T) {
			o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, STUN: true, Relay: true, CacheTTL: -1})
			dir := t.TempDir()
			tones := map[string]float64{"alice": 440, "bob": 1000, "carol": 1700}
			clients := map[string]*overlaytest.Client{}
			for _, u := range []string{"alice", "bob", "carol"} {
				o.Register(u, u+"'s password")
				writeTone(t, filepath.Join(dir, u+".wav"), tones[u], 1500)
				clients[u] = o.StartClient(filepath.Join(dir, u), u, u+"'s password", func(c *client.Config) {
					c.Call.Loopback, c.Call.AutoAnswer = true, true
					c.Call.AnswerSend, c.Call.RecordDir = filepath.Join(dir, u+".wav"), filepath.Join(dir, u, "rec")
					c.Call.NoMixing = u == "alice" && !aliceMixes
					c.NATTimeout = 300 * time.Millisecond
				})
			}
			o.Eventually("everyone attached and published", func() bool {
				for _, c := range clients {
					if c.Status().NAT == nil || c.Metrics().Get("publishes") < 2 {
						return false
					}
				}
				return true
			})
			rec := &media.Recorder{}
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			cr, err := clients["alice"].Conference(ctx, []string{"bob", "carol"}, client.CallOptions{
				Source: &media.Sine{Freq: tones["alice"], Frames: 200}, Sink: rec, Duration: 4 * time.Second,
			})
			if err != nil {
				t.Fatalf("conference: %v (%+v)", err, cr)
			}
			wantMixer := map[bool]string{true: "alice", false: "bob"}[aliceMixes]
			if cr.Mixer != wantMixer {
				t.Fatalf("mixer %s, want %s", cr.Mixer, wantMixer)
			}
			frames, _ := rec.Frames()
			var alicePCM []int16
			for _, f := range frames {
				alicePCM = append(alicePCM, f...)
			}
			hears(t, "alice", alicePCM, []float64{1000, 1700}, 440)
			for _, u := range []string{"bob", "carol"} {
				c := clients[u]
				overlaytest.Eventually(t, 10*time.Second, u+"'s report", func() bool { return len(c.Reports()) > 0 })
				var pcm []int16
				for _, r := range c.Reports() {
					pcm = append(pcm, readWAVSamples(t, filepath.Join(dir, u, "rec", r.Call+".wav"))...)
				}
				var others []float64
				for v, f := range tones {
					if v != u {
						others = append(others, f)
					}
				}
				hears(t, u, pcm, others, tones[u])
			}
		})
	}
}
