package loginsrv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// sqliteT0 is the fixed origin of the times used in these tests.
var sqliteT0 = time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)

func openTestStore(t testing.TB) (*SQLiteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "login.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func mustCreate(t testing.TB, s Store, names ...string) {
	t.Helper()
	for _, n := range names {
		u := User{Name: n, PassHash: []byte("hash-of-" + n), Created: sqliteT0}
		if err := s.CreateUser(context.Background(), u); err != nil {
			t.Fatalf("CreateUser(%q): %v", n, err)
		}
	}
}

func userNames(us []User) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Name)
	}
	return out
}

func TestSQLiteUsers(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)

	in := User{Name: "alice", PassHash: []byte("$argon2id$v=19$x"), Created: sqliteT0.In(time.FixedZone("X", 3600))}
	if err := s.CreateUser(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.User(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "alice" || string(got.PassHash) != string(in.PassHash) || !got.Created.Equal(sqliteT0) ||
		got.Created.Location() != time.UTC || !got.LastSeen.IsZero() {
		t.Fatalf("User = %+v, want alice created %v (UTC), never seen", got, sqliteT0)
	}

	dup := User{Name: "alice", PassHash: []byte("other"), Created: sqliteT0.Add(time.Hour)}
	if err := s.CreateUser(ctx, dup); !errors.Is(err, ErrUserExists) {
		t.Fatalf("duplicate CreateUser: %v, want ErrUserExists", err)
	}
	if got, _ := s.User(ctx, "alice"); string(got.PassHash) != string(in.PassHash) {
		t.Fatalf("duplicate CreateUser overwrote the hash: %q", got.PassHash)
	}
	// Names are case-sensitive at the store; the server normalises them.
	if err := s.CreateUser(ctx, User{Name: "Alice", PassHash: []byte("h")}); err != nil {
		t.Fatalf("CreateUser(Alice): %v", err)
	}
	if err := s.CreateUser(ctx, User{Name: "bob"}); err == nil {
		t.Fatal("CreateUser without a hash succeeded")
	}

	if _, err := s.User(ctx, "nobody"); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("User(nobody): %v, want ErrNoSuchUser", err)
	}

	seen := sqliteT0.Add(90 * time.Minute)
	if err := s.TouchUser(ctx, "alice", seen); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.User(ctx, "alice"); !got.LastSeen.Equal(seen) {
		t.Fatalf("LastSeen = %v, want %v", got.LastSeen, seen)
	}
	// Touching twice with the same time still finds the user.
	if err := s.TouchUser(ctx, "alice", seen); err != nil {
		t.Fatalf("second TouchUser: %v", err)
	}
	if err := s.TouchUser(ctx, "nobody", seen); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("TouchUser(nobody): %v, want ErrNoSuchUser", err)
	}
	if err := s.TouchUser(ctx, "alice", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Fatal("TouchUser with a time past 2262 succeeded")
	}
	// A batch sets every named user in one go and skips names without an account.
	later := seen.Add(time.Hour)
	if err := s.TouchUsers(ctx, map[string]time.Time{"alice": later, "gone": later}); err != nil {
		t.Fatalf("TouchUsers: %v", err)
	}
	if got, _ := s.User(ctx, "alice"); !got.LastSeen.Equal(later) {
		t.Fatalf("LastSeen after TouchUsers = %v, want %v", got.LastSeen, later)
	}
	if err := s.TouchUsers(ctx, map[string]time.Time{"alice": time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Fatal("TouchUsers with a time past 2262 succeeded")
	}
	if got, _ := s.User(ctx, "alice"); !got.LastSeen.Equal(later) {
		t.Fatalf("a failed batch changed LastSeen to %v", got.LastSeen)
	}
}

