package media

import "time"

// playState is what the jitter buffer hands the sink at one tick.
type playState uint8

const (
	playNothing   playState = iota // playout has not started
	playFrame                      // a received frame
	playConcealed                  // the frame is missing: silence, counted
	playHeld                       // the peer is on hold: silence, not counted
)

// pushResult is the jitter buffer's judgement of an arriving frame.
type pushResult uint8

const (
	pushed     pushResult = iota
	pushLate              // its turn has passed: dropped
	pushResync            // the buffer restarted at this frame (first frame, resume, jump)
)

// jitterBuffer orders frames by index (media timestamp / FrameSamples) and releases one
// per tick. It is a state machine driven by the session: push when a frame arrives, pop
// at every 20 ms tick; it reads no clock of its own.
type jitterBuffer struct {
	delay time.Duration // playout delay after the first frame of a talk spurt
	slots []jbSlot      // ring, by frame index modulo len

	started bool
	startAt time.Time // first pop at or after this plays frame next
	next    int64     // index of the next frame to play

	held    bool  // the peer is on hold
	holdIdx int64 // frames from here on belong to after the hold
	lateRun int   // late frames in a row

	concealed int64 // index of the last frame played as silence, -1 = none
	stretched int   // frames of delay added since the last restart
}

// maxStretch bounds how far the buffer stretches its delay, in frames: a frame that
// arrives just after its turn was concealed is played at the next tick instead (the
// frames after it wait one more tick), so a link that turned slower costs one frame of
// silence instead of every frame late, up to 200 ms more delay.
const maxStretch = 10

// lateResync is how many late frames in a row make the buffer follow the sender: the
// sender's timeline fell behind ours (its clock stalled: a busy machine drops ticks),
// and every frame from now on would come after its turn. Resynchronising loses the
// frames of the stall, not the rest of the call.
const lateResync = 2

type jbSlot struct {
	idx  int64
	ok   bool
	ulaw [FrameSamples]byte
}

func newJitterBuffer(delay time.Duration) *jitterBuffer {
	frames := int(delay / FrameDuration)
	// Room for the delay, plus a second of arrivals ahead of playout.
	return &jitterBuffer{delay: delay, slots: make([]jbSlot, 2*frames+50)}
}

// push offers frame idx, arriving at now. payload is copied (and zero-padded or cut to
// one frame).
func (j *jitterBuffer) push(idx int64, payload []byte, now time.Time) pushResult {
	res := pushed
	switch {
	case !j.started:
		j.restart(idx, now)
		res = pushResync
	case j.held && idx >= j.holdIdx:
		// Audio after a hold: start afresh, as for a first frame, so the hold is neither
		// played late nor counted as loss.
		j.restart(idx, now)
		res = pushResync
	case idx == j.next-1 && idx == j.concealed && j.stretched < maxStretch:
		j.next, j.concealed = idx, -1
		j.stretched++
	case idx < j.next:
		j.lateRun++
		if j.lateRun < lateResync {
			return pushLate
		}
		j.restart(idx, now)
		res = pushResync
	case idx >= j.next+int64(len(j.slots)):
		// Far ahead of playout: the sender jumped (clock drift, a lost hold packet, a
		// long outage). Follow it rather than play a backlog seconds late.
		j.restart(idx, now)
		res = pushResync
	}
	if res == pushed {
		j.lateRun = 0
	}
	s := &j.slots[idx%int64(len(j.slots))]
	s.idx, s.ok = idx, true
	n := copy(s.ulaw[:], payload)
	for i := n; i < len(s.ulaw); i++ {
		s.ulaw[i] = 0xff // µ-law silence
	}
	return res
}

func (j *jitterBuffer) restart(idx int64, now time.Time) {
	for i := range j.slots {
		j.slots[i].ok = false
	}
	j.started, j.startAt, j.next, j.held, j.lateRun = true, now.Add(j.delay), idx, false, 0
	j.concealed, j.stretched = -1, 0
}

// hold marks the peer as on hold from frame idx on.
func (j *jitterBuffer) hold(idx int64) {
	if !j.held {
		j.held, j.holdIdx = true, idx
	}
}

// pop releases the frame due at tick now; ulaw is valid for playFrame until the next
// push.
func (j *jitterBuffer) pop(now time.Time) (ulaw []byte, st playState) {
	if !j.started || now.Before(j.startAt) {
		return nil, playNothing
	}
	s := &j.slots[j.next%int64(len(j.slots))]
	if s.ok && s.idx == j.next {
		s.ok = false
		j.next++
		return s.ulaw[:], playFrame
	}
	if j.held && j.next >= j.holdIdx-1 {
		// Nothing more from before the hold (allowing one frame of slack for the frame
		// the hold packet may have overtaken); wait without advancing.
		return nil, playHeld
	}
	j.concealed = j.next
	j.next++
	return nil, playConcealed
}

// buffered reports whether frames are waiting to be played.
func (j *jitterBuffer) buffered() bool {
	for i := range j.slots {
		if j.slots[i].ok && j.slots[i].idx >= j.next {
			return true
		}
	}
	return false
}
