package loginsrv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver (pure Go, no cgo)
)

// SQLiteStore is the default Store: one SQLite database file, in WAL mode with
// synchronous=FULL, so that a write that returned nil has been fsynced to the write-ahead
// log and survives a crash of the process or the machine.
//
// It holds two connection pools on the same file. All writes go through a single
// connection, so they queue in Go (fairly, honouring each caller's context) instead of
// spinning in SQLite's busy handler, and every write transaction starts with BEGIN
// IMMEDIATE so it never has to upgrade a read lock. Reads use a separate read-only pool;
// WAL lets them run beside the writer, and each read sees every write that had returned
// before it started.
type SQLiteStore struct {
	w *sql.DB // exactly one connection; every write goes through it
	r *sql.DB // read-only pool (query_only); never writes

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*SQLiteStore)(nil)

const (
	// sqliteBusyTimeout is how long a statement waits for a lock held by another connection
	// (a reader during a checkpoint, or another process such as a backup) before failing.
	sqliteBusyTimeout = 5 * time.Second
	// sqliteFileMode is the mode of the database file and its -wal and -shm companions:
	// they hold password hashes.
	sqliteFileMode = 0o600
)

// sqliteMigrations are the schema versions in order: entry i takes the database from
// version i to version i+1. Never edit an entry that has shipped; append a new one.
var sqliteMigrations = [][]string{
	// 1: users, buddy lists, supernode registry. Times are unix nanoseconds (UTC); NULL is
	// the zero time.Time ("never"). Names compare byte-wise (BINARY collation).
	{
		`CREATE TABLE users (
			name      TEXT    NOT NULL PRIMARY KEY,
			pass_hash BLOB    NOT NULL,
			created   INTEGER,
			last_seen INTEGER
		) STRICT, WITHOUT ROWID`,
		`CREATE TABLE buddies (
			owner   TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
			buddy   TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
			blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
			added   INTEGER,
			PRIMARY KEY (owner, buddy)
		) STRICT, WITHOUT ROWID`,
		// Foreign keys need an index on the child column to check parent deletes cheaply.
		`CREATE INDEX buddies_by_buddy ON buddies (buddy)`,
		`CREATE TABLE supernodes (
			id             TEXT NOT NULL PRIMARY KEY,
			addr           TEXT NOT NULL,
			since          INTEGER,
			first_seen     INTEGER,
			last_heartbeat INTEGER
		) STRICT, WITHOUT ROWID`,
		`CREATE INDEX supernodes_by_heartbeat ON supernodes (last_heartbeat)`,
	},
	// 2: when a supernode left the list (NULL: on it), so that a restarted server lists
	// again only those that had not.
	{
		`ALTER TABLE supernodes ADD COLUMN left_at INTEGER`,
	},
}

// OpenSQLite opens the SQLite database at path, creating the file (mode 0600) and the schema
// if needed, and migrating an older schema to the current version. path must name a file;
// its directory must exist. An existing file whose mode lets group or others in is
// tightened to 0600, because it holds password hashes. A database written by a newer
// Peerline (a higher schema version) is refused rather than guessed at.
func OpenSQLite(path string) (*SQLiteStore, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("loginsrv: sqlite: %q is not a file path; give the path of the database file, e.g. /var/lib/peerline/login.db", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: %w", err)
	}
	if err := sqlitePrepareFiles(abs); err != nil {
		return nil, err
	}

	w, err := sql.Open("sqlite", sqliteDSN(abs, false))
	if err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: open %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	r, err := sql.Open("sqlite", sqliteDSN(abs, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("loginsrv: sqlite: open %s: %w", abs, err)
	}
	// Each connection carries its own page cache; a small bounded pool is plenty when
	// every login also costs an argon2 hash.
	readers := max(4, 2*runtime.NumCPU())
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)

	s := &SQLiteStore{w: w, r: r}
	ctx := context.Background()
	if err := s.sqliteCheckWriter(ctx, abs); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.sqliteMigrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// sqliteDSN builds the driver's DSN for the file at abs. The path goes into a file: URI so
// that characters such as '?' or '#' in it cannot be mistaken for parameters.
func sqliteDSN(abs string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows: C:/x -> /C:/x, as SQLite's URI rules expect
	}
	u := url.URL{Scheme: "file", Path: p, RawQuery: q.Encode()}
	return u.String()
}

