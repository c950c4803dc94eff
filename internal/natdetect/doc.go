// Package natdetect finds out how the NAT (or firewall) in front of a socket behaves, the
// RFC 4787 way, by talking to an RFC 5780 STUN server such as internal/stunsrv running on a
// supernode (DESIGN.md point 4).
//
// The server has two IPs (A1, A2) and two ports (P1, P2). Detect runs these tests over one
// net.PacketConn, so it works on any transport:
//
//	phase 1  T1: Binding to A1:P1                    -> mapped M1, OTHER-ADDRESS A2:P2
//	         no answer at all                        -> "udp-blocked"
//	         M1 is the socket's own address          -> public (no NAT)
//	phase 2  (sent together, one timeout for all)
//	         F2: to A1:P1, change IP and port        -> answer from A2:P2 passes the NAT:
//	                                                    endpoint-independent filtering
//	         F3: to A1:P1, change port               -> answer from A1:P2 passes the NAT:
//	                                                    address-dependent filtering
//	         H:  from Options.HairpinConn to M1      -> arrives on conn: NAT hairpins
//	phase 3  T2: Binding to A2:P1  -> M2; M2 == M1   -> endpoint-independent mapping
//	         T3: Binding to A2:P2  -> M3; M3 == M2   -> address-dependent mapping,
//	                                  else              address-and-port-dependent mapping
//
// The filtering tests run before the mapping tests on purpose: T2 and T3 send to A2, and
// an address-dependent NAT would then let F2's answer in and look like a full cone.
// Because the positive answers come back at once and the negative ones share a single
// timeout, a detection costs about one Options.Timeout whatever the NAT.
//
// Classic (RFC 3489) names follow from the two behaviours: endpoint-independent mapping
// with endpoint-independent, address-dependent or address-and-port-dependent filtering is
// "full cone", "restricted cone" or "port-restricted cone"; any other mapping is
// "symmetric"; a public address with endpoint-independent filtering is "open" (a public
// address behind a stricter firewall takes the cone name of its filtering). Behind two
// NATs the tests see the combined, outermost effective behaviour, which is what matters
// for choosing a call path.
//
// The decision logic (run) talks to a small network interface and is tested without
// sockets; connNetwork puts it on a net.PacketConn. Response parsing is fuzzed.
package natdetect
