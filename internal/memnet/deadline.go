package memnet

import (
	"math"
	"time"
)

// deadline is one read or write deadline: the wall-clock time it passes, in Unix
// nanoseconds, 0 for none. Its field is guarded by the mutex of the conn that owns it.
//
// No timer runs for a deadline. An operation checks it when it starts and again each time
// it wakes, and one that must wait waits no longer than it (Network.wait); setting a
// deadline wakes the operations waiting so that they check the new one. A timer per
// deadline set would cost a timer and, when it fires, a goroutine for every write of a
// connection that sets a write deadline per write (the overlay's does): tens of thousands
// of them at once in a simulation of 100,000 users, for writes that completed long before.
type deadline struct {
	at int64
}

// set makes t the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	switch {
	case t.IsZero():
		d.at = 0
	case t.Year() < 1970:
		d.at = 1 // long past
	case t.Year() > 2200:
		d.at = math.MaxInt64 // beyond what UnixNano holds: never, in practice
	default:
		d.at = max(t.UnixNano(), 1)
	}
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool {
	return d.at != 0 && time.Now().UnixNano() >= d.at
}