func TestSQLiteSearchUsers(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	mustCreate(t, s, "sal", "sally", "salim", "sal_x", "salAx", "sal%y", "salt", "sam", "Sal", "sa", "s\xffz", "s\xff\xff")

	tests := []struct {
		prefix string
		limit  int
		want   []string
	}{
		{"sal", 10, []string{"sal", "sal%y", "salAx", "sal_x", "salim", "sally", "salt"}},
		{"sal", 3, []string{"sal", "sal%y", "salAx"}},
		{"sal_", 10, []string{"sal_x"}}, // '_' is not a wildcard
		{"sal%", 10, []string{"sal%y"}}, // nor is '%'
		{"%", 10, nil},
		{"_", 10, nil},
		{"Sal", 10, []string{"Sal"}}, // case-sensitive
		{"salt", 10, []string{"salt"}},
		{"salty", 10, nil},
		{"zzz", 10, nil},
		{"s\xff", 10, []string{"s\xffz", "s\xff\xff"}}, // prefix whose successor carries
		{"", 3, []string{"Sal", "sa", "sal"}},          // everything, in byte order
		{"sal", 0, nil},
		{"sal", -1, nil},
	}
	for _, tc := range tests {
		got, err := s.SearchUsers(ctx, tc.prefix, tc.limit)
		if err != nil {
			t.Fatalf("SearchUsers(%q, %d): %v", tc.prefix, tc.limit, err)
		}
		if !slices.Equal(userNames(got), tc.want) {
			t.Errorf("SearchUsers(%q, %d) = %q, want %q", tc.prefix, tc.limit, userNames(got), tc.want)
		}
		for _, u := range got {
			if u.PassHash != nil || !u.Created.Equal(sqliteT0) {
				t.Errorf("SearchUsers result %+v: want no hash and Created %v", u, sqliteT0)
			}
		}
	}
}

func TestSQLiteSearchUsesIndex(t *testing.T) {
	s, _ := openTestStore(t)
	rows, err := s.r.Query(`EXPLAIN QUERY PLAN SELECT name FROM users WHERE name >= ? AND name < ? ORDER BY name LIMIT ?`, "a", "b", 5)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	p := strings.Join(plan, "; ")
	t.Logf("plan: %s", p)
	if !strings.Contains(p, "SEARCH") || strings.Contains(p, "TEMP B-TREE") {
		t.Fatalf("prefix search does not use the primary key: %s", p)
	}
}

