package clocks

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestPick(t *testing.T) {
	fake := clockwork.NewFakeClockAt(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if Pick(fake, time.Now) != fake {
		t.Fatal("a Clock given is not the one picked")
	}
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := Pick(nil, func() time.Time { return at })
	if !c.Now().Equal(at) || c.Since(at) != 0 || c.Until(at.Add(time.Second)) != time.Second {
		t.Fatalf("with Now alone: Now %v, Since %v", c.Now(), c.Since(at))
	}
	if d := time.Since(Pick(nil, nil).Now()); d < 0 || d > time.Minute {
		t.Fatalf("the default clock is %v off the real one", d)
	}
}