// sqlitePrepareFiles creates the database file with mode 0600 before SQLite does (SQLite
// would use 0644 less the umask; its -wal and -shm files copy the database file's mode),
// and tightens the mode of existing files that let group or others in.
func sqlitePrepareFiles(abs string) error {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, sqliteFileMode)
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: %w (does the directory exist and is it writable?)", err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("loginsrv: sqlite: %s is not a regular file", abs)
	}
	for _, p := range []string{abs, abs + "-wal", abs + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("loginsrv: sqlite: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, sqliteFileMode); err != nil {
				return fmt.Errorf("loginsrv: sqlite: %s holds password hashes and is readable by others, and tightening it failed: %w (chmod 600 it)", p, err)
			}
		}
	}
	return nil
}

// sqliteCheckWriter makes sure the writer connection got the settings durability depends
// on; SQLite ignores some pragmas silently (WAL is refused on some network file systems).
func (s *SQLiteStore) sqliteCheckWriter(ctx context.Context, abs string) error {
	var mode string
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("loginsrv: sqlite: open %s: %w", abs, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("loginsrv: sqlite: %s: journal mode is %q, not wal; put the database on a local file system", abs, mode)
	}
	var syncMode, fk int
	if err := s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&syncMode); err != nil {
		return fmt.Errorf("loginsrv: sqlite: %w", err)
	}
	if err := s.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
		return fmt.Errorf("loginsrv: sqlite: %w", err)
	}
	if syncMode != 2 || fk != 1 {
		return fmt.Errorf("loginsrv: sqlite: connection settings not applied (synchronous=%d, foreign_keys=%d); this is a bug", syncMode, fk)
	}
	return nil
}

// sqliteMigrate brings the schema to len(sqliteMigrations) in one transaction, so a crash
// mid-way leaves the previous version intact.
func (s *SQLiteStore) sqliteMigrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
		version INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("loginsrv: sqlite: migrate: %w", err)
	}
	var v int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("loginsrv: sqlite: migrate: %w", err)
	}
	want := len(sqliteMigrations)
	switch {
	case v == want:
		return nil
	case v > want || v < 0:
		return fmt.Errorf("loginsrv: sqlite: database schema version %d is newer than this binary understands (%d); run a newer peerline", v, want)
	}
	for i := v; i < want; i++ {
		for _, stmt := range sqliteMigrations[i] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("loginsrv: sqlite: migrate to version %d: %w", i+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (id, version) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET version = excluded.version`, want); err != nil {
		return fmt.Errorf("loginsrv: sqlite: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("loginsrv: sqlite: migrate: %w", err)
	}
	return nil
}

// Close closes both connection pools. The last connection to close checkpoints the WAL into
// the database file. Close is idempotent.
func (s *SQLiteStore) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// CreateUser implements Store.
func (s *SQLiteStore) CreateUser(ctx context.Context, u User) error {
	if len(u.PassHash) == 0 {
		return fmt.Errorf("loginsrv: sqlite: create user %q: empty password hash", u.Name)
	}
	created, err := sqliteTime(u.Created)
	if err != nil {
		return err
	}
	seen, err := sqliteTime(u.LastSeen)
	if err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO users (name, pass_hash, created, last_seen)
		VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`, u.Name, u.PassHash, created, seen)
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: create user %q: %w", u.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: create user %q: %w", u.Name, err)
	}
	if n == 0 {
		return ErrUserExists
	}
	return nil
}

// User implements Store.
func (s *SQLiteStore) User(ctx context.Context, name string) (User, error) {
	var (
		u             User
		created, seen sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `SELECT name, pass_hash, created, last_seen FROM users WHERE name = ?`, name).
		Scan(&u.Name, &u.PassHash, &created, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNoSuchUser
	}
	if err != nil {
		return User{}, fmt.Errorf("loginsrv: sqlite: user %q: %w", name, err)
	}
	u.Created, u.LastSeen = sqliteFromTime(created), sqliteFromTime(seen)
	return u, nil
}

// TouchUser implements Store.
func (s *SQLiteStore) TouchUser(ctx context.Context, name string, seen time.Time) error {
	t, err := sqliteTime(seen)
	if err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `UPDATE users SET last_seen = ? WHERE name = ?`, t, name)
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: touch user %q: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: touch user %q: %w", name, err)
	}
	if n == 0 {
		return ErrNoSuchUser
	}
	return nil
}

// TouchUsers implements Store.
func (s *SQLiteStore) TouchUsers(ctx context.Context, seen map[string]time.Time) error {
	return s.sqliteWriteTx(ctx, "touch users", func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `UPDATE users SET last_seen = ? WHERE name = ?`)
		if err != nil {
			return err
		}
		defer st.Close()
		for name, when := range seen {
			t, err := sqliteTime(when)
			if err != nil {
				return err
			}
			if _, err := st.ExecContext(ctx, t, name); err != nil {
				return err
			}
		}
		return nil
	})
}

