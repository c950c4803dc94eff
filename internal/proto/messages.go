package proto

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// OK is an empty success answer.
type OK struct{}

// Ping asks the peer to answer with Pong; it keeps idle connections (and the NAT and
// firewall state under them) alive and proves the peer still answers.
type Ping struct {
	Seq uint64 `json:"seq"`
}

// Pong answers Ping.
type Pong struct {
	Seq uint64 `json:"seq"`
}

// Register creates an account. The password travels only inside TLS to the pinned login
// server, which stores an argon2id hash of it.
type Register struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// Login exchanges a password for a credential bound to the TLS client key of this
// connection.
type Login struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// Resume authenticates this connection with an unexpired credential instead of a password:
// no password hashing happens (a boot storm of restarting clients costs the login server
// only signature checks). The answer may carry a renewed credential.
type Resume struct {
	Credential []byte `json:"credential"`
}

// SupernodeInfo describes one supernode, as host caches store it.
type SupernodeInfo struct {
	ID    string    `json:"id"`    // the supernode's public key, unpadded base64url
	Addr  string    `json:"addr"`  // host:port of its control listener
	Since time.Time `json:"since"` // when it came up: long-lived supernodes rank first
	// Clients and MaxClients are the supernode's load as it last reported it (0 = not
	// said): only in heartbeat answers and busy answers, never in the member list.
	Clients    int `json:"clients,omitempty"`
	MaxClients int `json:"max_clients,omitempty"`
}

// LoginOK answers Login and Resume.
type LoginOK struct {
	Name       string          `json:"name"`
	Credential []byte          `json:"credential"`
	Expires    time.Time       `json:"expires"`
	ServerTime time.Time       `json:"server_time"`
	Seed       []SupernodeInfo `json:"seed"` // host-cache seed, longest-lived first
}

// Seed asks for the host-cache seed.
type Seed struct{}

// SeedOK answers Seed.
type SeedOK struct {
	Supernodes []SupernodeInfo `json:"supernodes"`
}

// BuddyAdd adds Name to the caller's buddy list.
type BuddyAdd struct {
	Name string `json:"name"`
}

// BuddyRemove removes Name from the caller's buddy list.
type BuddyRemove struct {
	Name string `json:"name"`
}

// BuddyBlock blocks (or unblocks) Name: a blocked user cannot see the caller's presence
// or reach the caller.
type BuddyBlock struct {
	Name    string `json:"name"`
	Blocked bool   `json:"blocked"`
}

// BuddyList asks for the caller's buddy list.
type BuddyList struct{}

