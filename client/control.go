package client

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/version"
)

// lastErrorAge is how long Status shows the last error: older errors name supernodes
// and conditions long gone.
const lastErrorAge = 5 * time.Minute

// Status is what 'peerline status' shows.
type Status struct {
	Role              string            `json:"role"` // "client"
	User              string            `json:"user"`
	LoggedIn          bool              `json:"logged_in"`
	CredentialExpires time.Time         `json:"credential_expires,omitzero"`
	Supernode         *SupernodeStatus  `json:"supernode"`
	Attaches          int               `json:"attaches"`
	HostCache         int               `json:"host_cache"`
	Version           string            `json:"version"`
	LastError         string            `json:"last_error,omitempty"`
	LastErrorAt       time.Time         `json:"last_error_at,omitzero"`
	NAT               *NATStatus        `json:"nat,omitempty"`
	Buddies           []Presence        `json:"buddies"`
	Promotion         PromotionStatus   `json:"promotion"`
	Counters          map[string]uint64 `json:"counters"`
	// RetryTokens is what is left of the retry budget every reconnect path shares; below
	// 1 the client waits its longest back-off before each retry.
	RetryTokens float64 `json:"retry_tokens"`
	// Busy counts the supernodes now left alone because they answered busy or shed.
	Busy int `json:"busy_supernodes"`
}

// SupernodeStatus describes the supernode the client is attached to.
type SupernodeStatus struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Addr       string    `json:"addr"`
	Since      time.Time `json:"since"`
	AttachedAt time.Time `json:"attached_at"`
}

// Attached reports whether the client is attached to a supernode now: Status without
// its cost, for a simulation that asks 100,000 clients every second.
func (c *Client) Attached() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attached != nil
}

// Status returns a snapshot of the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{
		Role:      "client",
		User:      c.user,
		LoggedIn:  c.cred != nil,
		Attaches:  c.attaches,
		HostCache: c.cache.Len(),
		Version:   version.String(),
		Counters:  c.m.Snapshot(),
		// The budget has its own lock, never taken with mu held elsewhere.
		RetryTokens: c.budget.Tokens(),
	}
	now := c.cfg.Now()
	for _, until := range c.busyUntil {
		if now.Before(until) {
			st.Busy++
		}
	}
	if c.lastErr != "" && c.cfg.Now().Sub(c.lastErrAt) < lastErrorAge {
		st.LastError, st.LastErrorAt = c.lastErr, c.lastErrAt
	}
	if c.cred != nil {
		st.CredentialExpires = c.credInfo.Expires
	}
	st.Promotion = c.promotion
	st.Promotion.Admitted = c.sn != nil && c.sn.Registered()
	if !c.nat.Checked.IsZero() {
		n := c.nat
		st.NAT = &n
	}
	for _, p := range c.presence {
		st.Buddies = append(st.Buddies, *p)
	}
	sort.Slice(st.Buddies, func(i, j int) bool { return st.Buddies[i].Name < st.Buddies[j].Name })
	if a := c.attached; a != nil {
		st.Supernode = &SupernodeStatus{ID: a.id, Name: a.name, Addr: a.addr, Since: a.since, AttachedAt: a.at}
	}
	return st
}

// Control commands understood on the control socket.
const (
	CmdStatus       = ctl.CmdStatus
	CmdBuddyAdd     = "buddy.add"
	CmdBuddyRemove  = "buddy.remove"
	CmdBuddyBlock   = "buddy.block"
	CmdBuddyUnblock = "buddy.unblock"
	CmdBuddyList    = "buddy.list"
	CmdSearch       = "search"
	CmdHostCache    = "hostcache"
	CmdMsg          = "msg"
	CmdInbox        = "inbox"
	CmdCall         = "call"       // target, send, send format, record, record format, duration ms
	CmdAnswer       = "answer"     // call id ("" = the ringing one), then as CmdCall
	CmdReject       = "reject"     // call id ("" = the ringing one)
	CmdHangup       = "hangup"     // call id ("" = the current call)
	CmdCalls        = "calls"      // ringing calls, calls in progress and the last reports
	CmdHold         = "hold"       // "on" or "off", then the call id ("" = the current call)
	CmdConference   = "conference" // send, send format, record, record format, duration ms, names...
)

// CallsStatus answers CmdCalls.
type CallsStatus struct {
	Ringing []CallReport `json:"ringing"`
	Active  []CallReport `json:"active"`
	Reports []CallReport `json:"reports"`
}

// SearchResult is the answer to a search.
type SearchResult struct {
	Query string `json:"query"`
	// Source is who answered the query: "overlay" for a name the overlay has a record
	// of, "directory" for prefix searches and names only the login server knows. Each
	// result says where its own presence comes from.
	Source  string        `json:"source"`
	User    *UserLocation `json:"user,omitempty"`
	Results []SearchHit   `json:"results"`
	Hops    int           `json:"hops,omitempty"`   // overlay: supernodes contacted beyond our own
	Cached  bool          `json:"cached,omitempty"` // overlay: answered from our supernode's cache
}

