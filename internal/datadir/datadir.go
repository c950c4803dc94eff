// Package datadir names the files a node keeps in its data directory, in one place:
// the client role and the supernode role share a key and a control socket, and the CLI
// tells the roles apart by what a directory holds.
package datadir

const (
	// KeyFile holds the node's Ed25519 private key.
	KeyFile = "key"
	// SocketFile is the control socket (internal/ctl).
	SocketFile = "peerline.sock"

	// CredentialFile holds the user's credential from the login server.
	CredentialFile = "credential"
	// HostCacheFile holds the host cache (package hostcache).
	HostCacheFile = "hostcache.json"
	// BuddiesFile holds the last buddy list, used while the login server is unreachable.
	BuddiesFile = "buddies.json"
	// BoxKeyFile holds the X25519 key of end-to-end encrypted messages.
	BoxKeyFile = "boxkey"
	// SeqFile holds the sequence number of the last record signed, so that a client
	// that restarts signs above it: at the same instant, or on a clock that went back,
	// holders would otherwise keep its last record and refuse the new one as stale.
	SeqFile = "seq"
	// NATFile holds the RFC 3489 NAT type of the last detection. A restarted client's
	// first record carries it; detection runs again and republishes only if the type
	// changed, so that a mass restart on unchanged networks costs each client one
	// publication, not two.
	NATFile = "nat"
	// SessionsFile holds the session tickets of the last supernodes attached to and
	// the secrets they seal (mode 0600), so that a restarted client resumes its
	// session without a full handshake (internal/secure).
	SessionsFile = "sessions.json"
)
