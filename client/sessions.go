package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/secure"
)

// A supernode gives its attached clients a session ticket (internal/secure,
// "Resumption"). The client keeps the tickets of the last few supernodes it attached to
// in SessionsFile, with the supernode credential it checked, so that after a restart (a
// mass reboot) it attaches again with one X25519 operation a side and no signature to
// check at either end, where a first attachment costs three X25519 operations and an
// Ed25519 verification a side and the supernode credential's verification.

// maxSessions is how many supernodes' tickets a client keeps: the one it is attached to
// and the last few before it.
const maxSessions = 4

// session is what a client keeps of one supernode's session.
type session struct {
	Addr       string    `json:"addr"`
	Key        string    `json:"key"`        // the supernode's identity key
	Ticket     []byte    `json:"ticket"`     // sealed by the supernode
	Secret     []byte    `json:"secret"`     // the PSK the ticket seals
	Credential []byte    `json:"credential"` // the supernode credential checked on this session
	Saved      time.Time `json:"saved"`
}

// sessionsFile is the layout of SessionsFile.
type sessionsFile struct {
	Login string `json:"login"` // the login server key the credentials were checked against
	// User is the user's credential as last checked against Login: a restart that finds
	// the same bytes in CredentialFile needs no signature check for it.
	User     []byte    `json:"user_credential,omitempty"`
	Sessions []session `json:"sessions"`
}

// loadSessions reads SessionsFile. Anything unreadable is dropped: the next attachment
// makes a full handshake and a new ticket.
func (c *Client) loadSessions() {
	b, err := os.ReadFile(filepath.Join(c.cfg.DataDir, SessionsFile))
	if err != nil {
		return
	}
	var f sessionsFile
	if err := json.Unmarshal(b, &f); err != nil || f.Login != identity.EncodeKey(c.cfg.Login.Key) {
		c.m.Inc("sessions_file_unusable")
		return
	}
	c.checkedCred = f.User
	now := c.cfg.Now()
	for _, s := range f.Sessions {
		if len(s.Ticket) != secure.TicketLen || now.Sub(s.Saved) >= secure.TicketLifetime || len(c.sessions) == maxSessions {
			continue
		}
		if _, err := identity.DecodeKey(s.Key); err != nil {
			continue
		}
		c.sessions = append(c.sessions, s)
	}
}

// resumption returns the saved session for addr, if any.
func (c *Client) resumption(addr string) (secure.Resumption, bool) {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	for _, s := range c.sessions {
		if s.Addr == addr {
			key, _ := identity.DecodeKey(s.Key) // checked at load and at save
			return secure.Resumption{Ticket: s.Ticket, Secret: s.Secret, Peer: key}, true
		}
	}
	return secure.Resumption{}, false
}

// checkedCredential reports whether cred is the supernode credential checked on the
// saved session with the supernode of key at addr.
func (c *Client) checkedCredential(addr string, key ed25519.PublicKey, cred []byte) bool {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	for _, s := range c.sessions {
		if s.Addr == addr {
			return s.Key == identity.EncodeKey(key) && bytes.Equal(s.Credential, cred)
		}
	}
	return false
}

// ticketRenewal is the age of a saved ticket past which a new one replaces it. A ticket
// resumes as often as it is used while it lives (nothing is accepted before a resumed
// session's first transport message, so a replay gains nothing: see internal/secure),
// and a population restarting at once then writes no file for tickets it already holds.
const ticketRenewal = secure.TicketLifetime / 4

