package natdetect

import "errors"

var (
	// ErrNoServers means Options.Servers is empty: pass at least one STUN server HOST:PORT.
	ErrNoServers = errors.New("natdetect: no STUN server given")
	// ErrNoRFC5780 means no server answered with OTHER-ADDRESS, so mapping and filtering
	// behaviour cannot be told; use a server with two IPs and two ports (peerline stun --alt).
	ErrNoRFC5780 = errors.New("natdetect: the STUN server does not support RFC 5780 (no OTHER-ADDRESS): run it with an alternate IP and port")
	// ErrBadServer means a server answered a CHANGE-REQUEST from the wrong address, so its
	// answers cannot be trusted for filtering tests.
	ErrBadServer = errors.New("natdetect: STUN server ignored CHANGE-REQUEST (answered from the wrong address)")
	// errNotResponse means a datagram is not a STUN Binding success response.
	errNotResponse = errors.New("natdetect: not a STUN Binding success response")
)

// ErrLost means a test that must be answered (the server answered before) was not.
var ErrLost = errors.New("natdetect: answer lost; the path is too lossy or the server went away, try again with a longer --timeout")
