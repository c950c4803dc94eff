// Package portmap asks the home router in front of this host to forward a UDP port, so
// that peers can reach a client directly even behind a NAT that filters what it has not
// seen go out. It speaks the three protocols that home routers answer:
//
//   - PCP, the Port Control Protocol (RFC 6887), preferred: it names the mapping with a
//     nonce, so that only its owner can renew or delete it;
//   - NAT-PMP (RFC 6886), PCP's predecessor, which many routers still speak alone;
//   - UPnP IGD: the WANIPConnection (versions 1 and 2) and WANPPPConnection services,
//     found by an SSDP search and driven over SOAP with github.com/huin/goupnp.
//
// A Client first probes the router with every protocol at once (a PCP ANNOUNCE, a NAT-PMP
// external address request and an SSDP search), then maps with the most preferred one
// that answered. Run keeps the mapping: it renews it at half its lifetime, asks the
// router now and then whether it restarted (the epoch of RFC 6886 §3.6 and RFC 6887
// §8.5) or changed its external address, and deletes the mapping when its context ends.
//
// NAT-PMP and PCP requests go to UDP port 5351 of the gateway and are sent again after
// 250 ms, 500 ms, 1 s... as RFC 6886 §3.1 says, but only Config.Sends times and within
// Config.Timeout: a router that does not answer in two seconds will not answer.
//
// # NAT-PMP
//
// All integers are big endian. Requests (client to router):
//
//	external address request (opcode 0), 2 bytes:
//	 0       1
//	+-------+-------+
//	| vers 0| op 0  |
//	+-------+-------+
//
//	UDP mapping request (opcode 1), 12 bytes:
//	 0       1       2       3       4       5       6       7       8 ... 11
//	+-------+-------+-------+-------+-------+-------+-------+-------+----------+
//	| vers 0| op 1  |   reserved 0  | internal port | suggested ext | lifetime |
//	+-------+-------+-------+-------+-------+-------+-------+-------+----------+
//
// A lifetime of 0 deletes the mapping; the suggested external port is then 0 too.
// Responses (router to client) set bit 7 of the opcode and carry a result code and the
// router's epoch, the seconds since it started or lost its mappings:
//
//	 0       1       2       3       4 ... 7   8 ... 11        12 ... 15
//	+-------+-------+-------+-------+---------+---------------+----------+
//	| vers 0|op 128 |  result code  |  epoch  | external IPv4 |           opcode 0
//	+-------+-------+-------+-------+---------+-------+-------+----------+
//	| vers 0|op 129 |  result code  |  epoch  | int.  | ext.  | lifetime |  opcode 1
//	+-------+-------+-------+-------+---------+-------+-------+----------+
//
// A response with a non-zero result code need carry only its first 8 bytes.
//
// # PCP
//
// All integers are big endian; addresses are 16 bytes, an IPv4 address in its IPv4-mapped
// form (::ffff:a.b.c.d). A request is a 24-byte header, the opcode's data, then options:
//
//	 0       1       2       3
//	+-------+-+-----+-------+-------+
//	| vers 2|0| op  |  reserved 0   |
//	+-------+-+-----+-------+-------+
//	|   requested lifetime (s)      |  4
//	+-------------------------------+
//	|   client IP address (16)      |  8 ... 23
//	+-------------------------------+
//
// A response has the R bit set and, where the request had the client's address, a result
// code, the lifetime granted, the epoch and 12 reserved bytes:
//
//	 0       1       2       3
//	+-------+-+-----+-------+-------+
//	| vers 2|1| op  | rsvd  | result|
//	+-------+-+-----+-------+-------+
//	|   granted lifetime (s)        |  4
//	+-------------------------------+
//	|   epoch (s)                   |  8
//	+-------------------------------+
//	|   reserved (12)               |  12 ... 23
//	+-------------------------------+
//
// ANNOUNCE (opcode 0) has no data: a client sends it with lifetime 0 to learn whether the
// router speaks PCP and what its epoch is. MAP (opcode 1) has 36 bytes of data, the same
// in the request and the response:
//
//	+-------------------------------+
//	|   mapping nonce (12)          |  24 ... 35
//	+-------+-------+-------+-------+
//	| proto |     reserved 0        |  36   (proto 17 = UDP)
//	+-------+-------+-------+-------+
//	| internal port | external port |  40   (suggested, or assigned)
//	+-------+-------+-------+-------+
//	|   external IP address (16)    |  44 ... 59 (suggested, or assigned)
//	+-------------------------------+
//
// The router answers a MAP with the request's nonce; an answer with another nonce is not
// ours and is ignored. A MAP with lifetime 0 deletes the mapping. Options (a code byte, a
// reserved byte, a 2-byte length, then the data padded to 4 bytes) may follow; none is
// sent and those received are skipped. A PCP message is a multiple of 4 bytes and at
// most 1100.
//
// A router that speaks only NAT-PMP answers a PCP request with NAT-PMP's "unsupported
// version" (version 0, result 1), and one that speaks only PCP answers NAT-PMP with PCP's
// UNSUPP_VERSION (RFC 6887 §9): either tells the probe at once that the protocol is out.
//
// The codecs (natpmp.go, pcp.go, and the SSDP answer's parser in ssdp.go) do no I/O and
// are fuzzed; the Client (client.go) and its request loop (exchange.go) take the
// network, the HTTP client and the clock from its Config, so tests run routers on
// loopback and drive time by hand.
package portmap
