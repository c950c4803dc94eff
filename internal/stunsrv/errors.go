package stunsrv

import "errors"

var (
	// ErrNoPrimary means Config.Conns[0] is nil: the server needs at least its primary socket.
	ErrNoPrimary = errors.New("stunsrv: no primary socket: set Config.Conns[0]")
	// ErrPartialAlternate means some but not all of Config.Conns[1..3] are set; RFC 5780
	// needs all four (two IPs times two ports) or none.
	ErrPartialAlternate = errors.New("stunsrv: set all four sockets (2 IPs x 2 ports) or only the primary one")
	// ErrBadLayout means the four sockets are not two IPs times two ports.
	ErrBadLayout = errors.New("stunsrv: sockets must be A1:P1, A1:P2, A2:P1, A2:P2 with A1 != A2 and P1 != P2")
	// ErrUnspecifiedAddr means a socket is bound to 0.0.0.0 or ::; the server must know the
	// exact address it answers from to fill RESPONSE-ORIGIN and OTHER-ADDRESS.
	ErrUnspecifiedAddr = errors.New("stunsrv: socket bound to an unspecified address: bind to a concrete IP")
	// ErrClosed is returned by Serve after Close.
	ErrClosed = errors.New("stunsrv: server closed")
)
