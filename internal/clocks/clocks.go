// Package clocks holds the one rule by which every role picks its clock: a Config takes a
// clockwork.Clock, which runs its timers and tickers and tells its time, and may also
// take an older Now func, which some callers set alone to move the time of a test.
package clocks

import (
	"context"
	"time"

	"github.com/jonboulle/clockwork"
)

// Pick returns c if it is set; else the real clock, telling now's time if now is set.
// A Config's Now left nil is then Pick's Now.
func Pick(c clockwork.Clock, now func() time.Time) clockwork.Clock {
	switch {
	case c != nil:
		return c
	case now != nil:
		return nowClock{clockwork.NewRealClock(), now}
	}
	return clockwork.NewRealClock()
}

// nowClock is the real clock's timers with the time of now.
type nowClock struct {
	clockwork.Clock
	now func() time.Time
}

func (c nowClock) Now() time.Time                  { return c.now() }
func (c nowClock) Since(t time.Time) time.Duration { return c.now().Sub(t) }
func (c nowClock) Until(t time.Time) time.Duration { return t.Sub(c.now()) }

// Sleep waits d on c, or until ctx ends, and reports whether the full delay passed: the
// back-offs of the roles wait here, so that a fake clock moves them.
func Sleep(ctx context.Context, c clockwork.Clock, d time.Duration) bool {
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return true
	case <-ctx.Done():
		return false
	}
}
