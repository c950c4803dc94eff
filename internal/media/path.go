package media

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Path is one datagram path to the peer: an ICE connection, a TURN relay leg. Read
// blocks until a datagram arrives and returns an error once the path is closed; Read,
// Write and Close may be called concurrently (one reader, one writer). A Session owns
// the paths added to it and closes them when Run returns.
type Path interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
	Close() error
}

// PathKind says how a path reaches the peer; it is reported, not interpreted: the rank
// passed to AddPath decides preference.
type PathKind string

// Path kinds.
const (
	KindDirect   PathKind = "direct"    // host or server-reflexive candidates, no NAT in the way
	KindPunched  PathKind = "punched"   // a hole-punched NAT binding
	KindRelayUDP PathKind = "relay-udp" // a TURN relay over UDP
	KindRelayTCP PathKind = "relay-tcp" // a TURN relay over TCP or TLS
)

// writeQueue is how many packets wait for one path's writer before new ones are
// dropped (a stuck relay leg must not stall the call). 32 packets are 640 ms of audio.
const writeQueue = 32

// pathState is the session's view of one path. Its fields are guarded by Session.mu,
// except p and out, which are set once.
type pathState struct {
	idx  int
	kind PathKind
	name string
	rank int
	p    Path
	out  chan []byte // to the path's writer; closed when the session stops

	closed     bool // Read failed or Write reported the path closed
	alive      bool // as of the last tick
	aliveSince time.Time
	lastRecv   time.Time // last authenticated packet (duplicates count)
	lastReply  time.Time // last probe-reply
	srtt       time.Duration
	haveRTT    bool

	pktsSent, pktsRecv   uint64
	bytesSent, bytesRecv uint64
}

// label names the path in logs and path changes.
func (ps *pathState) label() string {
	if ps == nil {
		return ""
	}
	return string(ps.kind) + ":" + ps.name
}

// observeRTT folds in one round-trip sample, RFC 6298 style.
func (ps *pathState) observeRTT(rtt time.Duration) {
	if !ps.haveRTT {
		ps.srtt, ps.haveRTT = rtt, true
		return
	}
	ps.srtt += (rtt - ps.srtt) / 8
}

// isClosedErr tells a write error that means the path is gone from a transient one
// (a connected UDP socket reports ICMP port-unreachable as ECONNREFUSED on the next
// write, which says nothing about the path a moment later).
func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF)
}
