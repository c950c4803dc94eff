package netlab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"sync"
	"time"

	nfqueue "github.com/florianl/go-nfqueue"
	"golang.org/x/sys/unix"
)

// Impairment is what a link does to every packet crossing it, in each direction.
type Impairment struct {
	// Delay is added to every packet, each way: impairing one end of a path by 50 ms adds
	// 100 ms to the round trip. 0: none.
	Delay time.Duration
	// Jitter adds a uniformly random extra 0..Jitter per packet. Packets are released in
	// arrival order (no reordering), so a packet also waits for the one before it. 0: none.
	Jitter time.Duration
	// Loss is the probability (0..1) that a packet is dropped. 0: none.
	Loss float64
	// Inbound impairs only packets arriving on the link, and before the namespace's
	// connection tracking sees them (the raw table), as if the delay were on the wire.
	// On a NAT router this is what an access link does: an outgoing packet creates its
	// mapping at once, and an incoming one meets the mappings of everything sent before
	// it arrived. (Queueing outgoing packets happens before source NAT, so a router
	// impaired both ways would hold its own new mappings back for the delay, and two
	// sites punching at each other would each meet the other's packet first.) Impair
	// every site's router Inbound by D, and every path between two sites is D one way.
	Inbound bool
}

// impairQueue is the NFQUEUE number used inside a host's namespace (queues are per
// namespace, so every host can use the same one).
const impairQueue = 7

// impairer delays and drops the packets of one namespace's NFQUEUE. It runs inside the
// test process: the netlink socket is opened in the host's namespace.
type impairer struct {
	im     Impairment
	nf     *nfqueue.Nfqueue
	nsfd   int
	cancel context.CancelFunc
	wg     sync.WaitGroup // counts the release goroutine
	queue  chan pending

	mu   sync.Mutex // guards last
	last time.Time  // release time of the previous packet
}

type pending struct {
	id uint32
	at time.Time
}

// Impair applies im to every packet entering or leaving h on its link (eth0, or wan for a
// router). It puts iptables NFQUEUE rules in h's namespace (nftables' queue statement does
// not work on this kernel, iptables' -j NFQUEUE does) and serves the queue from the test
// process. A host can be impaired once.
func (h *Host) Impair(im Impairment) error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return fmt.Errorf("netlab: impairment needs iptables with NFQUEUE: apt-get install iptables")
	}
	if im.Loss < 0 || im.Loss > 1 || im.Delay < 0 || im.Jitter < 0 {
		return fmt.Errorf("netlab: bad impairment %+v", im)
	}
	fd, err := unix.Open("/run/netns/"+h.NS(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netlab: open netns: %w", err)
	}
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      impairQueue,
		NetNS:        fd,
		MaxPacketLen: 128,
		MaxQueueLen:  4096,
		Copymode:     nfqueue.NfQnlCopyMeta,
		WriteTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("netlab: open nfqueue in %s: %w", h.NS(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	imp := &impairer{im: im, nf: nf, nsfd: fd, cancel: cancel, queue: make(chan pending, 4096)}
	imp.wg.Add(1)
	go imp.release(ctx)
	err = nf.RegisterWithErrorFunc(ctx, imp.hook, func(error) int { return 0 })
	if err != nil {
		imp.close()
		return fmt.Errorf("netlab: register nfqueue: %w", err)
	}
	h.lab.mu.Lock()
	h.lab.impairs = append(h.lab.impairs, imp)
	h.lab.mu.Unlock()
	q := fmt.Sprint(impairQueue)
	rules := [][]string{
		{"-t", "mangle", "-A", "PREROUTING", "-i", h.iface, "-j", "NFQUEUE", "--queue-num", q},
		{"-t", "mangle", "-A", "POSTROUTING", "-o", h.iface, "-j", "NFQUEUE", "--queue-num", q},
	}
	if im.Inbound {
		rules = [][]string{{"-t", "raw", "-A", "PREROUTING", "-i", h.iface, "-j", "NFQUEUE", "--queue-num", q}}
	}
	for _, rule := range rules {
		if err := h.lab.run(nil, append([]string{"ip", "netns", "exec", h.NS(), "iptables"}, rule...)...); err != nil {
			return err
		}
	}
	h.lab.logf("impaired %s (%s): %+v", h.Name, h.iface, im)
	return nil
}

// hook runs for each queued packet: drop it now, or schedule its release.
func (imp *impairer) hook(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	id := *a.PacketID
	if imp.im.Loss > 0 && rand.Float64() < imp.im.Loss {
		imp.nf.SetVerdict(id, nfqueue.NfDrop)
		return 0
	}
	d := imp.im.Delay
	if imp.im.Jitter > 0 {
		d += rand.N(imp.im.Jitter)
	}
	at := time.Now().Add(d)
	imp.mu.Lock()
	if at.Before(imp.last) {
		at = imp.last
	}
	imp.last = at
	imp.mu.Unlock()
	select {
	case imp.queue <- pending{id: id, at: at}:
	default:
		imp.nf.SetVerdict(id, nfqueue.NfDrop) // queue full: a real link would drop too
	}
	return 0
}

// release accepts queued packets when their time comes, in order.
func (imp *impairer) release(ctx context.Context) {
	defer imp.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-imp.queue:
			if d := time.Until(p.at); d > 0 {
				t.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
			imp.nf.SetVerdict(p.id, nfqueue.NfAccept)
		}
	}
}

func (imp *impairer) close() {
	imp.cancel()
	imp.wg.Wait()
	imp.nf.Close()
	unix.Close(imp.nsfd)
}
