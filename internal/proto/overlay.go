package proto

import (
	"encoding/json"
	"fmt"
	"time"
)

// Overlay message types: the user index, search, presence and instant messages.
const (
	TMembers         Type = 34 // supernode -> login server: a page of the member list
	TMembersOK       Type = 35
	TSNLeave         Type = 36 // supernode -> login server: leaving (demotion)
	TSNPromote       Type = 37 // client -> login server: admit me as a supernode
	TSNPromoteOK     Type = 38
	TSNHello         Type = 50 // supernode -> supernode: first message, proves who dials
	TIndexStore      Type = 51
	TIndexLookup     Type = 52
	TIndexResult     Type = 53
	TIndexGone       Type = 54
	TWatch           Type = 55
	TPresence        Type = 56 // holder -> watcher's supernode -> watcher's client
	TDeliver         Type = 57 // supernode -> supernode -> client: an end-to-end message
	TIndexStoreBatch Type = 58 // supernode -> holder: several records at once
	TVia             Type = 59 // supernode -> its contact -> supernode: a message handed on
	TPublish         Type = 60 // client -> supernode
	TSearch          Type = 61
	TSearchOK        Type = 62
	TSubscribe       Type = 63
	TMsg             Type = 64
	TDialBack        Type = 65 // client -> supernode: dial me back at this address
	TBandwidth       Type = 66 // client -> supernode: upload probe
	TBandwidthOK     Type = 67
	TWatchBatch      Type = 68 // supernode -> holder: several watches at once
	TWatchBatchOK    Type = 69
)

// Limits of overlay messages.
const (
	MaxRecord   = 16 << 10
	MaxEnvelope = 8 << 10
	MaxProbe    = 48 << 10
	// MaxBatch is the most records one IndexStoreBatch carries; the frame's size limit
	// usually binds first.
	MaxBatch = 256
	// MaxWatchBatch is the most watches one WatchBatch carries: at the longest names a
	// batch, and its answer, still fit in a Via (MaxViaBody).
	MaxWatchBatch = 128
	// MaxViaBody bounds the message a Via carries: an IndexStore of the largest record.
	MaxViaBody = 2*MaxRecord + 1024
)

// Errors of the overlay.
var (
	ErrOffline  = &Error{Code: "offline", Message: "that user is offline"}
	ErrNotFound = &Error{Code: "not_found", Message: "not found in the overlay"}
	ErrRefused  = &Error{Code: "refused", Message: "refused"}
	// ErrUnreachable: a supernode asked to hand a message on (Via) could not.
	ErrUnreachable = &Error{Code: "unreachable", Message: "the supernode it was for could not be reached"}
)

// Members asks the login server for the changes to the member list since version Since,
// or (Since 0, or changes no longer kept) for a page of the whole list.
type Members struct {
	Offset int    `json:"offset"`
	Since  uint64 `json:"since,omitempty"`
	// At asks for a page of the list as it was at that version (the one the first page
	// carried), so that the pages of one fetch fit together; 0 = the current list. A
	// version the server no longer keeps is answered with the current one.
	At uint64 `json:"at,omitempty"`
}

// MemberChange is one join or departure.
type MemberChange struct {
	SupernodeInfo
	Left bool `json:"left,omitempty"`
}

// MembersOK is either the changes since the version asked for (Delta) or one page of the
// member list, longest-lived first.
type MembersOK struct {
	Version uint64          `json:"version"`
	Delta   bool            `json:"delta,omitempty"`
	Changes []MemberChange  `json:"changes,omitempty"`
	Total   int             `json:"total"`
	Members []SupernodeInfo `json:"members"`
}

// SNLeave tells the login server the supernode is leaving.
type SNLeave struct{}

// SNPromote asks the login server to admit the logged-in user's node as a supernode at
// Addr. The server dials Addr back and checks that the node there holds the user's key.
type SNPromote struct {
	Addr  string    `json:"addr"`
	Since time.Time `json:"since"`
}

// SNPromoteOK carries the new supernode credential.
type SNPromoteOK struct {
	Credential        []byte `json:"credential"`
	HeartbeatInterval int64  `json:"heartbeat_ms"`
}

