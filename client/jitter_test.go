package client

import (
	"testing"
	"time"
)

// TestJitteredSpreadsPeriods: a jittered period is never longer than asked (records live
// two periods, supernodes time out after some) and no shorter than 80% of it, and the
// draws spread over that range, so that clients attached in one moment drift apart.
func TestJitteredSpreadsPeriods(t *testing.T) {
	const d = 20 * time.Second
	lo, hi := d, time.Duration(0)
	for range 10000 {
		j := jittered(d)
		if j > d || j < d*4/5 {
			t.Fatalf("jittered(%v) = %v, want within [%v, %v]", d, j, d*4/5, d)
		}
		lo, hi = min(lo, j), max(hi, j)
	}
	if hi-lo < d/10 {
		t.Fatalf("10,000 draws spread over %v only (from %v to %v)", hi-lo, lo, hi)
	}
	if got := jittered(0); got != 0 {
		t.Fatalf("jittered(0) = %v", got)
	}
}