// keepSession records the ticket a supernode gave on a new attachment, first, to be
// written to SessionsFile with the host cache, unless a ticket of the same supernode process under
// ticketRenewal old is saved already; a supernode that gave none (a version from before
// tickets) leaves no session behind.
func (c *Client) keepSession(a *attachment, ticket []byte, secret []byte, cred []byte) {
	c.sessMu.Lock()
	for _, s := range c.sessions {
		if s.Addr == a.addr && s.Key == a.id && bytes.Equal(s.Credential, cred) &&
			len(ticket) == secure.TicketLen && c.cfg.Now().Sub(s.Saved) < ticketRenewal && a.resumed {
			c.sessMu.Unlock()
			return // the saved ticket resumed this session: it is still good
		}
	}
	c.sessions = slices.DeleteFunc(c.sessions, func(s session) bool { return s.Addr == a.addr })
	if len(ticket) == secure.TicketLen {
		s := session{Addr: a.addr, Key: a.id, Ticket: ticket, Secret: secret, Credential: cred, Saved: c.cfg.Now().UTC()}
		c.sessions = append([]session{s}, c.sessions...)
	}
	if len(c.sessions) > maxSessions {
		c.sessions = c.sessions[:maxSessions]
	}
	c.sessDirty = true
	c.sessMu.Unlock()
	c.saveCache() // written with the host cache, off the attachment's path
}

// forgetSession drops addr's session: its ticket was refused outright. (A session kept
// but not yet written when the process dies is lost: the next attachment to that
// supernode makes the full handshake.)
func (c *Client) forgetSession(addr string) {
	c.sessMu.Lock()
	n := len(c.sessions)
	c.sessions = slices.DeleteFunc(c.sessions, func(s session) bool { return s.Addr == addr })
	if len(c.sessions) != n {
		c.sessDirty = true
	}
	c.sessMu.Unlock()
	c.saveCache()
}

// writeSessions writes SessionsFile if the sessions changed since it was last written,
// one writer at a time. It runs with the host cache's write (saveCache, flushCache).
func (c *Client) writeSessions() {
	c.sessWriteMu.Lock()
	defer c.sessWriteMu.Unlock()
	c.sessMu.Lock()
	if !c.sessDirty {
		c.sessMu.Unlock()
		return
	}
	c.sessDirty = false
	f := sessionsFile{Login: identity.EncodeKey(c.cfg.Login.Key), Sessions: slices.Clone(c.sessions)}
	c.sessMu.Unlock()
	f.User = c.credential()
	b, err := json.Marshal(f)
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(c.cfg.DataDir, SessionsFile), b, 0o600)
	}
	if err != nil {
		c.m.Inc("sessions_save_errors")
		c.log.Warn("session tickets not saved", "err", err)
	}
}

// dialSupernode opens the control connection to the supernode at addr: resuming the
// saved session if there is one, with a full handshake otherwise, or if the supernode
// does not resume sessions at all (then its ticket is forgotten).
func (c *Client) dialSupernode(ctx context.Context, addr string) (*secure.OverlayConn, error) {
	r, ok := c.resumption(addr)
	if !ok {
		return c.ident.DialOverlay(ctx, c.cfg.Dialer, addr, nil)
	}
	tc, err := c.ident.ResumeOverlay(ctx, c.cfg.Dialer, addr, r, nil)
	switch {
	case err == nil && tc.Resumed():
		c.m.Inc("attach_resumed")
		return tc, nil
	case err == nil:
		// The supernode could not open the ticket (restarted since, or it expired) and
		// the full handshake followed on the same connection.
		c.m.Inc("attach_ticket_refused")
		return tc, nil
	case errors.Is(err, secure.ErrTicketRefused):
		// Closed on the ticket: a supernode from before tickets, or one that shed the
		// connection at accept (the two look alike). The attempt fails as a shed does,
		// and the next one makes a full handshake.
		c.m.Inc("attach_ticket_refused")
		c.forgetSession(addr)
		return nil, err
	case errors.Is(err, secure.ErrHandshake):
		// The reply did not authenticate: the full handshake, which proves the
		// supernode's key, decides.
		c.m.Inc("attach_ticket_refused")
		c.forgetSession(addr)
		return c.ident.DialOverlay(ctx, c.cfg.Dialer, addr, nil)
	}
	return nil, err
}
