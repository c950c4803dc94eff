// Package memnet is an in-memory network: hosts with one IP each, TCP-style stream
// connections and UDP-style datagrams, all inside one process. It lets the whole overlay
// (login server, supernodes, clients, each speaking TLS 1.3) run unchanged in a test or a
// benchmark, because a [Host] hands out ordinary [net.Listener], [net.Conn] and
// [net.PacketConn] values and its DialContext method satisfies the overlay's Dialer.
//
// # Model
//
// A [Network] holds hosts keyed by IP. Every host has its own TCP and UDP port spaces;
// port 0 means an ephemeral port from 32768–60999 (Linux's default range), unique on the
// host among ports in use. A host can be killed like a crashed machine and revived.
//
// Stream connections are full duplex and buffered: a Write returns once its bytes are
// queued, until 256 KiB are unread in that direction; then it blocks (backpressure), so
// memory stays bounded. An idle connection holds no buffer and no goroutine: readers and
// writers wake each other through channels that exist only while someone waits, and
// deadline timers exist only while a deadline is set. Options.Latency delays each chunk,
// each FIN and each datagram by timestamping it, never by a goroutine per write.
//
// # NATs
//
// Network.NAT puts a [NAT] on the internet; NAT.Host creates hosts in the private realm
// behind it, and NAT.NAT a NAT inside it (a double NAT). Hosts of one realm reach each
// other directly; everything else goes out through the realm's NAT, which maps and
// filters UDP as RFC 4787 describes (endpoint-independent, address-dependent or
// address-and-port-dependent, each for mapping and filtering), hairpins if told to,
// drops UDP altogether for a UDP-blocking firewall, and expires idle mappings. An
// endpoint-independent NAT keeps the internal port when it is free, as Linux does; a
// dependent one picks each mapping's port at random, as Linux with --random-fully.
// TCP dials from inside get a public port each for as long as they are open; nothing
// dials in (no port forwarding, no TCP simultaneous open), so a dial to a NAT's public
// address is refused.
//
// # Semantics chosen where real networks vary
//
//   - Dial to an IP with no host, or to a killed host, fails with an error wrapping
//     syscall.EHOSTUNREACH after one round trip (2×Latency), instead of waiting for a
//     SYN timeout; to a live host with no listener on the port, with syscall.ECONNREFUSED.
//     Every dial that reaches the network costs one round trip, refused or not; the
//     context bounds the whole dial, including a wait for backlog room.
//   - A dial whose listener backlog (4096 pending connections) is full waits, as SYN
//     retransmits would, until Accept makes room or the context ends.
//   - Close sends a FIN: the peer reads what was queued, then io.EOF. The peer's later
//     Writes fail at once with an error wrapping syscall.EPIPE (no first-write-succeeds
//     window as in TCP), and data the closer had not read is dropped.
//   - Kill resets every connection of the host: peers read what was already queued, then
//     an error wrapping syscall.ECONNRESET; their Writes fail with ECONNRESET. The reset
//     is seen at once, not after Latency. The killed host's own connections, listeners
//     and packet conns fail with net.ErrClosed; its Listen, ListenPacket and DialContext
//     fail with ErrHostDown until Revive.
//   - A listener bound to ":port" or "0.0.0.0:port" reports the host's IP in Addr, so
//     ln.Addr().String() can be dialled; a host has exactly one IP.
//   - Dialling the unspecified address ("0.0.0.0:port", "[::]:port") reaches the dialling
//     host itself. Names are not resolved: addresses are IP literals.
//   - A UDP datagram to a port nobody listens on, to a dead or unknown host, or to a full
//     receive queue (256 datagrams) is dropped silently; WriteTo still succeeds.
//   - Errors have the shape the net package gives: *net.OpError around the cause, so
//     errors.Is works with net.ErrClosed, os.ErrDeadlineExceeded and syscall errnos, and
//     deadline errors report Timeout() == true.
package memnet
