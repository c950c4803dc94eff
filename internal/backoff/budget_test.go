package backoff

import (
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestBudgetSpendsAndRefills: the burst is spent one retry at a time, then retries are
// refused until time or successes give tokens back, never beyond the burst.
func TestBudgetSpendsAndRefills(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := Budget{Burst: 3, PerSecond: 0.5, Now: clk.Now}
	for i := range 3 {
		if !b.Retry() {
			t.Fatalf("retry %d refused within the burst", i)
		}
	}
	if b.Retry() {
		t.Fatal("retry allowed with the budget spent")
	}
	clk.Add(time.Second) // half a token
	if b.Retry() {
		t.Fatal("half a token allowed a retry")
	}
	clk.Add(time.Second)
	if !b.Retry() {
		t.Fatal("two seconds at 0.5/s gave no token back")
	}
	b.Success()
	if !b.Retry() {
		t.Fatal("a success gave no token back")
	}
	clk.Add(time.Hour)
	if got := b.Tokens(); got != 3 {
		t.Fatalf("tokens after an hour = %v, want the burst 3", got)
	}
}

// TestBudgetDelay: within the budget the delay is the back-off's (or the server's
// retry-after when longer); with the budget spent it is the back-off's cap.
func TestBudgetDelay(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := Budget{Burst: 1, PerSecond: 0.001, Now: clk.Now}
	bo := Backoff{Base: 10 * time.Millisecond, Max: 5 * time.Second}
	d, spent := b.Delay(&bo, 0)
	if spent || d > 10*time.Millisecond {
		t.Fatalf("first delay %v spent=%v", d, spent)
	}
	d, spent = b.Delay(&bo, 0)
	if !spent || d != 5*time.Second {
		t.Fatalf("delay with the budget spent %v spent=%v, want the cap 5s", d, spent)
	}
	b.Success()
	d, _ = b.Delay(&bo, 2*time.Second)
	if d < 2*time.Second {
		t.Fatalf("delay %v shorter than the retry-after asked", d)
	}
}
