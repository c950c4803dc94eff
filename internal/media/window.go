package media

// ReplayWindow is how many packets back the replay window remembers. At 50 audio
// packets a second plus probes it spans some 15 s, far more than any path reorders.
const ReplayWindow = 1024

// verdict is the replay window's judgement of a sequence number.
type verdict uint8

const (
	fresh     verdict = iota // never seen: accept
	duplicate                // seen, first over another path: drop, but the path works
	replayed                 // seen over the same path, or older than the window: drop
)

// replayWindow is a sliding bitmap over the last ReplayWindow sequence numbers, as in
// RFC 6479 but without its block trick: the window is small enough to clear bit by bit.
// It also remembers which path delivered each sequence number first, to tell multipath
// duplicates from replays. The zero value is empty.
type replayWindow struct {
	top  uint64                    // highest accepted sequence number; 0 = none yet
	bits [ReplayWindow / 64]uint64 // bit seq%ReplayWindow: seq accepted
	from [ReplayWindow]uint8       // path (index+1, saturating) that delivered seq first
}

// check judges seq before it is authenticated, and changes nothing. It returns fresh or
// duplicate for numbers in the window that might be new or seen; only the cheap
// "older than the window" rejection is final here.
func (w *replayWindow) check(seq uint64) verdict {
	switch {
	case seq > w.top:
		return fresh
	case w.top-seq >= ReplayWindow:
		return replayed
	case w.bits[seq/64%(ReplayWindow/64)]&(1<<(seq%64)) != 0:
		return duplicate
	}
	return fresh
}

// accept records an authenticated seq delivered by path and judges it.
func (w *replayWindow) accept(seq uint64, path int) verdict {
	tag := uint8(min(path+1, 255))
	if seq > w.top {
		// Slide: forget everything the window leaves behind.
		if seq-w.top >= ReplayWindow {
			clear(w.bits[:])
		} else {
			for s := w.top + 1; s <= seq; s++ {
				w.bits[s/64%(ReplayWindow/64)] &^= 1 << (s % 64)
			}
		}
		w.top = seq
	} else if w.top-seq >= ReplayWindow {
		return replayed
	}
	i, m := seq/64%(ReplayWindow/64), uint64(1)<<(seq%64)
	if w.bits[i]&m != 0 {
		if w.from[seq%ReplayWindow] == tag {
			return replayed
		}
		return duplicate
	}
	w.bits[i] |= m
	w.from[seq%ReplayWindow] = tag
	return fresh
}