// SearchUsers implements Store. The returned users have PassHash nil: the directory never
// needs it, and leaving it out keeps hashes off the search path.
//
// The prefix match is a range scan on the primary key (name >= prefix AND name < next),
// which is exact for byte-wise comparison, treats '_' and '%' as ordinary characters and,
// unlike LIKE (case-insensitive in SQLite), can use the index.
func (s *SQLiteStore) SearchUsers(ctx context.Context, prefix string, limit int) ([]User, error) {
	if limit <= 0 {
		return nil, nil
	}
	const cols = `SELECT name, created, last_seen FROM users `
	var (
		rows *sql.Rows
		err  error
	)
	if hi, ok := sqlitePrefixEnd(prefix); ok {
		rows, err = s.r.QueryContext(ctx, cols+`WHERE name >= ? AND name < ? ORDER BY name LIMIT ?`, prefix, hi, limit)
	} else {
		rows, err = s.r.QueryContext(ctx, cols+`WHERE name >= ? ORDER BY name LIMIT ?`, prefix, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: search users %q: %w", prefix, err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var (
			u             User
			created, seen sql.NullInt64
		)
		if err := rows.Scan(&u.Name, &created, &seen); err != nil {
			return nil, fmt.Errorf("loginsrv: sqlite: search users %q: %w", prefix, err)
		}
		u.Created, u.LastSeen = sqliteFromTime(created), sqliteFromTime(seen)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: search users %q: %w", prefix, err)
	}
	return out, nil
}