func TestSQLiteBuddies(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	mustCreate(t, s, "ann", "bob", "cat", "dan")
	t1, t2 := sqliteT0.Add(time.Minute), sqliteT0.Add(2*time.Minute)

	wantBuddies := func(owner string, want ...Buddy) {
		t.Helper()
		got, err := s.Buddies(ctx, owner)
		if err != nil {
			t.Fatal(err)
		}
		ok := len(got) == len(want)
		for i := 0; ok && i < len(got); i++ {
			ok = got[i].Name == want[i].Name && got[i].Blocked == want[i].Blocked && got[i].Added.Equal(want[i].Added)
		}
		if !ok {
			t.Fatalf("Buddies(%s) = %+v, want %+v", owner, got, want)
		}
	}
	wantBlocked := func(owner, other string, want bool) {
		t.Helper()
		got, err := s.IsBlocked(ctx, owner, other)
		if err != nil || got != want {
			t.Fatalf("IsBlocked(%s, %s) = %v, %v; want %v", owner, other, got, err, want)
		}
	}

	wantBuddies("ann")
	if err := s.AddBuddy(ctx, "ann", "cat", t1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddBuddy(ctx, "ann", "bob", t1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddBuddy(ctx, "ann", "bob", t2); err != nil { // idempotent, keeps Added
		t.Fatalf("second AddBuddy: %v", err)
	}
	wantBuddies("ann", Buddy{"bob", false, t1}, Buddy{"cat", false, t1})
	wantBuddies("bob") // lists are one-way

	for _, pair := range [][2]string{{"ann", "zed"}, {"zed", "ann"}} {
		if err := s.AddBuddy(ctx, pair[0], pair[1], t1); !errors.Is(err, ErrNoSuchUser) {
			t.Fatalf("AddBuddy(%s, %s): %v, want ErrNoSuchUser", pair[0], pair[1], err)
		}
		if err := s.SetBlocked(ctx, pair[0], pair[1], true, t1); !errors.Is(err, ErrNoSuchUser) {
			t.Fatalf("SetBlocked(%s, %s): %v, want ErrNoSuchUser", pair[0], pair[1], err)
		}
	}

	// Block a buddy: the entry stays, flagged; unblock keeps it.
	wantBlocked("ann", "bob", false)
	if err := s.SetBlocked(ctx, "ann", "bob", true, t2); err != nil {
		t.Fatal(err)
	}
	wantBlocked("ann", "bob", true)
	wantBlocked("bob", "ann", false) // blocking is one-way
	wantBuddies("ann", Buddy{"bob", true, t1}, Buddy{"cat", false, t1})
	if err := s.SetBlocked(ctx, "ann", "bob", true, t2); err != nil { // idempotent
		t.Fatal(err)
	}
	// Adding a blocked buddy again does not unblock.
	if err := s.AddBuddy(ctx, "ann", "bob", t2); err != nil {
		t.Fatal(err)
	}
	wantBlocked("ann", "bob", true)
	if err := s.SetBlocked(ctx, "ann", "bob", false, t2); err != nil {
		t.Fatal(err)
	}
	wantBlocked("ann", "bob", false)
	wantBuddies("ann", Buddy{"bob", false, t1}, Buddy{"cat", false, t1})

	// Block a stranger: a new entry with Blocked=true and Added=now.
	if err := s.SetBlocked(ctx, "ann", "dan", true, t2); err != nil {
		t.Fatal(err)
	}
	wantBlocked("ann", "dan", true)
	wantBuddies("ann", Buddy{"bob", false, t1}, Buddy{"cat", false, t1}, Buddy{"dan", true, t2})
	// Unblocking a stranger who was never listed adds nothing.
	if err := s.SetBlocked(ctx, "bob", "cat", false, t2); err != nil {
		t.Fatal(err)
	}
	wantBuddies("bob")

	// Remove, blocked or not; idempotent.
	for _, b := range []string{"dan", "dan", "cat", "zed"} {
		if err := s.RemoveBuddy(ctx, "ann", b); err != nil {
			t.Fatalf("RemoveBuddy(ann, %s): %v", b, err)
		}
	}
	wantBlocked("ann", "dan", false)
	wantBuddies("ann", Buddy{"bob", false, t1})
	wantBuddies("zed")
	wantBlocked("zed", "ann", false)
}

func TestSQLiteSupernodes(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	at := func(m int) time.Time { return sqliteT0.Add(time.Duration(m) * time.Minute) }
	recs := []SupernodeRecord{
		{ID: "c", Addr: "10.0.0.3:4000", Since: at(-60), FirstSeen: at(0), LastHeartbeat: at(0)},
		{ID: "a", Addr: "10.0.0.1:4000", Since: at(-10), FirstSeen: at(0), LastHeartbeat: at(0)},
		{ID: "b", Addr: "10.0.0.2:4000", Since: at(-60), FirstSeen: at(0), LastHeartbeat: at(0)},
		{ID: "d", Addr: "10.0.0.4:4000", Since: at(-500), FirstSeen: at(0), LastHeartbeat: at(-30)}, // stale
		{ID: "e", Addr: "10.0.0.5:4000", FirstSeen: at(0), LastHeartbeat: at(0)},                    // Since unknown
	}
	for _, r := range recs {
		if err := s.UpsertSupernode(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(liveSince time.Time, limit int) []string {
		t.Helper()
		rs, err := s.Supernodes(ctx, liveSince, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	if got, want := ids(at(-5), 10), []string{"b", "c", "a", "e"}; !slices.Equal(got, want) {
		t.Fatalf("live supernodes = %q, want %q (Since asc, then ID; d is stale)", got, want)
	}
	if got, want := ids(at(-30), 10), []string{"d", "b", "c", "a", "e"}; !slices.Equal(got, want) {
		t.Fatalf("liveSince is inclusive: got %q, want %q", got, want)
	}
	if got, want := ids(time.Time{}, 2), []string{"d", "b"}; !slices.Equal(got, want) {
		t.Fatalf("zero liveSince, limit 2: got %q, want %q", got, want)
	}
	if got := ids(at(1), 10); got != nil {
		t.Fatalf("nothing is live after the last heartbeat, got %q", got)
	}
	if got := ids(at(-5), 0); got != nil {
		t.Fatalf("limit 0 returned %q", got)
	}

	// A heartbeat from d (restarted, new address) updates Addr/Since/LastHeartbeat, keeps
	// FirstSeen even though the record carries another one.
	up := SupernodeRecord{ID: "d", Addr: "10.0.0.44:4001", Since: at(5), FirstSeen: at(5), LastHeartbeat: at(5)}
	if err := s.UpsertSupernode(ctx, up); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Supernodes(ctx, at(5), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("Supernodes(at 5) = %+v, want only d", rs)
	}
	d := rs[0]
	if d.ID != "d" || d.Addr != up.Addr || !d.Since.Equal(at(5)) || !d.LastHeartbeat.Equal(at(5)) || !d.FirstSeen.Equal(at(0)) {
		t.Fatalf("after upsert d = %+v, want addr %s since/heartbeat %v, FirstSeen %v kept", d, up.Addr, at(5), at(0))
	}
	// A new record without FirstSeen takes its heartbeat time.
	if err := s.UpsertSupernode(ctx, SupernodeRecord{ID: "f", Addr: "x:1", Since: at(6), LastHeartbeat: at(7)}); err != nil {
		t.Fatal(err)
	}
	rs, _ = s.Supernodes(ctx, at(7), 10)
	if len(rs) != 1 || !rs[0].FirstSeen.Equal(at(7)) {
		t.Fatalf("new record without FirstSeen: %+v, want FirstSeen %v", rs, at(7))
	}
	// A supernode that left is not live, however recent its heartbeat; registering
	// again (Left zero) brings it back.
	if err := s.UpsertSupernode(ctx, SupernodeRecord{ID: "f", Addr: "x:1", Since: at(6), LastHeartbeat: at(7), Left: at(8)}); err != nil {
		t.Fatal(err)
	}
	if got := ids(at(7), 10); got != nil {
		t.Fatalf("after f left: live %q, want none", got)
	}
	if err := s.UpsertSupernode(ctx, SupernodeRecord{ID: "f", Addr: "x:1", Since: at(9), LastHeartbeat: at(9)}); err != nil {
		t.Fatal(err)
	}
	if got := ids(at(7), 10); !slices.Equal(got, []string{"f"}) {
		t.Fatalf("after f registered again: live %q, want [f]", got)
	}
}

// TestSQLiteMigratesVersion1: a database of schema version 1 (before supernode rows had
// a departure time) opens at the current version with its rows intact and live.
func TestSQLiteMigratesVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "login.db")
	saved := sqliteMigrations
	sqliteMigrations = saved[:1]
	s, err := OpenSQLite(path)
	sqliteMigrations = saved
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(`INSERT INTO supernodes (id, addr, since, first_seen, last_heartbeat) VALUES ('sn', 'a:1', 1, 1, 2)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatalf("open a version 1 database: %v", err)
	}
	defer s2.Close()
	var v int
	if err := s2.r.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(sqliteMigrations) {
		t.Fatalf("schema_version = %d, %v; want %d", v, err, len(sqliteMigrations))
	}
	if rs, err := s2.Supernodes(ctx, time.Time{}, 10); err != nil || len(rs) != 1 || rs[0].Addr != "a:1" {
		t.Fatalf("rows of version 1 after the migration: %+v, %v", rs, err)
	}
}

func TestSQLiteReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub dir?#x", "login.db") // characters a DSN could trip on
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "ann", "bob")
	if err := s.AddBuddy(ctx, "ann", "bob", sqliteT0); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertSupernode(ctx, SupernodeRecord{ID: "sn", Addr: "a:1", Since: sqliteT0, LastHeartbeat: sqliteT0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.User(ctx, "ann"); err == nil {
		t.Fatal("User after Close succeeded")
	}

	s2, err := OpenSQLite(path) // migrations must not run twice
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if u, err := s2.User(ctx, "bob"); err != nil || !u.Created.Equal(sqliteT0) {
		t.Fatalf("after reopen User(bob) = %+v, %v", u, err)
	}
	if bs, err := s2.Buddies(ctx, "ann"); err != nil || len(bs) != 1 || bs[0].Name != "bob" {
		t.Fatalf("after reopen Buddies(ann) = %+v, %v", bs, err)
	}
	if rs, err := s2.Supernodes(ctx, sqliteT0, 10); err != nil || len(rs) != 1 {
		t.Fatalf("after reopen Supernodes = %+v, %v", rs, err)
	}
	var v int
	if err := s2.r.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(sqliteMigrations) {
		t.Fatalf("schema_version = %d, %v; want %d", v, err, len(sqliteMigrations))
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	s, path := openTestStore(t)
	if _, err := s.w.Exec(`UPDATE schema_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s2, err := OpenSQLite(path); err == nil {
		s2.Close()
		t.Fatal("OpenSQLite accepted a schema from the future")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("error does not say why: %v", err)
	}
}

func TestSQLiteSettingsAndFileMode(t *testing.T) {
	s, path := openTestStore(t)
	mustCreate(t, s, "ann") // makes the -wal and -shm files exist
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
	for _, db := range []struct {
		name string
		q    func(string) (string, error)
	}{
		{"writer", func(p string) (v string, err error) { err = s.w.QueryRow("PRAGMA " + p).Scan(&v); return }},
		{"reader", func(p string) (v string, err error) { err = s.r.QueryRow("PRAGMA " + p).Scan(&v); return }},
	} {
		for pragma, want := range map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1", "busy_timeout": "5000"} {
			got, err := db.q(pragma)
			if err != nil || got != want {
				t.Errorf("%s: PRAGMA %s = %q, %v; want %q", db.name, pragma, got, err, want)
			}
		}
	}
	if _, err := s.r.Exec(`DELETE FROM users`); err == nil {
		t.Error("the read pool accepted a write")
	}

	// An existing file that others can read is tightened.
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("reopened file has mode %v, want 0600", fi.Mode().Perm())
	}

	for _, bad := range []string{"", ":memory:", "file:x.db", filepath.Join(t.TempDir(), "missing", "x.db")} {
		if s, err := OpenSQLite(bad); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) succeeded", bad)
		}
	}
}

// TestSQLiteVisibleWithoutClose checks that a write is in the file (the WAL) when CreateUser
// returns: a second, independent handle sees it while the first is never closed.
func TestSQLiteVisibleWithoutClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "login.db")
	s1, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	// s1 is deliberately not closed until the end, after s2 has checked.
	defer s1.Close()
	mustCreate(t, s1, "ann")
	if err := s1.TouchUser(ctx, "ann", sqliteT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	u, err := s2.User(ctx, "ann")
	if err != nil || !u.LastSeen.Equal(sqliteT0.Add(time.Hour)) {
		t.Fatalf("second handle: User(ann) = %+v, %v", u, err)
	}
}

