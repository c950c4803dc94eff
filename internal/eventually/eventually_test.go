package eventually

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestAwait(t *testing.T) {
	var n atomic.Int32
	if err := Await(time.Second, "three polls", func() bool { return n.Add(1) >= 3 }); err != nil {
		t.Fatal(err)
	}
	err := Await(30*time.Millisecond, "never", func() bool { return false })
	if err == nil || !strings.Contains(err.Error(), "never") {
		t.Fatalf("Await of a condition that never holds: %v", err)
	}
}

func TestLeftover(t *testing.T) {
	started, stop := make(chan struct{}), make(chan struct{})
	go parked(started, stop)
	<-started // a goroutine not yet scheduled may show no frame of its own
	if left := Leftover(30*time.Millisecond, "github.com/peerline/peerline/internal/eventually.parked"); len(left) != 1 {
		t.Fatalf("%d goroutines left, want the parked one", len(left))
	}
	close(stop)
	if left := Leftover(time.Second, "github.com/peerline/peerline/internal/eventually.parked"); len(left) != 0 {
		t.Fatalf("still left after it ended: %v", left)
	}
}

func parked(started, stop chan struct{}) {
	close(started)
	<-stop
}