// SNHello is a supernode's first message to another supernode.
type SNHello struct {
	Credential []byte `json:"credential"`
	// Binary says the dialler reads binary bodies (binary.go); older supernodes leave
	// it out, and are sent JSON only.
	Binary bool `json:"binary,omitempty"`
}

// IndexStore asks a holder to keep a signed user record. With Replicate set, the holder
// is the first of the record's holders that the sender reached and passes the record on
// to the others (its successors on the ring) before it answers: a supernode publishing
// for its users then talks to one holder per record, not to every one, and the copies
// travel over the connections between ring neighbours, which stay open.
type IndexStore struct {
	Record    []byte `json:"record"`
	Replicate bool   `json:"replicate,omitempty"`
}

// IndexStoreBatch asks a holder to keep several signed user records. A supernode sends
// one per holder when it re-homes records after a ring change or hands them off before
// leaving, instead of one IndexStore per record. Each record stands alone: one that does
// not verify is refused without the others. The answer is OK.
type IndexStoreBatch struct {
	Records [][]byte `json:"records"`
}

// IndexLookup asks a holder for a user's record on behalf of Asker.
type IndexLookup struct {
	Name  string `json:"name"`
	Asker string `json:"asker"`
}

// IndexResult answers IndexLookup.
type IndexResult struct {
	Found    bool      `json:"found"`
	Online   bool      `json:"online"`
	Record   []byte    `json:"record,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// IndexGone reports that a user attached to the sending supernode disconnected.
type IndexGone struct {
	Name string `json:"name"`
	Seq  uint64 `json:"seq"`
}

// Via carries a message from one supernode to another through a third: the sender's
// contact in the target's group of the mesh (index.Ring.Via), when the sender has no
// connection open to the target. The sender sets To; the contact, which knows the
// sender from its authenticated connection, hands the message on with From set to the
// sender instead, and the target serves it as if From had sent it. Kind is the type of
// the message carried (Watch, Presence, IndexStore or IndexGone: see Forwardable), Body
// its encoding. An IndexGone is taken on its sender's word (only a user's own supernode
// may say the user left), which the contact could forge, so it carries Sig: the sender's
// Ed25519 signature over ViaSigned(To, Kind, Body), checked against From's key. The other
// kinds carry their own proof (signed records) or need none. The answer is the carried
// message's answer.
type Via struct {
	To   string          `json:"to,omitempty"`
	From string          `json:"from,omitempty"`
	Kind Type            `json:"kind"`
	Body json.RawMessage `json:"body"`
	Sig  []byte          `json:"sig,omitempty"`
	// BodyBinary marks Body as the carried message's binary form (see binary.go). Such
	// a Via travels only in binary frames: EncodeFor re-encodes the body as JSON for a
	// peer that reads only JSON.
	BodyBinary bool `json:"-"`
}

// Forwardable reports whether a Via may carry messages of type t.
func Forwardable(t Type) bool {
	switch t {
	case TWatch, TWatchBatch, TPresence, TIndexStore, TIndexGone:
		return true
	}
	return false
}

// ViaSigned returns the bytes a Via's Sig signs: the target and the message, so that a
// signature for one target is no good at another.
func ViaSigned(to string, kind Type, body []byte) []byte {
	b := make([]byte, 0, 24+len(to)+len(body))
	b = append(b, "peerline via v1\x00"...)
	b = append(b, to...)
	b = append(b, 0, byte(kind))
	return append(b, body...)
}

// Watch asks a holder to push presence changes of Name to the sending supernode, for its
// user Watcher. Watches expire unless renewed.
type Watch struct {
	Name    string `json:"name"`
	Watcher string `json:"watcher"`
}

// WatchBatch registers or renews several watches at one holder. A supernode renews its
// users' watches every keep-alive period, one batch per holder instead of one Watch per
// watch. The answer is WatchBatchOK.
type WatchBatch struct {
	Watches []Watch `json:"watches"`
}

// WatchBatchOK answers WatchBatch with the holder's presence of each name watched that it
// holds a record of, To set to the watcher: what a Watch pushes on its own after it is
// registered. A watcher the user blocked gets none.
type WatchBatchOK struct {
	Presences []Presence `json:"presences,omitempty"`
}

// Presence tells of a user's presence.
type Presence struct {
	Name     string    `json:"name"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	To       string    `json:"to,omitempty"` // the watching user (supernode to supernode)
	// Seq is the sequence number of the record the presence comes from: pushes can
	// arrive out of order (each goes on its own, and some through a contact of the
	// mesh), and a watcher keeps the newest. Of two with one Seq, the offline one is
	// newer: a departure or an expiry ends the record it names. 0 = unknown (older
	// supernodes), taken as it comes.
	Seq uint64 `json:"seq,omitempty"`
}