// TestSQLiteSurvivesSIGKILL runs a child process that creates a user, reports it, and is
// killed with SIGKILL before it can close anything; the user must then be in the database.
func TestSQLiteSurvivesSIGKILL(t *testing.T) {
	if path := os.Getenv("LOGINSRV_SQLITE_CRASH_CHILD"); path != "" {
		sqliteCrashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := filepath.Join(t.TempDir(), "login.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSQLiteSurvivesSIGKILL$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LOGINSRV_SQLITE_CRASH_CHILD="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The child waits on its stdin, which this end holds open until the child is killed:
	// if this process goes away first, the child sees the end and exits.
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill := func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) } // Kill is SIGKILL
	defer kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "written 50\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	kill()

	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 50 {
		name := fmt.Sprintf("user%02d", i)
		if _, err := s.User(context.Background(), name); err != nil {
			t.Fatalf("after SIGKILL User(%s): %v", name, err)
		}
	}
}

func sqliteCrashChild(path string) {
	s, err := OpenSQLite(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := range 50 {
		u := User{Name: fmt.Sprintf("user%02d", i), PassHash: []byte("h"), Created: sqliteT0}
		if err := s.CreateUser(context.Background(), u); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	fmt.Println("written 50")
	io.Copy(io.Discard, os.Stdin) // wait to be killed (or orphaned); never closes s
	os.Exit(3)
}

func TestSQLiteConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	mustCreate(t, s, "hub")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*3)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("w%d_%02d", w, i)
				if err := s.CreateUser(ctx, User{Name: name, PassHash: []byte("h"), Created: sqliteT0}); err != nil {
					errs <- err
				}
				if err := s.AddBuddy(ctx, "hub", name, sqliteT0); err != nil {
					errs <- err
				}
				if _, err := s.User(ctx, name); err != nil {
					errs <- fmt.Errorf("read-your-write %s: %w", name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	bs, err := s.Buddies(ctx, "hub")
	if err != nil || len(bs) != workers*each {
		t.Fatalf("Buddies(hub): %d, %v; want %d", len(bs), err, workers*each)
	}
	if !slices.IsSortedFunc(bs, func(a, b Buddy) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatal("Buddies not sorted by name")
	}
}

func TestSQLiteContextCancelled(t *testing.T) {
	s, _ := openTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.CreateUser(ctx, User{Name: "ann", PassHash: []byte("h")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateUser with cancelled ctx: %v", err)
	}
	if _, err := s.User(ctx, "ann"); !errors.Is(err, context.Canceled) {
		t.Fatalf("User with cancelled ctx: %v", err)
	}
}

// BenchmarkSQLiteUser measures the account lookup every login does, in a table of 10,000
// users.
func BenchmarkSQLiteUser(b *testing.B) {
	ctx := context.Background()
	s, _ := openTestStore(b)
	const n = 10000
	for i := range n {
		u := User{Name: fmt.Sprintf("user%05d", i), PassHash: make([]byte, 97), Created: sqliteT0}
		if err := s.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := s.User(ctx, fmt.Sprintf("user%05d", i%n)); err != nil {
			b.Fatal(err)
		}
		i += 7919
	}
}
