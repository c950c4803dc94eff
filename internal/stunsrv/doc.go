// Package stunsrv is an RFC 5780 STUN server for NAT behaviour discovery.
//
// A supernode runs it so that clients can learn their NAT's mapping and filtering
// behaviour (DESIGN.md point 4). The server listens on two IP addresses times two ports:
//
//	          port P1            port P2
//	IP A1   Slot 0 (primary)   Slot 1 (alt port)
//	IP A2   Slot 2 (alt IP)    Slot 3 (alt IP and port)
//
// A Slot's bit 1 says "alternate IP" and bit 0 says "alternate port", so a CHANGE-REQUEST
// with flags (change-IP, change-port) is answered from slot ^ (changeIP<<1 | changePort),
// and OTHER-ADDRESS is always the address of slot ^ 3.
//
// Every Binding success response carries XOR-MAPPED-ADDRESS (the request's source),
// RESPONSE-ORIGIN (the address the response is sent from), OTHER-ADDRESS (when four
// sockets are configured), SOFTWARE (when configured) and FINGERPRINT. RESPONSE-PORT
// (RFC 5780 section 7.5) is honoured so a client can measure a mapping's lifetime with a
// second socket. The server holds no per-client state.
//
// With only slot 0 configured it is a plain RFC 5389 Binding server: CHANGE-REQUEST is
// then answered with 420 (Unknown Attribute), as RFC 5780 section 6.1 asks.
//
// The server is built over net.PacketConn, so it runs on real sockets, on pion's vnet or
// on any other transport; the request path (Server.Handle) does no I/O at all and is
// fuzzed (FuzzHandle).
//
// Amplification: a response is at most ~130 bytes and goes to the request's source IP
// only (RESPONSE-PORT can change the port, never the IP), so the server reflects no more
// than about 6 times a minimal 20-byte request; rate limiting belongs to the supernode.
package stunsrv
