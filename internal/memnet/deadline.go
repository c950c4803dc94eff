package memnet

import (
	"sync"
	"time"
)

// deadline is one read or write deadline. Its fields are guarded by the mutex of the
// conn that owns it; a timer exists only while a future deadline is set.
type deadline struct {
	timer   *time.Timer
	gen     uint32 // bumped on every change, so a stale timer does nothing
	expired bool
}

// setLocked makes t the deadline; the zero time means none. mu is the lock held by the
// caller and guarding d; when the deadline passes, the timer takes mu, marks d expired
// and calls wake so that blocked callers recheck.
func (d *deadline) setLocked(mu *sync.Mutex, t time.Time, wake func()) {
	d.stopLocked()
	d.expired = false
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		d.expired = true
		wake()
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(dur, func() {
		mu.Lock()
		defer mu.Unlock()
		if d.gen == gen {
			d.timer = nil
			d.expired = true
			wake()
		}
	})
}

// stopLocked disarms d without changing whether it has expired.
func (d *deadline) stopLocked() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