// sqlitePrefixEnd returns the smallest string greater than every string that starts with
// prefix, or ok=false if there is none (prefix empty or all 0xff bytes).
func sqlitePrefixEnd(prefix string) (end string, ok bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// AddBuddy implements Store.
func (s *SQLiteStore) AddBuddy(ctx context.Context, owner, buddy string, now time.Time) error {
	added, err := sqliteTime(now)
	if err != nil {
		return err
	}
	return s.sqliteWriteTx(ctx, "add buddy", func(tx *sql.Tx) error {
		if err := sqliteUsersExist(ctx, tx, owner, buddy); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO buddies (owner, buddy, blocked, added)
			VALUES (?, ?, 0, ?) ON CONFLICT (owner, buddy) DO NOTHING`, owner, buddy, added)
		return err
	})
}

// RemoveBuddy implements Store.
func (s *SQLiteStore) RemoveBuddy(ctx context.Context, owner, buddy string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM buddies WHERE owner = ? AND buddy = ?`, owner, buddy); err != nil {
		return fmt.Errorf("loginsrv: sqlite: remove buddy: %w", err)
	}
	return nil
}

// SetBlocked implements Store.
func (s *SQLiteStore) SetBlocked(ctx context.Context, owner, other string, blocked bool, now time.Time) error {
	added, err := sqliteTime(now)
	if err != nil {
		return err
	}
	return s.sqliteWriteTx(ctx, "set blocked", func(tx *sql.Tx) error {
		if err := sqliteUsersExist(ctx, tx, owner, other); err != nil {
			return err
		}
		if blocked {
			_, err := tx.ExecContext(ctx, `INSERT INTO buddies (owner, buddy, blocked, added)
				VALUES (?, ?, 1, ?) ON CONFLICT (owner, buddy) DO UPDATE SET blocked = 1`, owner, other, added)
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE buddies SET blocked = 0 WHERE owner = ? AND buddy = ?`, owner, other)
		return err
	})
}

// Buddies implements Store.
func (s *SQLiteStore) Buddies(ctx context.Context, owner string) ([]Buddy, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT buddy, blocked, added FROM buddies WHERE owner = ? ORDER BY buddy`, owner)
	if err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: buddies of %q: %w", owner, err)
	}
	defer rows.Close()
	var out []Buddy
	for rows.Next() {
		var (
			b     Buddy
			added sql.NullInt64
		)
		if err := rows.Scan(&b.Name, &b.Blocked, &added); err != nil {
			return nil, fmt.Errorf("loginsrv: sqlite: buddies of %q: %w", owner, err)
		}
		b.Added = sqliteFromTime(added)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: buddies of %q: %w", owner, err)
	}
	return out, nil
}

// IsBlocked implements Store.
func (s *SQLiteStore) IsBlocked(ctx context.Context, owner, other string) (bool, error) {
	var blocked bool
	err := s.r.QueryRowContext(ctx, `SELECT blocked FROM buddies WHERE owner = ? AND buddy = ?`, owner, other).Scan(&blocked)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("loginsrv: sqlite: is blocked: %w", err)
	}
	return blocked, nil
}

// UpsertSupernode implements Store.
func (s *SQLiteStore) UpsertSupernode(ctx context.Context, r SupernodeRecord) error {
	return s.UpsertSupernodes(ctx, []SupernodeRecord{r})
}

// UpsertSupernodes implements Store.
func (s *SQLiteStore) UpsertSupernodes(ctx context.Context, rs []SupernodeRecord) error {
	return s.sqliteWriteTx(ctx, "upsert supernodes", func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO supernodes (id, addr, since, first_seen, last_heartbeat, left_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET
				addr = excluded.addr, since = excluded.since, last_heartbeat = excluded.last_heartbeat,
				left_at = excluded.left_at`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, r := range rs {
			first := r.FirstSeen
			if first.IsZero() {
				first = r.LastHeartbeat
			}
			var ts [4]sql.NullInt64
			for i, t := range []time.Time{r.Since, first, r.LastHeartbeat, r.Left} {
				v, err := sqliteTime(t)
				if err != nil {
					return err
				}
				ts[i] = v
			}
			if _, err := st.ExecContext(ctx, r.ID, r.Addr, ts[0], ts[1], ts[2], ts[3]); err != nil {
				return fmt.Errorf("supernode %q: %w", r.ID, err)
			}
		}
		return nil
	})
}

// Supernodes implements Store. Rows with an unknown (zero) Since sort last: nothing says
// they are long-lived.
func (s *SQLiteStore) Supernodes(ctx context.Context, liveSince time.Time, limit int) ([]SupernodeRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	since, err := sqliteTime(liveSince)
	if err != nil {
		return nil, err
	}
	if !since.Valid { // zero liveSince: every row that ever sent a heartbeat
		since = sql.NullInt64{Int64: math.MinInt64, Valid: true}
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, addr, since, first_seen, last_heartbeat FROM supernodes
		WHERE last_heartbeat >= ? AND left_at IS NULL ORDER BY since IS NULL, since, id LIMIT ?`, since, limit)
	if err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: supernodes: %w", err)
	}
	defer rows.Close()
	var out []SupernodeRecord
	for rows.Next() {
		var (
			r       SupernodeRecord
			ts      [3]sql.NullInt64
			targets = []*time.Time{&r.Since, &r.FirstSeen, &r.LastHeartbeat}
		)
		if err := rows.Scan(&r.ID, &r.Addr, &ts[0], &ts[1], &ts[2]); err != nil {
			return nil, fmt.Errorf("loginsrv: sqlite: supernodes: %w", err)
		}
		for i, p := range targets {
			*p = sqliteFromTime(ts[i])
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("loginsrv: sqlite: supernodes: %w", err)
	}
	return out, nil
}

// sqliteWriteTx runs fn in a write transaction (BEGIN IMMEDIATE, see the writer's DSN) and
// commits it; errors other than the package's sentinel errors are wrapped with op.
func (s *SQLiteStore) sqliteWriteTx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("loginsrv: sqlite: %s: %w", op, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		if errors.Is(err, ErrNoSuchUser) {
			return err
		}
		return fmt.Errorf("loginsrv: sqlite: %s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("loginsrv: sqlite: %s: %w", op, err)
	}
	return nil
}

// sqliteUsersExist returns ErrNoSuchUser unless every named user exists.
func sqliteUsersExist(ctx context.Context, tx *sql.Tx, names ...string) error {
	for _, n := range names {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE name = ?`, n).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNoSuchUser
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sqliteMinTime and sqliteMaxTime bound what fits in int64 unix nanoseconds (years 1678 to
// 2262).
var (
	sqliteMinTime = time.Unix(0, math.MinInt64)
	sqliteMaxTime = time.Unix(0, math.MaxInt64)
)

// sqliteTime encodes t as unix nanoseconds. The zero time becomes NULL, so "never" survives
// the round trip (UnixNano of the zero time is undefined).
func sqliteTime(t time.Time) (sql.NullInt64, error) {
	if t.IsZero() {
		return sql.NullInt64{}, nil
	}
	if t.Before(sqliteMinTime) || t.After(sqliteMaxTime) {
		return sql.NullInt64{}, fmt.Errorf("loginsrv: sqlite: time %v cannot be stored (years 1678 to 2262 only)", t)
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}, nil
}

// sqliteFromTime decodes what sqliteTime stored, in UTC.
func sqliteFromTime(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
