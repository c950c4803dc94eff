package media

import (
	"testing"
	"time"
)

// TestJitterBuffer drives the buffer alone: reordered frames play in order after the
// delay, a gap is concealed, a frame after its turn is late, a jump resynchronises.
func TestJitterBuffer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ticks int) time.Time { return t0.Add(time.Duration(ticks) * FrameDuration) }
	j := newJitterBuffer(60 * time.Millisecond)
	frame := func(b byte) []byte { p := make([]byte, FrameSamples); p[0] = b; return p }

	if r := j.push(10, frame(10), at(0)); r != pushResync {
		t.Fatalf("first push: %v", r)
	}
	j.push(12, frame(12), at(0))
	j.push(11, frame(11), at(1))
	var played []string
	pop := func(tick int) {
		u, st := j.pop(at(tick))
		switch st {
		case playNothing:
			played = append(played, "-")
		case playFrame:
			played = append(played, string(rune('0'+u[0]-10)))
		case playConcealed:
			played = append(played, "c")
		case playHeld:
			played = append(played, "h")
		}
	}
	for tick := 0; tick < 7; tick++ {
		pop(tick)
	}
	// Frame 13 is missing; 14 arrives; 13 arrives just after its turn, which was played
	// as silence: it plays at the next tick, and 14 one tick later (the delay stretches).
	if got, want := join(played), "---012c"; got != want {
		t.Errorf("played %q, want %q", got, want)
	}
	j.push(14, frame(14), at(7))
	if r := j.push(13, frame(13), at(7)); r != pushed {
		t.Errorf("frame just after its turn: %v, want it taken", r)
	}
	if r := j.push(11, frame(11), at(7)); r != pushLate {
		t.Errorf("frame long after its turn: %v, want late", r)
	}
	pop(7)
	// A jump far ahead restarts playout there, after the delay.
	if r := j.push(1000, frame(10), at(8)); r != pushResync {
		t.Errorf("jump: %v, want resync", r)
	}
	pop(8)
	pop(11)
	if got, want := join(played), "---012c3-0"; got != want {
		t.Errorf("played %q, want %q", got, want)
	}
	// Hold: after the last frame before the hold, silence that is not loss, and no
	// advance; audio after the hold restarts playout.
	j.hold(1002)
	j.push(1001, frame(11), at(12))
	pop(12)
	pop(13)
	pop(14)
	if r := j.push(5000, frame(12), at(15)); r != pushResync {
		t.Errorf("resume: %v, want resync", r)
	}
	pop(18)
	if got, want := join(played), "---012c3-01hh2"; got != want {
		t.Errorf("played %q, want %q", got, want)
	}
}

// TestJitterBufferFollowsStalledSender: the sender's clock stalls 100 ms (its frames
// are numbered by count, so every later frame is 5 frames "late"); after two late
// frames the buffer follows it, and the rest of the call plays.
func TestJitterBufferFollowsStalledSender(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ticks int) time.Time { return t0.Add(time.Duration(ticks) * FrameDuration) }
	j := newJitterBuffer(60 * time.Millisecond)
	frame := make([]byte, FrameSamples)
	played, late := 0, 0
	for tick := 0; tick < 200; tick++ {
		idx := int64(tick)
		if tick >= 50 {
			idx = int64(tick - 5) // the stall: frames 45.. arrive 5 ticks after their time
			if tick < 55 {
				idx = -1 // nothing sent during the stall
			}
		}
		if idx >= 0 && j.push(idx, frame, at(tick)) == pushLate {
			late++
		}
		if _, st := j.pop(at(tick)); st == playFrame {
			played++
		}
	}
	// 195 frames were sent; a few are lost to the stall and the resync's delay.
	if late > lateResync-1 || played < 185 {
		t.Fatalf("played %d of 195, %d late", played, late)
	}
}

func join(s []string) string {
	out := ""
	for _, x := range s {
		out += x
	}
	return out
}
