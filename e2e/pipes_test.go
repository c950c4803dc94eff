package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/media"
)

// TestCallWithPipes plays raw PCM from the call command's stdin into a call and takes
// the peer's audio on its stdout, as `arecord | peerline call bob --send - --record -`
// does, with the real binaries on loopback.
func TestCallWithPipes(t *testing.T) {
	o := startOverlay(t, 2)
	o.register(t, "alice", "bob")
	alice := o.client(t, "alice", "--no-supernode", "--loopback-candidates")
	bobRec := filepath.Join(o.root, "bob-rec")
	bob := o.client(t, "bob", "--no-supernode", "--loopback-candidates", "--auto-answer", "--record-dir", bobRec)
	waitNATKnown(t, alice, bob)
	// 2 s of noise as raw s16le, and what bob must record of it.
	const frames = 100
	r := rand.New(rand.NewPCG(3, 4))
	var raw bytes.Buffer
	want := map[[8]int16][]int16{}
	for i := 0; i < frames; i++ {
		pcm := make([]int16, media.FrameSamples)
		for j := range pcm {
			pcm[j] = int16(r.IntN(16000) - 8000)
			binary.Write(&raw, binary.LittleEndian, pcm[j])
		}
		u := media.EncodeUlaw(make([]byte, len(pcm)), pcm)
		d := media.DecodeUlaw(make([]int16, len(u)), u)
		want[[8]int16(d[:8])] = d
	}
	bin := netlab.BuildPeerline(t)
	var stdout, stderr bytes.Buffer
	var err error
	// bob's record may not have reached the overlay yet: a call that finds him offline
	// is tried again.
	if eventually.Await(30*time.Second, "a call that finds bob online", func() bool {
		stdout.Reset()
		stderr.Reset()
		cmd := exec.Command(bin, "call", "--data", alice, "--send", "-", "--record", "-", "--json", "bob")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(raw.Bytes()), &stdout, &stderr
		err = cmd.Run()
		return err == nil || !strings.Contains(stderr.String(), "offline")
	}) != nil || err != nil {
		t.Fatalf("peerline call: %v\n%s", err, stderr.String())
	}
	var rep client.CallReport
	if err := json.Unmarshal(stderr.Bytes()[bytes.IndexByte(stderr.Bytes(), '{'):], &rep); err != nil {
		t.Fatalf("report on stderr: %v\n%s", err, stderr.String())
	}
	// alice's stdout carries bob's tone, as raw PCM, frame after frame.
	if stdout.Len() < 50*2*media.FrameSamples || stdout.Len()%2 != 0 {
		t.Fatalf("alice's stdout has %d bytes of bob's audio", stdout.Len())
	}
	// bob's recording is complete once he reports the call.
	var rec []byte
	eventually.Await(10*time.Second, "bob's report of the call and its recording", func() bool {
		matches, _ := filepath.Glob(filepath.Join(bobRec, rep.Call+".wav"))
		if len(matches) != 1 {
			return false
		}
		out, _ := exec.Command(bin, "calls", "--data", bob, "--json").Output()
		if !bytes.Contains(out, []byte(rep.Call)) {
			return false
		}
		rec, _ = os.ReadFile(matches[0])
		return true
	})
	if len(rec) < 44 {
		t.Fatal("bob recorded nothing")
	}
	got := 0
	data := rec[44:]
	for off := 0; off+2*media.FrameSamples <= len(data); off += 2 * media.FrameSamples {
		pcm := make([]int16, media.FrameSamples)
		for j := range pcm {
			pcm[j] = int16(binary.LittleEndian.Uint16(data[off+2*j:]))
		}
		if w, ok := want[[8]int16(pcm[:8])]; ok {
			for j := range pcm {
				if pcm[j] != w[j] {
					t.Fatal("a frame arrived different from what went in on stdin")
				}
			}
			got++
		}
	}
	t.Logf("path %s; bob recorded %d of %d frames from alice's stdin; alice's stdout got %d bytes", rep.Path, got, frames, stdout.Len())
	if got < frames*99/100 {
		t.Fatalf("bob recorded %d of %d frames", got, frames)
	}
}
