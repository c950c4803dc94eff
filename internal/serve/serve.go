// Package serve runs the accept loop that every Peerline server shares: bounded
// concurrency with load shedding, back-off on transient accept errors, and an orderly stop.
package serve

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/peerline/peerline/internal/metrics"
)

// Accept calls handle in a new goroutine for each connection accepted on ln until ctx ends;
// then it closes ln and waits for every handler to return. Beyond maxConns connections at
// once, new ones are closed at once and counted as conns_shed: a server under a boot storm
// sheds load instead of falling over.
func Accept(ctx context.Context, ln net.Listener, maxConns int, m metrics.Counter, handle func(context.Context, net.Conn)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var active atomic.Int64
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a passing fault: pause rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
				continue
			}
			return err
		}
		delay = 0
		if active.Add(1) > int64(maxConns) {
			active.Add(-1)
			m.Inc("conns_shed")
			nc.Close()
			continue
		}
		m.Inc("conns")
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			defer nc.Close()
			handle(ctx, nc)
		}()
	}
}
