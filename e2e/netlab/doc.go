// Package netlab builds small internets out of Linux network namespaces for end-to-end
// tests: a simulated internet, NAT routers of every RFC 4787 kind built with nftables on
// the kernel's own connection tracking, hosts behind them, and optional delay, jitter and
// loss on any link. Tests run the real peerline binary inside the hosts.
//
// Topology and addresses:
//
//	public host ----+                    (203.0.113.10, .11, ... on eth0)
//	public host ----+--- br0 in "inet" namespace (the internet, 203.0.113.0/24)
//	                |
//	      wan 203.0.113.100+k
//	   site router (NAT kind)  lan bridge 10.S.0.1/24
//	       |               \
//	host 10.S.0.10     child router (double NAT: its wan is 10.S.0.1x)
//	                          lan 10.T.0.1/24 --- host 10.T.0.10
//
// Only documentation ranges (203.0.113.0/24) are used for the simulated internet; private
// 10.x ranges exist only inside lab namespaces. Nothing links a lab to the root namespace:
// veth pairs are created inside lab namespaces with their peer placed directly in another
// lab namespace, and no route, nft table or interface of the root namespace is touched.
//
// Every namespace is named "pl-<id>-<node>" with a random per-lab id; Close (registered
// with t.Cleanup) stops every process the lab started by PID, kills any other process left
// inside its namespaces, and deletes exactly its namespaces, which takes their interfaces,
// nft tables and conntrack state with them. Leftovers reports anything that survived.
//
// Interruptions: a test process that gets SIGINT, SIGTERM or SIGHUP tears down its open
// labs and then dies of the signal. Processes a lab starts get SIGKILL when the test
// process dies (Pdeathsig). Every lab writes a state file (/run/peerline-lab/<id>.lab:
// the test process's PID and start time, then each namespace before it is created), and
// every New first reaps the labs whose test process is gone (killed, or timed out): it
// kills what still runs in their namespaces and deletes them. It never touches a
// namespace that no state file of a dead test process names. See state.go.
//
// Logs: each lab has a directory (under $PEERLINE_LAB_LOGS, else the system temp dir) with
// lab.log (every command the lab ran, with output) and one file per process. It is removed
// when the test passes and kept, with its path and the tail of every log printed, when the
// test fails. PEERLINE_LAB_KEEP=1 keeps it always.
//
// NAT kinds (see nat.go for the rules):
//
//	port-restricted-cone  plain Linux SNAT: port kept, endpoint-independent mapping,
//	                      address-and-port-dependent filtering by conntrack
//	full-cone             + a dynamic map "mapped port -> host" and a DNAT rule letting any
//	                      inbound UDP to a mapped port through
//	restricted-cone       + a dynamic set "mapped port . remote IP": only remotes the host
//	                      has sent to (any port) get through
//	symmetric             SNAT with "random": a new port per remote IP:port
//	udp-blocked           a firewall that forwards only TCP outbound (and its replies)
//
// Hairpinning (SiteConfig.Hairpin) DNATs packets from the LAN to the router's public address
// on a mapped port back into the LAN, with the public address as source, as RFC 4787
// REQ-9 asks.
//
// The tests need root, ip (iproute2), nft (nftables), and for impairment iptables with
// the NFQUEUE target; New skips the test with a clear message when any is missing.
package netlab
