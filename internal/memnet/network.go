package memnet

import (
	"context"
	"time"
)

// Options configures a Network. The zero value is a network with no added delay.
type Options struct {
	// Latency is the one-way delay added to every delivery: stream data, FIN, datagrams,
	// and each leg of a dial's handshake (so a dial costs 2×Latency). 0 = none; negative
	// values count as 0.
	Latency time.Duration
}

// Network is a set of hosts that can reach each other: the internet, and the realms
// behind its NATs. Create one with New; all its methods are safe for concurrent use.
type Network struct {
	latency time.Duration
	start   time.Time // origin of the monotonic timestamps on queued data
	root    *realm    // the internet
}

// New returns an empty network.
func New(opts Options) *Network {
	n := &Network{
		latency: max(opts.Latency, 0),
		start:   time.Now(),
	}
	n.root = newRealm(n, nil)
	return n
}

// Host returns the host with the given IP (for example "198.51.100.7" or "2001:db8::7")
// on the internet, creating it, up, if it does not exist. IPv4-mapped IPv6 addresses
// name the IPv4 host. It panics if ip is not a valid, specified IP address without a
// zone: that is a bug in the test that builds the topology. Hosts behind a NAT come
// from NAT.Host.
func (n *Network) Host(ip string) *Host { return n.root.host(ip) }

// Hosts returns how many hosts the internet has, dead or alive (NATs' public sides
// included, hosts behind them not).
func (n *Network) Hosts() int {
	n.root.mu.RLock()
	defer n.root.mu.RUnlock()
	return len(n.root.hosts)
}

// now is the current time in nanoseconds since the network started, or 0 when there is
// no latency: then every timestamp is 0 and everything queued is due at once, without
// reading the clock on the hot path.
func (n *Network) now() int64 {
	if n.latency == 0 {
		return 0
	}
	return int64(time.Since(n.start))
}

// arrival is the timestamp at which something sent now becomes visible to its receiver.
// It is 0 without latency and positive with it, so 0 can mean "no timer needed".
func (n *Network) arrival() int64 {
	if n.latency == 0 {
		return 0
	}
	return int64(time.Since(n.start) + n.latency)
}

// wait blocks until ch is closed or, if until is not 0, the timestamp until is reached.
func (n *Network) wait(ch <-chan struct{}, until int64) {
	if until == 0 {
		<-ch
		return
	}
	d := time.Duration(until - n.now())
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// delay waits one latency, or until ctx ends.
func (n *Network) delay(ctx context.Context) error {
	if n.latency == 0 {
		return ctx.Err()
	}
	t := time.NewTimer(n.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitChLocked returns the channel that the next wakeLocked on *ch closes, making it if
// needed. Channels exist only while someone waits, so idle conns hold none.
func waitChLocked(ch *chan struct{}) chan struct{} {
	if *ch == nil {
		*ch = make(chan struct{})
	}
	return *ch
}

// wakeLocked wakes everyone waiting on *ch.
func wakeLocked(ch *chan struct{}) {
	if *ch != nil {
		close(*ch)
		*ch = nil
	}
}

// queue is a FIFO that reuses its backing array and compacts instead of growing without
// bound when it never drains completely.
type queue[T any] struct {
	items []T
	head  int
}

func (q *queue[T]) len() int { return len(q.items) - q.head }

func (q *queue[T]) push(v T) {
	if q.head > 0 && len(q.items) == cap(q.items) && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, v)
}

// front and back return pointers into the queue; they are valid until the next push or pop.
func (q *queue[T]) front() *T { return &q.items[q.head] }
func (q *queue[T]) back() *T  { return &q.items[len(q.items)-1] }

func (q *queue[T]) pop() T {
	var zero T
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.head = 0
		if cap(q.items) > 64 {
			q.items = nil // a burst is over: give the memory back
		} else {
			q.items = q.items[:0]
		}
	}
	return v
}