// Deliver carries an end-to-end encrypted message to its recipient.
type Deliver struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Envelope []byte `json:"envelope"`
}

// Publish is a client's signed record, sent on attach and with every keep-alive.
type Publish struct {
	Record []byte `json:"record"`
}

// Search asks the client's supernode where a user is.
type Search struct {
	Name string `json:"name"`
}

// SearchOK answers Search.
type SearchOK struct {
	Found    bool      `json:"found"`
	Online   bool      `json:"online"`
	Record   []byte    `json:"record,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Hops     int       `json:"hops"`
	Cached   bool      `json:"cached"`
}

// Subscribe sets the users whose presence the client wants pushed.
type Subscribe struct {
	Names []string `json:"names"`
}

// Msg asks the client's supernode to forward an end-to-end message.
type Msg struct {
	To       string `json:"to"`
	Envelope []byte `json:"envelope"`
}

// DialBack asks a supernode to connect to Addr and report whether the node there proved
// it holds the asking client's key.
type DialBack struct {
	Addr string `json:"addr"`
}

// Bandwidth is an upload probe: the supernode answers when the payload has arrived.
type Bandwidth struct {
	Payload []byte `json:"payload"`
}

// BandwidthOK answers Bandwidth.
type BandwidthOK struct {
	Bytes int `json:"bytes"`
}

func (*Members) Type() Type         { return TMembers }
func (*MembersOK) Type() Type       { return TMembersOK }
func (*SNLeave) Type() Type         { return TSNLeave }
func (*SNPromote) Type() Type       { return TSNPromote }
func (*SNPromoteOK) Type() Type     { return TSNPromoteOK }
func (*SNHello) Type() Type         { return TSNHello }
func (*IndexStore) Type() Type      { return TIndexStore }
func (*IndexStoreBatch) Type() Type { return TIndexStoreBatch }
func (*IndexLookup) Type() Type     { return TIndexLookup }
func (*IndexResult) Type() Type     { return TIndexResult }
func (*IndexGone) Type() Type       { return TIndexGone }
func (*Watch) Type() Type           { return TWatch }
func (*WatchBatch) Type() Type      { return TWatchBatch }
func (*WatchBatchOK) Type() Type    { return TWatchBatchOK }
func (*Via) Type() Type             { return TVia }
func (*Presence) Type() Type        { return TPresence }
func (*Deliver) Type() Type         { return TDeliver }
func (*Publish) Type() Type         { return TPublish }
func (*Search) Type() Type          { return TSearch }
func (*SearchOK) Type() Type        { return TSearchOK }
func (*Subscribe) Type() Type       { return TSubscribe }
func (*Msg) Type() Type             { return TMsg }
func (*DialBack) Type() Type        { return TDialBack }
func (*Bandwidth) Type() Type       { return TBandwidth }
func (*BandwidthOK) Type() Type     { return TBandwidthOK }

func init() {
	register(&Members{}, &MembersOK{}, &SNLeave{}, &SNPromote{}, &SNPromoteOK{},
		&SNHello{}, &IndexStore{}, &IndexStoreBatch{}, &IndexLookup{}, &IndexResult{}, &IndexGone{}, &Watch{}, &WatchBatch{}, &WatchBatchOK{}, &Via{},
		&Presence{}, &Deliver{}, &Publish{}, &Search{}, &SearchOK{}, &Subscribe{}, &Msg{},
		&DialBack{}, &Bandwidth{}, &BandwidthOK{})
}

func (m *Members) validate() error {
	if m.Offset < 0 {
		return fmt.Errorf("negative offset")
	}
	return nil
}

func (m *MembersOK) validate() error {
	if len(m.Changes) > MaxList {
		return fmt.Errorf("%d changes", len(m.Changes))
	}
	for _, c := range m.Changes {
		if err := validSupernodes([]SupernodeInfo{c.SupernodeInfo}); err != nil {
			return err
		}
	}
	return validSupernodes(m.Members)
}
func (m *SNPromote) validate() error { return ValidAddr(m.Addr) }
func (m *SNPromoteOK) validate() error {
	return checkBytes("credential", m.Credential, 1, MaxCredential)
}
func (m *SNHello) validate() error    { return checkBytes("credential", m.Credential, 1, MaxCredential) }
func (m *IndexStore) validate() error { return checkBytes("record", m.Record, 1, MaxRecord) }
func (m *IndexStoreBatch) validate() error {
	if len(m.Records) == 0 || len(m.Records) > MaxBatch {
		return fmt.Errorf("%d records", len(m.Records))
	}
	for _, r := range m.Records {
		if err := checkBytes("record", r, 1, MaxRecord); err != nil {
			return err
		}
	}
	return nil
}
func (m *IndexLookup) validate() error {
	if err := checkLen("name", m.Name, 1, MaxName); err != nil {
		return err
	}
	return checkLen("asker", m.Asker, 0, MaxName)
}
func (m *IndexResult) validate() error { return checkBytes("record", m.Record, 0, MaxRecord) }
func (m *IndexGone) validate() error   { return checkLen("name", m.Name, 1, MaxName) }
func (m *Via) validate() error {
	if (m.To == "") == (m.From == "") {
		return fmt.Errorf("exactly one of to and from must be set")
	}
	if err := checkLen("to", m.To, 0, MaxName); err != nil {
		return err
	}
	if err := checkLen("from", m.From, 0, MaxName); err != nil {
		return err
	}
	if !Forwardable(m.Kind) {
		return fmt.Errorf("type %d is not handed on", m.Kind)
	}
	if err := checkBytes("body", m.Body, 1, MaxViaBody); err != nil {
		return err
	}
	return checkBytes("sig", m.Sig, 0, 64)
}
func (m *Watch) validate() error {
	if err := checkLen("name", m.Name, 1, MaxName); err != nil {
		return err
	}
	return checkLen("watcher", m.Watcher, 1, MaxName)
}
func (m *WatchBatch) validate() error {
	if len(m.Watches) == 0 || len(m.Watches) > MaxWatchBatch {
		return fmt.Errorf("%d watches", len(m.Watches))
	}
	for i := range m.Watches {
		if err := m.Watches[i].validate(); err != nil {
			return err
		}
	}
	return nil
}
func (m *WatchBatchOK) validate() error {
	if len(m.Presences) > MaxWatchBatch {
		return fmt.Errorf("%d presences", len(m.Presences))
	}
	for i := range m.Presences {
		if err := m.Presences[i].validate(); err != nil {
			return err
		}
	}
	return nil
}
func (m *Presence) validate() error {
	if err := checkLen("name", m.Name, 1, MaxName); err != nil {
		return err
	}
	return checkLen("to", m.To, 0, MaxName)
}
func (m *Deliver) validate() error {
	if err := checkLen("from", m.From, 1, MaxName); err != nil {
		return err
	}
	if err := checkLen("to", m.To, 1, MaxName); err != nil {
		return err
	}
	return checkBytes("envelope", m.Envelope, 1, MaxEnvelope)
}
func (m *Publish) validate() error  { return checkBytes("record", m.Record, 1, MaxRecord) }
func (m *Search) validate() error   { return checkLen("name", m.Name, 1, MaxName) }
func (m *SearchOK) validate() error { return checkBytes("record", m.Record, 0, MaxRecord) }
func (m *Subscribe) validate() error {
	if len(m.Names) > 10*MaxList {
		return fmt.Errorf("%d names", len(m.Names))
	}
	for _, n := range m.Names {
		if err := checkLen("name", n, 1, MaxName); err != nil {
			return err
		}
	}
	return nil
}
func (m *Msg) validate() error {
	if err := checkLen("to", m.To, 1, MaxName); err != nil {
		return err
	}
	return checkBytes("envelope", m.Envelope, 1, MaxEnvelope)
}
func (m *DialBack) validate() error  { return ValidAddr(m.Addr) }
func (m *Bandwidth) validate() error { return checkBytes("payload", m.Payload, 0, MaxProbe) }
