// Package loginsrv is Peerline's login server: the one central piece of the overlay, kept
// as small as Skype kept its own.
//
// It owns accounts (names and argon2id password hashes; passwords arrive only inside TLS
// to a server whose key the client pinned), issues credentials (identity.Credential: the
// user's name and public key, signed, with an expiry) so that everyone else can check
// identities offline, keeps buddy lists, answers the directory look-ups that back up
// overlay search ("exists, last seen at T" / "no such user", exact or "al*" prefix), admits
// supernodes and lists the live ones, longest-lived first, as the seed of clients' host
// caches.
//
// Load is shed, never absorbed: argon2 runs under a concurrency bound and callers beyond
// it get busy-with-retry-after; failed logins are rate limited per name and per source
// address; clients that restart within their credential's lifetime Resume without a
// password, so a boot storm costs signature checks, not password hashes.
//
// Storage sits behind the Store interface; SQLite (modernc.org/sqlite, no cgo) is the
// default, with synchronous commits so that an acknowledged registration survives SIGKILL.
package loginsrv
