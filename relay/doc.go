// Package relay is Peerline's TURN server (RFC 5766, RFC 8656): the last resort of two
// clients whose NATs defeat hole punching. Supernodes embed it (New, Start) and
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
// # Lifecycle
//
// New checks a Config; Start opens the sockets and serves; Close stops every goroutine
// the server and pion started and closes every socket, TCP connections included.
package relay