// Buddy is one entry of a buddy list.
type Buddy struct {
	Name     string    `json:"name"`
	Blocked  bool      `json:"blocked"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// BuddyListOK answers BuddyList.
type BuddyListOK struct {
	Buddies []Buddy `json:"buddies"`
}

// Directory looks a user up in the login server's directory: an exact name, or a prefix
// ending in '*' ("al*").
type Directory struct {
	Query string `json:"query"`
}

// DirEntry is one directory hit.
type DirEntry struct {
	Name     string    `json:"name"`
	LastSeen time.Time `json:"last_seen,omitzero"` // zero: never logged in
}

// DirectoryOK answers Directory; no results means "no such user".
type DirectoryOK struct {
	Results []DirEntry `json:"results"`
}

// SNRegister admits a supernode. The connection's TLS client key becomes the key in the
// supernode credential the answer carries.
type SNRegister struct {
	Name        string    `json:"name"`
	Addr        string    `json:"addr"`
	Since       time.Time `json:"since"`
	AdmitSecret string    `json:"admit_secret"`
	// UserCredential, instead of AdmitSecret, asks to promote the logged-in user's node:
	// the login server dials Addr back before it admits.
	UserCredential []byte `json:"user_credential,omitempty"`
}

// SNRegisterOK answers SNRegister.
type SNRegisterOK struct {
	Credential        []byte `json:"credential"`
	HeartbeatInterval int64  `json:"heartbeat_ms"`
	// RelaySecret is this supernode's own TURN secret, derived by the login server from
	// its relay secret and the supernode's id: the login server issues TURN credentials
	// for this relay with it, and no other relay accepts them. Empty = no TURN service.
	RelaySecret []byte `json:"relay_secret,omitempty"`
}

// SNHeartbeat keeps a registered supernode listed in host-cache seeds.
type SNHeartbeat struct {
	Addr    string    `json:"addr"`
	Since   time.Time `json:"since"`
	Clients int       `json:"clients"`
	// MaxClients is how many clients the supernode admits at most (0 = not said): with
	// Clients, what tells the others how much headroom it has.
	MaxClients int `json:"max_clients,omitempty"`
}

// SNPeers answers SNHeartbeat with the least loaded live supernodes (at most MaxList,
// with their load), where a busy supernode points the clients it sheds, and the version
// of the full member list, which a supernode fetches page by page with Members whenever
// the version changes.
type SNPeers struct {
	Supernodes []SupernodeInfo `json:"supernodes"`
	Version    uint64          `json:"version"`
	Layer
}

// Layer is the size of the supernode layer against the size the login server wants for
// its population (0 = no target): eligible clients promote themselves when it is short.
type Layer struct {
	LayerSize   int `json:"layer_size,omitempty"`
	LayerWanted int `json:"layer_wanted,omitempty"`
}

// Short reports whether the layer has fewer supernodes than wanted.
func (l Layer) Short() bool { return l.LayerWanted > 0 && l.LayerSize < l.LayerWanted }

func (l Layer) validate() error {
	if l.LayerSize < 0 || l.LayerWanted < 0 {
		return fmt.Errorf("layer %d of %d", l.LayerSize, l.LayerWanted)
	}
	return nil
}

// Attach is a client's first message to a supernode.
type Attach struct {
	Credential []byte `json:"credential"`
	// Binary says the client reads binary bodies (binary.go); older clients leave it
	// out, and are sent JSON only.
	Binary bool `json:"binary,omitempty"`
}

// AttachOK answers Attach.
type AttachOK struct {
	Credential  []byte    `json:"credential"` // the supernode's own credential
	Since       time.Time `json:"since"`
	KeepAliveMs int64     `json:"keepalive_ms"`   // how often the client should Ping
	STUN        string    `json:"stun,omitempty"` // the supernode's RFC 5780 STUN service
	TURN        string    `json:"turn,omitempty"` // the supernode's TURN relay, UDP and TCP on this host:port
	Layer                 // as the supernode last heard it from the login server
	// Ticket resumes this session on the client's next connection to this supernode
	// (secure.ResumeOverlay); none from a supernode that does not resume sessions.
	Ticket []byte `json:"ticket,omitempty"`
}

// TurnCreds asks the login server for short-lived credentials for a relay: a
// supernode's (Relay = its id) or, with Relay empty, the standalone relays it knows.
type TurnCreds struct {
	Relay string `json:"relay,omitempty"`
}

// TurnCred is one relay's credential, in the TURN REST API form: Username is
// "<unix expiry>:<user>", Password the base64 HMAC-SHA1 of Username under the relay's
// secret.
type TurnCred struct {
	Relay    string    `json:"relay,omitempty"` // supernode id, or "" for a standalone relay
	Addr     string    `json:"addr,omitempty"`  // standalone relays: host:port (UDP and TCP)
	Username string    `json:"username"`
	Password string    `json:"password"`
	Expires  time.Time `json:"expires"`
}

// TurnCredsOK answers TurnCreds.
type TurnCredsOK struct {
	Creds []TurnCred `json:"creds"`
}

// Peers asks a supernode for its view of the other supernodes.
type Peers struct{}

// PeersOK answers Peers.
type PeersOK struct {
	Supernodes []SupernodeInfo `json:"supernodes"`
	Layer                      // as the supernode last heard it from the login server
}

func (*OK) Type() Type           { return TOK }
func (*Ping) Type() Type         { return TPing }
func (*Pong) Type() Type         { return TPong }
func (*Register) Type() Type     { return TRegister }
func (*Login) Type() Type        { return TLogin }
func (*Resume) Type() Type       { return TResume }
func (*LoginOK) Type() Type      { return TLoginOK }
func (*Seed) Type() Type         { return TSeed }
func (*SeedOK) Type() Type       { return TSeedOK }
func (*BuddyAdd) Type() Type     { return TBuddyAdd }
func (*BuddyRemove) Type() Type  { return TBuddyRemove }
func (*BuddyBlock) Type() Type   { return TBuddyBlock }
func (*BuddyList) Type() Type    { return TBuddyList }
func (*BuddyListOK) Type() Type  { return TBuddyListOK }
func (*Directory) Type() Type    { return TDirectory }
func (*DirectoryOK) Type() Type  { return TDirectoryOK }
func (*SNRegister) Type() Type   { return TSNRegister }
func (*SNRegisterOK) Type() Type { return TSNRegisterOK }
func (*SNHeartbeat) Type() Type  { return TSNHeartbeat }
func (*SNPeers) Type() Type      { return TSNPeers }
func (*Attach) Type() Type       { return TAttach }
func (*AttachOK) Type() Type     { return TAttachOK }
func (*Peers) Type() Type        { return TPeers }
func (*PeersOK) Type() Type      { return TPeersOK }
func (*TurnCreds) Type() Type    { return TTurnCreds }
func (*TurnCredsOK) Type() Type  { return TTurnCredsOK }

func init() {
	register(&Error{}, &OK{}, &Ping{}, &Pong{},
		&Register{}, &Login{}, &Resume{}, &LoginOK{}, &Seed{}, &SeedOK{},
		&BuddyAdd{}, &BuddyRemove{}, &BuddyBlock{}, &BuddyList{}, &BuddyListOK{},
		&Directory{}, &DirectoryOK{},
		&SNRegister{}, &SNRegisterOK{}, &SNHeartbeat{}, &SNPeers{},
		&Attach{}, &AttachOK{}, &Peers{}, &PeersOK{}, &TurnCreds{}, &TurnCredsOK{})
}

// ValidAddr reports whether s is a host:port with a numeric port in 1..65535.
func ValidAddr(s string) error {
	if len(s) == 0 || len(s) > MaxAddr {
		return fmt.Errorf("address length %d", len(s))
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: bad port", s)
	}
	return nil
}

func validSupernodes(list []SupernodeInfo) error {
	if len(list) > MaxList {
		return fmt.Errorf("%d supernodes, at most %d", len(list), MaxList)
	}
	for _, s := range list {
		if err := ValidAddr(s.Addr); err != nil {
			return err
		}
		if s.Clients < 0 || s.MaxClients < 0 {
			return fmt.Errorf("supernode load %d of %d", s.Clients, s.MaxClients)
		}
		if err := checkLen("id", s.ID, 1, 64); err != nil {
			return err
		}
	}
	return nil
}

func (m *Register) validate() error {
	if err := checkLen("name", m.Name, 1, MaxName); err != nil {
		return err
	}
	return checkLen("password", m.Password, 1, MaxPassword)
}

func (m *Login) validate() error {
	if err := checkLen("name", m.Name, 1, MaxName); err != nil {
		return err
	}
	return checkLen("password", m.Password, 1, MaxPassword)
}

func (m *Resume) validate() error { return checkBytes("credential", m.Credential, 1, MaxCredential) }

func (m *LoginOK) validate() error {
	if err := checkBytes("credential", m.Credential, 1, MaxCredential); err != nil {
		return err
	}
	return validSupernodes(m.Seed)
}

func (m *SeedOK) validate() error      { return validSupernodes(m.Supernodes) }
func (m *BuddyAdd) validate() error    { return checkLen("name", m.Name, 1, MaxName) }
func (m *BuddyRemove) validate() error { return checkLen("name", m.Name, 1, MaxName) }
func (m *BuddyBlock) validate() error  { return checkLen("name", m.Name, 1, MaxName) }

func (m *BuddyListOK) validate() error {
	if len(m.Buddies) > 10*MaxList {
		return fmt.Errorf("%d buddies", len(m.Buddies))
	}
	return nil
}

func (m *Directory) validate() error { return checkLen("query", m.Query, 1, MaxName+1) }

func (m *DirectoryOK) validate() error {
	if len(m.Results) > MaxList {
		return fmt.Errorf("%d results", len(m.Results))
	}
	return nil
}

func (m *SNRegister) validate() error {
	if err := checkLen("name", m.Name, 1, MaxName); err != nil {
		return err
	}
	if err := checkLen("admit_secret", m.AdmitSecret, 0, MaxText); err != nil {
		return err
	}
	if err := checkBytes("user_credential", m.UserCredential, 0, MaxCredential); err != nil {
		return err
	}
	return ValidAddr(m.Addr)
}

func (m *SNRegisterOK) validate() error {
	if err := checkBytes("relay_secret", m.RelaySecret, 0, 64); err != nil {
		return err
	}
	return checkBytes("credential", m.Credential, 1, MaxCredential)
}

func (m *TurnCreds) validate() error { return checkLen("relay", m.Relay, 0, 64) }

func (m *TurnCredsOK) validate() error {
	if len(m.Creds) > 16 {
		return fmt.Errorf("%d credentials", len(m.Creds))
	}
	for _, c := range m.Creds {
		if c.Addr != "" {
			if err := ValidAddr(c.Addr); err != nil {
				return err
			}
		}
		if err := checkLen("username", c.Username, 1, MaxText); err != nil {
			return err
		}
		if err := checkLen("password", c.Password, 1, MaxText); err != nil {
			return err
		}
	}
	return nil
}

func (m *SNHeartbeat) validate() error {
	if m.Clients < 0 || m.MaxClients < 0 {
		return fmt.Errorf("load %d of %d", m.Clients, m.MaxClients)
	}
	return ValidAddr(m.Addr)
}

func (m *SNPeers) validate() error {
	if err := m.Layer.validate(); err != nil {
		return err
	}
	return validSupernodes(m.Supernodes)
}
func (m *Attach) validate() error { return checkBytes("credential", m.Credential, 1, MaxCredential) }
func (m *AttachOK) validate() error {
	for _, a := range []string{m.STUN, m.TURN} {
		if a == "" {
			continue
		}
		if err := ValidAddr(a); err != nil {
			return err
		}
	}
	if err := m.Layer.validate(); err != nil {
		return err
	}
	if err := checkBytes("ticket", m.Ticket, 0, MaxTicket); err != nil {
		return err
	}
	return checkBytes("credential", m.Credential, 1, MaxCredential)
}
func (m *PeersOK) validate() error {
	if err := m.Layer.validate(); err != nil {
		return err
	}
	return validSupernodes(m.Supernodes)
}
