package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/e2ee"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
)

// The client's part of the overlay: it publishes a signed record of where it is with
// every keep-alive, subscribes to its buddies' presence, searches through its supernode
// (falling back to the login server's directory), and sends and receives end-to-end
// encrypted messages.

// Presence is what the client knows of a buddy.
type Presence struct {
	Name     string    `json:"name"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Updated  time.Time `json:"updated"`

	// The push this presence came from, for ordering pushes (proto.Presence.Seq).
	seq     uint64
	offline bool
}

// newer reports whether p is at least as recent as the presence last applied.
func (cur *Presence) newer(p *proto.Presence) bool {
	switch {
	case p.Seq == 0 || cur.seq == 0:
		return true
	case p.Seq != cur.seq:
		return p.Seq > cur.seq
	}
	return !p.Online || cur.offline == !p.Online
}

// Event is something that happened to the client: a buddy's presence changed or a
// message arrived. 'peerline client --json' prints them as JSON lines.
type Event struct {
	Kind     string    `json:"kind"` // "presence", "message" or "call"
	Time     time.Time `json:"time"`
	Name     string    `json:"name,omitempty"`
	Online   bool      `json:"online,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	From     string    `json:"from,omitempty"`
	Text     string    `json:"text,omitempty"`
	Sent     time.Time `json:"sent,omitzero"`
	Call     string    `json:"call,omitempty"`  // call id
	State    string    `json:"state,omitempty"` // call: ringing, active, hung up, ended
}

// InboxSize bounds the messages a client keeps for 'peerline inbox'.
const InboxSize = 256

// recordTTL is how long a published record lives: two keep-alive periods, so one late
// keep-alive does not flap presence. A user whose connection drops is reported gone by
// their supernode at once; one who falls silent is dropped by the supernode after two
// periods, and their record expires at the holders by then too.
func recordTTL(keep time.Duration) time.Duration { return 2 * keep }

// publish signs a fresh record naming the supernode a is attached to and sends it.
func (c *Client) publish(ctx context.Context, a *attachment, offline bool) error {
	// The state is read and numbered under seq.mu (then mu: the lock order), so that of
	// two publications at once the higher number carries the newer state.
	c.seq.mu.Lock()
	c.mu.Lock()
	cred := c.cred
	blocked := append([]string(nil), c.blocked...)
	nat := c.natClassic
	c.mu.Unlock()
	if cred == nil {
		c.seq.mu.Unlock()
		return errors.New("not logged in")
	}
	now := c.cfg.Now()
	seq := c.nextSeqLocked(now)
	c.seq.mu.Unlock()
	raw, err := index.Sign(c.key, index.Record{
		Name: c.user, Offline: offline, Credential: cred, Supernode: a.id, SNAddr: a.addr,
		NAT: nat, BoxKey: c.box.Public, Blocked: blocked,
		Seq: seq, Expires: now.Add(recordTTL(a.keep)),
	})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, a.keep)
	defer cancel()
	if _, err := a.conn.Call(pctx, &proto.Publish{Record: raw}); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	c.m.Inc("publishes")
	return nil
}

// recordSeq orders a user's records at the holders: a newer one replaces an older one
// and a stale one is refused. It is the signing time in nanoseconds, made to exceed
// every number signed before (SeqFile keeps the last across restarts).
type recordSeq struct {
	mu     sync.Mutex // mu guards the fields and orders the saves; taken before Client.mu
	last   uint64
	warned bool // a failed save was logged
}

