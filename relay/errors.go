package relay

import "errors"

var (
	// ErrNoSecret means Config.Secret is empty: the relay cannot check credentials without
	// the secret it shares with the login server.
	ErrNoSecret = errors.New("relay: no shared secret: set Config.Secret (peerline relay: --secret-file or PEERLINE_TURN_SECRET)")
	// ErrBadListen means Config.Listen is not host:port.
	ErrBadListen = errors.New("relay: listen address must be host:port, e.g. :3478 or 203.0.113.10:3478")
	// ErrNoPublicIP means the relay listens on a wildcard address and Config.PublicIP is
	// not set, so it cannot tell clients where their relayed address is.
	ErrNoPublicIP = errors.New("relay: listening on a wildcard address: set the public IPv4 address (Config.PublicIP, --public-ip)")
	// ErrPublicIPNotV4 means Config.PublicIP is not IPv4; relayed addresses are IPv4 only.
	ErrPublicIPNotV4 = errors.New("relay: the public IP must be an IPv4 address")
	// ErrBadPortRange means MinPort > MaxPort.
	ErrBadPortRange = errors.New("relay: relay port range is empty: MinPort must not exceed MaxPort")
	// ErrNegative means a count, size or rate in Config is negative.
	ErrNegative = errors.New("relay: Listeners, MaxAllocsPerUser, UserBandwidth, UserBurst and the TCP connection limits must not be negative")
	// ErrStarted is returned by Run while another Run serves.
	ErrStarted = errors.New("relay: server already running")
	// ErrClosed is returned by Run after a Run returned: a server runs once.
	ErrClosed = errors.New("relay: server closed")
)
