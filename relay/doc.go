// Package relay is Peerline's TURN server (RFC 5766, RFC 8656): the last resort of two
// clients whose NATs defeat hole punching. Supernodes embed it (New, Run) and
// 'peerline relay' runs it alone.
//
// It is built on github.com/pion/turn/v4, which does the protocol: authentication,
// allocations, permissions, channels, refreshes and Data indications. This package adds
// what a public relay needs around it:
//
//   - Short-lived credentials in the TURN REST API style (draft-uberti-behave-turn-rest),
//     the same scheme as coturn's --use-auth-secret: the login server and the relays share
//     a secret, a username is "<unix expiry>:<user>" and its password is
//     base64(HMAC-SHA1(secret, username)); see Credentials. Relays keep no user database.
//   - Per-user quotas: allocations at once (486 Allocation Quota Reached beyond it) and
//     bytes per second, both directions together, in a token bucket whose excess is
//     dropped. Pion tells the relay address generator nothing about the user, so the
//     server learns "client 5-tuple -> user" and "relayed port -> user" from pion's
//     allocation events and polices on its own wrappers of the sockets: the listening
//     sockets for client -> peer traffic and the relayed sockets for peer -> client.
//   - A peer filter: by default clients may relay only to public unicast addresses, never
//     to loopback, RFC 1918, CGNAT, ULA, link-local, unspecified, multicast or broadcast
//     ones, so that a relay cannot be used to reach its own host or network.
//   - Throughput: N UDP sockets share the listening port through SO_REUSEPORT (the kernel
//     spreads clients over them by 4-tuple hash), each read by one goroutine; every socket
//     gets 4 MiB kernel buffers (pion leaves the ~208 KiB default, which overflows under
//     bursts); and channel data, the bulk of a call's traffic, takes a fast path.
//
// # Fast path
//
// Pion handles every datagram through a general request path that allocates and formats
// debug strings per packet. The server mirrors pion's channel bindings (from its
// OnChannelCreated and OnChannelDeleted events) into two tables:
//
//	listener:    (client addr, channel number) -> relayed socket, peer addr
//	relayed:     peer addr                     -> channel number, listener, client addr
//
// and forwards ChannelData between them inside its socket wrappers, without allocating,
// before pion sees the datagram. Everything else (STUN requests, Send and Data
// indications, unknown channels, TURN over TCP) goes to pion unchanged. A binding leaves
// the tables when pion deletes it (expiry, allocation deleted), so the fast path never
// forwards what pion would refuse.
//
// The fast path reads its sockets in batches (batchReader: recvmmsg on Linux, into slots
// allocated once per socket) and forwards inside the runtime's read callback, so that a
// burst costs one read and no read that only says EAGAIN; a socket that is not a
// *net.UDPConn is read one datagram at a time. Its sends are batched too (batchWriter, one
// per read loop): the datagrams a batch forwards are queued, pointing into the read slots,
// and sent at the end of the batch, and before the reader hands a datagram to pion or
// waits again, with one sendmmsg per outgoing socket. A relayed socket's batch goes to its
// client through the listener's socket in one call; a listener's batch goes to peers in
// one call per allocation it forwards to. A datagram the kernel refuses is dropped and
// counted (write_errors) and the rest of the batch still goes; a full send buffer is
// waited out through the runtime's poller (write_waits). A socket that is not a
// *net.UDPConn, or a system other than Linux, sends one datagram per call. Pion's own
// sends (responses, Data indications, what the fast path leaves to it) are not batched.
//
// # Hostile traffic
//
// A public relay meets scanners and floods; what the server does about them (each
// counted in the metrics set under the Metric* names):
//
//   - TURN over TCP survives descriptor exhaustion: pion's accept loop ends on the first
//     error Accept returns, so the server's Accept waits out EMFILE, ENFILE, ECONNABORTED
//     and any other error with a back-off of 5 ms doubling to 1 s, and returns only once
//     the listener is closed (tcp_accept_errors). Transient read errors on UDP sockets are
//     waited out the same way (turn_read_errors): they would end pion's read loop.
//   - TCP connections are admitted through internal/serve's Gate: at most TCPConnsPerAddr
//     from one address and TCPConnsPerPrefix from one /24 or /64, and the last tenth of
//     TCPMaxConns is kept for sources that made an allocation (tcp_conns_shed_*). A TCP
//     connection without an allocation is closed TCPIdleTimeout (10 s) after it was
//     accepted or its allocation ended (tcp_idle_closed).
//   - The server frames TURN over TCP itself, as pion does, and hands pion one frame at a
//     time: a stream that is not TURN framing is closed (tcp_bad_frames). Datagrams that
//     are not TURN are dropped before pion (turn_bad_packets).
//   - A request with a wrong password, or an expired or malformed username, is answered
//     401 Unauthorized with REALM and NONCE (RFC 8489 section 9.2.4) by the server itself,
//     where pion answers 400 (auth_unauthorized and auth_fail_*).
//   - Logs are rate limited by internal/ratelog: a line per message and per source per
//     interval, the rest counted (log_suppressed).
//
// # Lifecycle
//
// New checks a Config and opens the sockets, so that a port in use is its error and the
// addresses are known at once; Run serves on them until its context ends, then stops
// every goroutine the server and pion started and closes every socket, TCP connections
// included. It returns once every read loop has ended, which it counts itself: pion ends
// its loop on a TCP connection that sends garbage without a read error, and calls Close,
// so a connection's loop counts as ended at a read error or at a Close with no read under
// way.
package relay