// loadSeq reads the last sequence number signed by an earlier run, if any.
func (c *Client) loadSeq() {
	b, err := os.ReadFile(filepath.Join(c.cfg.DataDir, SeqFile))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var n uint64
	if err == nil {
		n, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	if err != nil {
		c.m.Inc("seq_file_unreadable")
		c.log.Warn("saved record sequence unreadable; counting from the clock", "err", err)
		return
	}
	c.seq.mu.Lock()
	c.seq.last = n
	c.seq.mu.Unlock()
}

// nextSeqLocked returns the sequence number of a record signed at now and saves it
// before the record can leave: a crash after sending still leaves it on disk. The
// caller holds c.seq.mu.
func (c *Client) nextSeqLocked(now time.Time) uint64 {
	seq := max(uint64(now.UnixNano()), c.seq.last+1)
	c.seq.last = seq
	if err := atomicfile.WriteFile(filepath.Join(c.cfg.DataDir, SeqFile), strconv.AppendUint(nil, seq, 10), 0o600); err != nil {
		// Publishing goes on: a record unsaved matters only if the process also
		// restarts within the same nanosecond or on a clock set back. Said once.
		c.m.Inc("seq_save_errors")
		if !c.seq.warned {
			c.seq.warned = true
			c.log.Warn("record sequence not saved (said once; seq_save_errors counts)", "err", err)
		}
	}
	return seq
}

// subscribe tells the supernode whose presence to push: the buddies not blocked.
func (c *Client) subscribe(ctx context.Context, a *attachment) error {
	c.mu.Lock()
	names := append([]string(nil), c.buddies...)
	c.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.conn.Call(sctx, &proto.Subscribe{Names: names})
	return err
}

// refreshBuddies reads the buddy list from the login server: buddies to watch, and the
// blocked names that go into the record.
func (c *Client) refreshBuddies(ctx context.Context) error {
	m, err := c.loginCall(ctx, &proto.BuddyList{})
	if err != nil {
		return err
	}
	bl, ok := m.(*proto.BuddyListOK)
	if !ok {
		return fmt.Errorf("buddy list answered %T", m)
	}
	buddies, blocked := splitBuddies(bl.Buddies)
	c.setBuddies(bl.Buddies, buddies, blocked)
	c.mu.Lock()
	c.buddiesRead = c.cfg.Now()
	c.mu.Unlock()
	c.saveBuddies(bl.Buddies)
	return nil
}

// setBuddies installs a buddy list: all of it, the names to watch and the blocked ones.
func (c *Client) setBuddies(all []proto.Buddy, buddies, blocked []string) {
	now := c.cfg.Now()
	c.mu.Lock()
	c.buddies, c.blocked, c.buddiesKnown = buddies, blocked, true
	for _, b := range all {
		if _, ok := c.presence[b.Name]; !ok && !b.Blocked {
			c.presence[b.Name] = &Presence{Name: b.Name, LastSeen: b.LastSeen, Updated: now}
		}
	}
	for name := range c.presence {
		if !slices.Contains(buddies, name) {
			delete(c.presence, name)
		}
	}
	c.mu.Unlock()
}

// splitBuddies returns the names to watch and the blocked names (at most
// index.MaxBlocked) of a buddy list.
func splitBuddies(all []proto.Buddy) (buddies, blocked []string) {
	for _, b := range all {
		if b.Blocked {
			blocked = append(blocked, b.Name)
		} else {
			buddies = append(buddies, b.Name)
		}
	}
	if len(blocked) > index.MaxBlocked {
		blocked = blocked[:index.MaxBlocked]
	}
	return buddies, blocked
}

// saveBuddies keeps the buddy list in the data directory (atomically, like the
// credential), so that a client restarted while the login server is unreachable still
// watches its buddies and keeps blocking whom it blocked.
func (c *Client) saveBuddies(all []proto.Buddy) {
	b, err := json.Marshal(all)
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(c.cfg.DataDir, BuddiesFile), b, 0o600)
	}
	if err != nil {
		c.log.Warn("saving the buddy list failed", "err", err)
	}
}

