package natdetect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/rfc5780"
)

// connNetwork runs probes over real (or virtual) packet sockets.
type connNetwork struct {
	conn              net.PacketConn // sends Binding probes; receives every answer
	hairpin, lifetime net.PacketConn // send-only helpers; may be nil
	timeout           time.Duration
	retransmit        time.Duration
}

var _ network = (*connNetwork)(nil)

type pendingProbe struct {
	tx       [stun.TransactionIDSize]byte
	raw      []byte
	via      net.PacketConn
	dst      *net.UDPAddr
	kind     probeKind
	interval time.Duration
	next     time.Time
}

func (n *connNetwork) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *connNetwork) exchange(ctx context.Context, probes []probe) ([]reply, error) {
	replies := make([]reply, len(probes))
	pending := make([]*pendingProbe, len(probes))
	now := time.Now()
	deadline := now.Add(n.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for i, p := range probes {
		setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
		if p.change.ChangeIP || p.change.ChangePort {
			setters = append(setters, p.change)
		}
		if p.kind == probeLifetime {
			setters = append(setters, rfc5780.ResponsePort(p.responsePort))
		}
		setters = append(setters, stun.Fingerprint)
		m, err := stun.Build(setters...)
		if err != nil {
			return nil, fmt.Errorf("natdetect: build request: %w", err)
		}
		via := n.conn
		switch p.kind {
		case probeHairpin:
			via = n.hairpin
		case probeLifetime:
			via = n.lifetime
		}
		if via == nil {
			return nil, fmt.Errorf("natdetect: probe kind %d needs a second socket", p.kind)
		}
		pending[i] = &pendingProbe{tx: m.TransactionID, raw: m.Raw, via: via,
			dst: net.UDPAddrFromAddrPort(p.dst), kind: p.kind, interval: n.retransmit, next: now}
	}
	stop := context.AfterFunc(ctx, func() { n.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	defer n.conn.SetReadDeadline(time.Time{})

	buf := make([]byte, 1500)
	left := len(pending)
	for left > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		now = time.Now()
		if !now.Before(deadline) {
			break
		}
		wake := deadline
		for _, p := range pending {
			if p == nil {
				continue
			}
			if !now.Before(p.next) {
				// A failed send is like a lost packet: the retransmission or timeout
				// handles it. (Write errors such as "network unreachable" mean blocked.)
				p.via.WriteTo(p.raw, p.dst)
				p.next = now.Add(p.interval)
				p.interval *= 2
			}
			if p.next.Before(wake) {
				wake = p.next
			}
		}
		if err := n.conn.SetReadDeadline(wake); err != nil {
			return nil, fmt.Errorf("natdetect: set read deadline: %w", err)
		}
		nr, from, err := n.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("natdetect: read: %w", err)
		}
		d, err := parseDatagram(buf[:nr])
		if err != nil {
			continue
		}
		for i, p := range pending {
			if p == nil || p.tx != d.tx || d.request != (p.kind == probeHairpin) {
				continue
			}
			src, _ := addrPortOf(from)
			replies[i] = reply{ok: true, errCode: d.errCode, from: src, mapped: d.mapped, other: d.other}
			pending[i] = nil
			left--
		}
	}
	return replies, nil
}
