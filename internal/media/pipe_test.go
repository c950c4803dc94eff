package media

import (
	"container/heap"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// linkOpts shapes one direction of a test pipe.
type linkOpts struct {
	Delay  time.Duration     // fixed one-way delay
	Jitter time.Duration     // extra random delay, 0..Jitter, which reorders packets
	Drop   func([]byte) bool // drops a datagram when it returns true (nil = none)
	Seed   uint64            // for Jitter's randomness
}

// memPath is one end of an in-memory datagram pipe. Each direction has one delivery
// goroutine, which stops when the receiving end is closed, or the sending end is
// closed and everything it sent has been delivered; datagrams are dropped when the
// receiver's queue is full, as a socket buffer would.
type memPath struct {
	in        chan []byte
	closed    chan struct{}
	closeOnce sync.Once
	peer      *memPath
	link      *memLink // this end's sending direction
}

// memLink is one direction of a pipe.
type memLink struct {
	opts      linkOpts
	blackhole *atomic.Bool // shared by both directions of the pipe
	mu        sync.Mutex   // mu protects q and rng
	q         pktHeap
	rng       *rand.Rand
	seq       int
	wake      chan struct{}
}

type pending struct {
	at  time.Time
	seq int
	b   []byte
}

type pktHeap []pending

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(pending)) }
func (h *pktHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// pipe is a pair of connected paths; Blackhole drops everything both ways.
type pipe struct {
	A, B      *memPath
	blackhole atomic.Bool
	wg        sync.WaitGroup
}

func newPipe(ab, ba linkOpts) *pipe {
	p := &pipe{}
	p.A = &memPath{in: make(chan []byte, 256), closed: make(chan struct{})}
	p.B = &memPath{in: make(chan []byte, 256), closed: make(chan struct{})}
	p.A.peer, p.B.peer = p.B, p.A
	p.A.link = &memLink{opts: ab, blackhole: &p.blackhole, rng: rand.New(rand.NewPCG(ab.Seed, 1)), wake: make(chan struct{}, 1)}
	p.B.link = &memLink{opts: ba, blackhole: &p.blackhole, rng: rand.New(rand.NewPCG(ba.Seed, 2)), wake: make(chan struct{}, 1)}
	p.wg.Add(2)
	go p.deliver(p.A)
	go p.deliver(p.B)
	return p
}

// Close closes both ends and waits for the delivery goroutines.
func (p *pipe) Close() {
	p.A.Close()
	p.B.Close()
	p.wg.Wait()
}

func (p *pipe) deliver(from *memPath) {
	defer p.wg.Done()
	l, to := from.link, from.peer
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	senderClosed := from.closed
	for {
		l.mu.Lock()
		if senderClosed == nil && l.q.Len() == 0 {
			// Like a socket: what was sent before Close still arrives.
			l.mu.Unlock()
			return
		}
		now := time.Now()
		for l.q.Len() > 0 && !l.q[0].at.After(now) {
			b := heap.Pop(&l.q).(pending).b
			select {
			case to.in <- b:
			default:
			}
		}
		wait := time.Hour
		if l.q.Len() > 0 {
			wait = l.q[0].at.Sub(now)
		}
		l.mu.Unlock()
		t.Reset(wait)
		select {
		case <-t.C:
		case <-l.wake:
		case <-senderClosed:
			senderClosed = nil
		case <-to.closed:
			return
		}
	}
}

func (m *memPath) Read(b []byte) (int, error) {
	select {
	case <-m.closed:
		return 0, net.ErrClosed
	default:
	}
	select {
	case d := <-m.in:
		return copy(b, d), nil
	case <-m.closed:
		return 0, net.ErrClosed
	}
}

func (m *memPath) Write(b []byte) (int, error) {
	select {
	case <-m.closed:
		return 0, net.ErrClosed
	default:
	}
	l := m.link
	if l.blackhole.Load() || (l.opts.Drop != nil && l.opts.Drop(b)) {
		return len(b), nil
	}
	d := append([]byte(nil), b...)
	l.mu.Lock()
	delay := l.opts.Delay
	if l.opts.Jitter > 0 {
		delay += time.Duration(l.rng.Int64N(int64(l.opts.Jitter)))
	}
	l.seq++
	heap.Push(&l.q, pending{at: time.Now().Add(delay), seq: l.seq, b: d})
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return len(b), nil
}

func (m *memPath) Close() error {
	m.closeOnce.Do(func() { close(m.closed) })
	return nil
}

var _ Path = (*memPath)(nil)