// loadBuddies installs the buddy list saved by an earlier run, if any.
func (c *Client) loadBuddies() {
	path := filepath.Join(c.cfg.DataDir, BuddiesFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var read time.Time
	if st, err := os.Stat(path); err == nil {
		read = st.ModTime()
	}
	var all []proto.Buddy
	if err := json.Unmarshal(b, &all); err != nil || len(all) > 10*proto.MaxList {
		c.m.Inc("buddies_file_corrupt")
		c.log.Warn("saved buddy list unreadable; waiting for the login server's", "err", err)
		return
	}
	for _, bd := range all {
		if len(bd.Name) == 0 || len(bd.Name) > proto.MaxName {
			c.m.Inc("buddies_file_corrupt")
			return
		}
	}
	buddies, blocked := splitBuddies(all)
	c.setBuddies(all, buddies, blocked)
	c.mu.Lock()
	c.buddiesRead = read
	c.mu.Unlock()
	c.m.Inc("buddies_loaded")
}

// overlayChanged republishes and resubscribes after the buddy list changed.
func (c *Client) overlayChanged(ctx context.Context) {
	if err := c.refreshBuddies(ctx); err != nil {
		c.log.Warn("buddy list refresh failed", "err", err)
		return
	}
	c.mu.Lock()
	a := c.attached
	c.mu.Unlock()
	if a == nil {
		return
	}
	if err := c.publish(ctx, a, false); err != nil {
		c.log.Warn("republish failed", "err", err)
	}
	if err := c.subscribe(ctx, a); err != nil {
		c.log.Warn("resubscribe failed", "err", err)
	}
}

// clientHandler serves what the supernode pushes to the client.
type clientHandler struct{ c *Client }

// Handle implements rpc.Handler.
func (h clientHandler) Handle(ctx context.Context, _ *rpc.Conn, m proto.Message) (proto.Message, error) {
	c := h.c
	switch m := m.(type) {
	case *proto.Presence:
		c.onPresence(m)
		return nil, nil
	case *proto.Deliver:
		return nil, c.onDeliver(m)
	}
	return nil, proto.ErrBadRequest.With("message type %d is not served by clients", m.Type())
}

func (c *Client) onPresence(p *proto.Presence) {
	now := c.cfg.Now()
	c.mu.Lock()
	cur, ok := c.presence[p.Name]
	if !ok || !slices.Contains(c.buddies, p.Name) {
		c.mu.Unlock()
		return
	}
	if !cur.newer(p) {
		c.mu.Unlock()
		c.m.Inc("presence_stale")
		return
	}
	changed := cur.Online != p.Online || cur.Updated.IsZero()
	cur.Online, cur.Updated = p.Online, now
	cur.seq, cur.offline = p.Seq, !p.Online
	if !p.LastSeen.IsZero() {
		cur.LastSeen = p.LastSeen
	}
	c.mu.Unlock()
	c.m.Inc("presence_updates")
	if changed {
		c.log.Info("buddy presence", "buddy", p.Name, "online", p.Online)
		c.emit(Event{Kind: "presence", Time: now, Name: p.Name, Online: p.Online, LastSeen: p.LastSeen})
	}
}

func (c *Client) onDeliver(d *proto.Deliver) error {
	msg, sender, err := e2ee.Open(d.Envelope, c.box, c.cfg.Login.Key, c.user, c.cfg.Now())
	if err != nil {
		c.m.Inc("messages_rejected")
		return proto.ErrRefused.With("message refused: %v", err)
	}
	if sender.Name != d.From {
		c.m.Inc("messages_rejected")
		return proto.ErrRefused.With("message from %s claims to be from %s", d.From, sender.Name)
	}
	c.mu.Lock()
	blocked := slices.Contains(c.blocked, sender.Name)
	c.mu.Unlock()
	if blocked {
		c.m.Inc("messages_blocked")
		return proto.ErrBlocked
	}
	if msg.Kind == e2ee.KindCall {
		return c.phone.onCallSignal(msg, sender)
	}
	ev := Event{Kind: "message", Time: c.cfg.Now(), From: msg.From, Text: msg.Text, Sent: msg.Sent}
	c.mu.Lock()
	for _, old := range c.inbox {
		// A supernode may deliver one envelope twice; the signed (sender, sent, text)
		// identifies a message, so a replay is dropped.
		if old.From == ev.From && old.Sent.Equal(ev.Sent) && old.Text == ev.Text {
			c.mu.Unlock()
			c.m.Inc("messages_duplicate")
			return nil
		}
	}
	c.inbox = append(c.inbox, ev)
	if len(c.inbox) > InboxSize {
		c.inbox = c.inbox[len(c.inbox)-InboxSize:]
	}
	c.mu.Unlock()
	c.m.Inc("messages_received")
	// Never the text: it is end-to-end encrypted for this user, not for the log.
	c.log.Info("message received", "from", msg.From)
	c.emit(ev)
	return nil
}

func (c *Client) emit(ev Event) {
	if c.cfg.Events == nil {
		return
	}
	select {
	case c.cfg.Events <- ev:
	default:
		c.m.Inc("events_dropped")
	}
}

// Buddies returns what the client knows of its buddies' presence.
func (c *Client) Buddies() []Presence {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Presence, 0, len(c.presence))
	for _, p := range c.presence {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Inbox returns the messages received.
func (c *Client) Inbox() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.inbox...)
}