// SearchHit is one user a search found, with the best presence the system has: the
// user's signed record in the overlay where there is one, else the directory's.
type SearchHit struct {
	Name     string    `json:"name"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"` // online: now; zero: never logged in
	// Source is where Online and LastSeen come from: "overlay" or "directory".
	Source        string `json:"source"`
	SupernodeAddr string `json:"supernode_addr,omitempty"` // online: where the user is attached
	NAT           string `json:"nat,omitempty"`
	Hops          int    `json:"hops,omitempty"` // overlay: supernodes contacted beyond our own
}

// UserLocation is where a user is now, from their signed record.
type UserLocation struct {
	Name          string    `json:"name"`
	Online        bool      `json:"online"`
	LastSeen      time.Time `json:"last_seen,omitzero"`
	Supernode     string    `json:"supernode,omitempty"`
	SupernodeAddr string    `json:"supernode_addr,omitempty"`
	NAT           string    `json:"nat,omitempty"`
	Candidates    []string  `json:"candidates,omitempty"`
}

func (c *Client) handleControl(ctx context.Context, r ctl.Request) (any, error) {
	switch r.Cmd {
	case CmdConference:
		if len(r.Args) < 7 {
			return nil, proto.ErrBadRequest.With("conference takes the audio arguments and at least two names")
		}
		_, opts, closeAll, err := callRequest(append([]string{""}, r.Args[:5]...), false)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		cr, err := c.Conference(ctx, r.Args[5:], opts)
		for _, l := range cr.Legs {
			c.phone.recordReport(l)
		}
		if err != nil && len(cr.Legs) == 0 {
			return nil, err
		}
		return cr, nil
	case CmdCall, CmdAnswer:
		// A call lasts as long as it lasts: the command's own connection bounds it.
		target, opts, closeAll, err := callRequest(r.Args, r.Cmd == CmdAnswer)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		var rep CallReport
		if r.Cmd == CmdCall {
			rep, err = c.Call(ctx, target, opts)
		} else {
			rep, err = c.Answer(ctx, target, opts)
		}
		// A call that never began (nothing rang, no such user, offline) leaves no
		// report: the command fails with what went wrong.
		if rep.Call == "" {
			if err == nil {
				err = errors.New("the call did not start")
			}
			return nil, err
		}
		c.phone.recordReport(rep)
		return rep, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	arg := func() (string, error) {
		if len(r.Args) != 1 {
			return "", proto.ErrBadRequest.With("%s takes exactly one name", r.Cmd)
		}
		return r.Args[0], nil
	}
	switch r.Cmd {
	case CmdStatus:
		return c.Status(), nil
	case CmdHostCache:
		return c.cache.Ranked(), nil
	case CmdBuddyList:
		m, err := c.loginCall(ctx, &proto.BuddyList{})
		if err != nil {
			return nil, err
		}
		return m, nil
	case CmdBuddyAdd, CmdBuddyRemove, CmdBuddyBlock, CmdBuddyUnblock:
		name, err := arg()
		if err != nil {
			return nil, err
		}
		var m proto.Message
		switch r.Cmd {
		case CmdBuddyAdd:
			m = &proto.BuddyAdd{Name: name}
		case CmdBuddyRemove:
			m = &proto.BuddyRemove{Name: name}
		default:
			m = &proto.BuddyBlock{Name: name, Blocked: r.Cmd == CmdBuddyBlock}
		}
		if _, err := c.loginCall(ctx, m); err != nil {
			return nil, err
		}
		c.overlayChanged(ctx)
		return map[string]string{"done": r.Cmd, "name": name}, nil
	case CmdSearch:
		q, err := arg()
		if err != nil {
			return nil, err
		}
		return c.Search(ctx, q)
	case CmdMsg:
		if len(r.Args) != 2 {
			return nil, proto.ErrBadRequest.With("msg takes a name and a text")
		}
		if err := c.Message(ctx, r.Args[0], r.Args[1]); err != nil {
			return nil, err
		}
		return map[string]string{"sent": r.Args[0]}, nil
	case CmdInbox:
		return c.Inbox(), nil
	case CmdReject:
		id, err := arg()
		if err != nil {
			return nil, err
		}
		return map[string]string{"rejected": id}, c.Reject(ctx, id)
	case CmdHangup:
		id := ""
		if len(r.Args) > 0 {
			id = r.Args[0]
		}
		rejected, err := c.Hangup(id)
		if rejected {
			return map[string]string{"rejected": id}, err
		}
		return map[string]string{"hung_up": id}, err
	case CmdHold:
		if len(r.Args) < 1 || (r.Args[0] != "on" && r.Args[0] != "off") {
			return nil, proto.ErrBadRequest.With("hold takes on or off, then an optional call id")
		}
		id := ""
		if len(r.Args) > 1 {
			id = r.Args[1]
		}
		return map[string]string{"hold": r.Args[0]}, c.Hold(id, r.Args[0] == "on")
	case CmdCalls:
		return CallsStatus{Ringing: c.Ringing(), Active: c.Active(), Reports: c.Reports()}, nil
	}
	return nil, proto.ErrBadRequest.With("unknown command %q", r.Cmd)
}
