package loginsrv

import (
	"context"
	"errors"
	"time"
)

// Errors returned by a Store. Implementations return them unwrapped or wrapped with %w, so
// callers test with errors.Is.
var (
	// ErrUserExists means CreateUser found the name taken; the user should pick another.
	ErrUserExists = errors.New("loginsrv: user already exists")
	// ErrNoSuchUser means the named user (or one of the two named users) is not registered.
	ErrNoSuchUser = errors.New("loginsrv: no such user")
)

// User is one account as the login server stores it.
type User struct {
	Name     string
	PassHash []byte    // encoded argon2id hash (see password.go), never the password
	Created  time.Time // when the account was registered
	LastSeen time.Time // zero = never logged in
}

// Buddy is one entry of a user's contact list. A user who was blocked without having been
// added first still gets an entry, with Blocked set, so that the block is stored somewhere.
type Buddy struct {
	Name    string
	Blocked bool      // the list's owner refuses calls and presence from this user
	Added   time.Time // when the entry was created (by AddBuddy or by a first block)
}

// SupernodeRecord is what the login server knows about a registered supernode; it feeds
// the host-cache seeds that clients download.
type SupernodeRecord struct {
	ID            string    // stable id: base64 of the supernode's ed25519 public key
	Addr          string    // host:port of its control listener
	Since         time.Time // when it came up (reported by the supernode)
	FirstSeen     time.Time // first registration at this server
	LastHeartbeat time.Time // last registration or heartbeat; liveness is judged on it
	// Left is when it left the login server's list (it said so, its connection closed
	// or it went unheard); zero while it is on the list. A restarted login server
	// lists again the rows that had not left (Server.Run).
	Left time.Time
}

// Store is what the login server needs from persistent storage. The default is SQLite; a
// PostgreSQL implementation can satisfy the same interface later. All methods are safe for
// concurrent use. A write that returned nil is durable (survives SIGKILL of the process).
//
// The store does not validate names: the server enforces the name rules before it calls in.
// Names compare byte for byte (case matters). Times come back in UTC with nanosecond
// precision and without a monotonic clock reading; compare them with time.Time.Equal.
type Store interface {
	// CreateUser adds u. It returns ErrUserExists if the name is taken.
	CreateUser(ctx context.Context, u User) error
	// User returns the named user or ErrNoSuchUser.
	User(ctx context.Context, name string) (User, error)
	// TouchUser sets the user's LastSeen to seen; ErrNoSuchUser if there is no such user.
	TouchUser(ctx context.Context, name string, seen time.Time) error
	// TouchUsers sets LastSeen of each named user, in one transaction; names without an
	// account (deleted meanwhile) are skipped.
	TouchUsers(ctx context.Context, seen map[string]time.Time) error
	// SearchUsers returns the users whose names start with prefix (byte-wise, case-sensitive,
	// no wildcards: '_' and '%' match only themselves), sorted by name, at most limit of
	// them; limit <= 0 returns none. prefix "" is allowed but the server never sends it.
	SearchUsers(ctx context.Context, prefix string, limit int) ([]User, error)
	// AddBuddy puts buddy on owner's list. Adding an existing entry changes nothing (not
	// even its Blocked flag). ErrNoSuchUser if either user is missing.
	AddBuddy(ctx context.Context, owner, buddy string, now time.Time) error
	// RemoveBuddy deletes buddy from owner's list, block included. Removing an absent entry
	// is not an error.
	RemoveBuddy(ctx context.Context, owner, buddy string) error
	// SetBlocked sets whether owner blocks other. Blocking someone not on the list adds an
	// entry with Blocked=true (Added=now); unblocking keeps the entry as a plain buddy.
	// ErrNoSuchUser if either user is missing.
	SetBlocked(ctx context.Context, owner, other string, blocked bool, now time.Time) error
	// Buddies returns owner's list sorted by name; an unknown owner has an empty list.
	Buddies(ctx context.Context, owner string) ([]Buddy, error)
	// IsBlocked reports whether owner has blocked other. Unknown users are not blocked.
	IsBlocked(ctx context.Context, owner, other string) (bool, error)
	// UpsertSupernode inserts r, or updates Addr, Since, LastHeartbeat and Left of the existing
	// row with r.ID and keeps its FirstSeen. A new row takes r.FirstSeen, or
	// r.LastHeartbeat when r.FirstSeen is zero.
	UpsertSupernode(ctx context.Context, r SupernodeRecord) error
	// UpsertSupernodes is UpsertSupernode for each of rs, in one transaction.
	UpsertSupernodes(ctx context.Context, rs []SupernodeRecord) error
	// Supernodes returns the rows with LastHeartbeat >= liveSince and a zero Left,
	// longest-lived first (Since ascending, then ID), at most limit of them; limit <= 0
	// returns none.
	Supernodes(ctx context.Context, liveSince time.Time, limit int) ([]SupernodeRecord, error)
	// Close releases the store. It is idempotent; other methods fail after it.
	Close() error
}