func (c *Client) attachedConn() (*attachment, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.attached == nil {
		return nil, errors.New("not attached to a supernode yet")
	}
	return c.attached, nil
}

// Search finds a user: through the overlay first; when the overlay has no record, the
// login server's directory says whether the user exists and when they were last seen. A
// query ending in '*' is a prefix search: the directory lists the names, and each is
// then looked up in the overlay, so that a hit shows the overlay's presence where it has
// a record (and says so), the same as an exact search of that name.
func (c *Client) Search(ctx context.Context, q string) (SearchResult, error) {
	if len(q) > 0 && q[len(q)-1] == '*' {
		res, err := c.directory(ctx, q)
		if err != nil {
			return res, err
		}
		c.overlayPresence(ctx, res.Results)
		return res, nil
	}
	if a, err := c.attachedConn(); err == nil {
		res, found, err := c.overlaySearch(ctx, a, q)
		if err != nil {
			return SearchResult{}, err
		}
		if found {
			return res, nil
		}
	}
	return c.directory(ctx, q)
}

// overlaySearch looks name up in the overlay; found is false when the overlay has no
// record of it (or could not be asked).
func (c *Client) overlaySearch(ctx context.Context, a *attachment, name string) (res SearchResult, found bool, err error) {
	ok, err := rpc.Call[*proto.SearchOK](ctx, a.conn, &proto.Search{Name: name})
	if err != nil {
		c.log.Debug("overlay search failed; asking the directory", "err", err)
		return SearchResult{}, false, nil
	}
	if !ok.Found {
		return SearchResult{}, false, nil
	}
	res = SearchResult{Query: name, Source: "overlay", Hops: ok.Hops, Cached: ok.Cached}
	hit := SearchHit{Name: name, LastSeen: ok.LastSeen, Source: "overlay", Hops: ok.Hops}
	if ok.Online {
		rec, err := index.Verify(ok.Record, c.cfg.Login.Key, c.cfg.Now())
		if err != nil {
			return SearchResult{}, false, fmt.Errorf("the overlay returned a bad record: %w", err)
		}
		res.User = &UserLocation{Name: rec.Name, Online: true, Supernode: rec.Supernode, SupernodeAddr: rec.SNAddr,
			NAT: rec.NAT, Candidates: rec.Candidates}
		hit.Online, hit.LastSeen, hit.SupernodeAddr, hit.NAT = true, c.cfg.Now(), rec.SNAddr, rec.NAT
	} else {
		res.User = &UserLocation{Name: name, LastSeen: ok.LastSeen}
	}
	res.Results = []SearchHit{hit}
	c.m.Inc("searches_overlay")
	return res, true, nil
}

// overlayLookups bounds the overlay searches one prefix search runs at a time.
const overlayLookups = 8

