// Package eventually is how tests wait: for a condition to hold (That, Await), or for
// goroutines to end (Leftover). It polls every 10 ms against the real clock and bounds
// every wait; a test that needs to wait for something else, such as an amount of time
// passing, says why beside its own wait.
//
// That may fail the test, so only the test's own goroutine calls it (testing.T.FailNow
// must run there); any other goroutine calls Await and hands its error back.
package eventually

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Poll is how often a condition is tried again.
const Poll = 10 * time.Millisecond

// That waits up to limit for cond and fails the test, naming what it waited for, if cond
// never held. Call it from the test's goroutine only.
func That(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Await(limit, what, cond); err != nil {
		t.Fatal(err)
	}
}

// Await waits up to limit for cond and returns an error naming what it waited for if
// cond never held. It does not touch a test, so any goroutine may call it.
func Await(limit time.Duration, what string, cond func() bool) error {
	if cond() {
		return nil
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(Poll)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			if cond() {
				return nil
			}
			return fmt.Errorf("timed out after %v waiting for: %s", limit, what)
		case <-tick.C:
			if cond() {
				return nil
			}
		}
	}
}

// Leftover waits up to limit for every goroutine whose stack names one of funcs (prefixes
// of qualified function names, such as "github.com/peerline/peerline/supernode." for a
// package) to end, and returns the stacks of those still alive: a role's Run must leave
// none behind. The test's own goroutines are not counted.
func Leftover(limit time.Duration, funcs ...string) []string {
	var left []string
	Await(limit, "goroutines to end", func() bool {
		left = alive(funcs)
		return len(left) == 0
	})
	return left
}

func alive(funcs []string) []string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "\ntesting.tRunner(") || strings.Contains(g, "\nmain.main()") {
			continue // a test's own goroutine
		}
		for _, f := range funcs {
			if strings.Contains(g, f) {
				left = append(left, g)
				break
			}
		}
	}
	return left
}