// overlayPresence replaces the presence of each directory hit by the overlay's, where
// the overlay has a record.
func (c *Client) overlayPresence(ctx context.Context, hits []SearchHit) {
	a, err := c.attachedConn()
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, overlayLookups)
	for i := range hits {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, found, err := c.overlaySearch(ctx, a, hits[i].Name)
			if err != nil {
				c.log.Debug("overlay record refused; keeping the directory's", "user", hits[i].Name, "err", err)
				return
			}
			if found {
				hits[i] = res.Results[0]
			}
		}()
	}
	wg.Wait()
}

func (c *Client) directory(ctx context.Context, q string) (SearchResult, error) {
	m, err := c.loginCall(ctx, &proto.Directory{Query: q})
	if err != nil {
		return SearchResult{}, err
	}
	d, ok := m.(*proto.DirectoryOK)
	if !ok {
		return SearchResult{}, fmt.Errorf("directory answered %T", m)
	}
	c.m.Inc("searches_directory")
	res := SearchResult{Query: q, Source: "directory", Results: []SearchHit{}}
	for _, e := range d.Results {
		res.Results = append(res.Results, SearchHit{Name: e.Name, LastSeen: e.LastSeen, Source: "directory"})
	}
	if len(d.Results) == 1 && d.Results[0].Name == q {
		res.User = &UserLocation{Name: q, LastSeen: d.Results[0].LastSeen}
	}
	return res, nil
}

// locate finds where an online user is now. A record that expired on its way here (a
// holder that missed the user's last publication, answering at the edge of the record's
// life) is asked for again, a few times, before the user counts as unreachable.
func (c *Client) locate(ctx context.Context, a *attachment, name string) (index.Record, error) {
	var lastErr error
	for try := 0; try < 3; try++ {
		if try > 0 && !c.sleep(ctx, 300*time.Millisecond) {
			return index.Record{}, ctx.Err()
		}
		ok, err := rpc.Call[*proto.SearchOK](ctx, a.conn, &proto.Search{Name: name})
		if err != nil {
			return index.Record{}, err
		}
		if !ok.Found && !c.userExists(ctx, name) {
			return index.Record{}, proto.ErrNoSuchUser.With("no such user %s", name)
		}
		if !ok.Found || !ok.Online {
			return index.Record{}, proto.ErrOffline.With("%s is offline", name)
		}
		rec, err := index.Verify(ok.Record, c.cfg.Login.Key, c.cfg.Now())
		if err == nil {
			return rec, nil
		}
		lastErr = fmt.Errorf("the overlay returned a bad record: %w", err)
		if !errors.Is(err, index.ErrExpired) {
			break
		}
		c.m.Inc("search_expired_records")
	}
	return index.Record{}, lastErr
}

// userExists asks the login server's directory whether an account named name exists, for
// a name the overlay has no record of. When the directory cannot say (the login server is
// unreachable), the user counts as existing: offline is the safe answer.
func (c *Client) userExists(ctx context.Context, name string) bool {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := c.directory(dctx, name)
	if err != nil {
		c.log.Debug("directory unavailable; taking the user as offline", "err", err)
		return true
	}
	for _, e := range d.Results {
		if e.Name == name {
			return true
		}
	}
	return false
}

// Message sends text to user, end-to-end encrypted: only the recipient can read it, and
// the supernodes on the way see only the recipient's name.
func (c *Client) Message(ctx context.Context, to, text string) error {
	a, err := c.attachedConn()
	if err != nil {
		return err
	}
	rec, err := c.locate(ctx, a, to)
	if errors.Is(err, proto.ErrOffline) {
		return proto.ErrOffline.With("%s is offline; messages are delivered only to online users", to)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	cred := c.cred
	c.mu.Unlock()
	env, err := e2ee.Seal(e2ee.Message{From: c.user, To: to, Sent: c.cfg.Now(), Text: text}, c.key, cred, rec.BoxKey)
	if err != nil {
		return err
	}
	if _, err := a.conn.Call(ctx, &proto.Msg{To: to, Envelope: env}); err != nil {
		return err
	}
	c.m.Inc("messages_sent")
	return nil
}
