// Package hostcache keeps the list of supernodes a node connects to: at most
// [MaxEntries] (200, as in Skype and KaZaA) addresses, merged from the login
// server's seed and from supernodes, ranked, and persisted atomically on disk.
//
// The cache is used to connect, not to elect: it tells the client which
// supernodes to try first (and which to try in parallel); nothing in it makes
// a node a supernode.
//
// # Ranking
//
// Every entry gets one score from a single function of the entry and the clock,
// so the order is deterministic for a given time; equal scores are ordered by
// Addr. Higher is better:
//
//	score = log2(1 + min(uptime, 30 days) / 1 minute)   uptime = now - Since; unknown (zero) Since or a Since in the future counts as 0
//	      + 4   if the last success was at most 1 hour ago
//	      - 8 × Failures                                 consecutive failures since the last success
//
// Uptime comes first because it predicts availability: session lengths in P2P
// overlays are heavy-tailed, so a supernode that has been up for a week is more
// likely to still be up than one that came up ten minutes ago. Uptime counts on
// a log scale, so each doubling is worth the same (one point): a week-old
// supernode ranks above a day-old one without a month-old one burying both.
// Credit stops at 30 days, because beyond that uptime says little more, and
// because Since is reported by other nodes: the cap bounds how far a seed that
// lies about Since can push an entry.
//
// A success within the last hour is worth 4 points (16× the uptime): a node we
// reached recently beats an unverified one with somewhat longer uptime.
//
// Each consecutive failure costs 8 points (256× the uptime), so failures
// dominate: one failure puts a 30-day-old supernode (15.4 points) below a
// healthy day-old one (10.5), and two put it (without a recent success) below
// every healthy node with at least a minute of uptime. [Cache.MarkSuccess]
// clears the failures.
//
// # Ageing out
//
// An entry is removed when it has at least [Options.MaxFailures] consecutive
// failures and its last success is older than [Options.AgeOut] (or it never
// succeeded). The rule is checked by [Cache.MarkFailure] and when [Open] loads
// the file. Entries also leave when a [Cache.Merge] would grow the cache past
// MaxEntries: the worst-ranked are dropped.
//
// # Merging
//
// [Cache.Merge] takes from the reported entries only what other nodes can know:
// the address, the supernode's public key, when it came up (Since) and where the
// report came from (Source). LastSuccess, LastFailure and Failures are this
// node's own observations; Merge ignores them in its input and keeps them for
// entries it already has, so a peer cannot make its addresses look proven.
//
// Addresses are compared in a canonical form: host:port as produced by
// [net.JoinHostPort], port in decimal without leading zeros ("h:0080" and
// "h:80" are the same entry). An address is valid if [net.SplitHostPort]
// accepts it, the host is not empty and has no spaces or control characters,
// and the port is a number from 1 to 65535. Entries with an invalid address,
// a PubKey over 1024 bytes, a Source over 32 bytes, text that is not UTF-8, or
// a time outside the years 0 to 9999 (which JSON cannot hold) are ignored.
//
// # File format
//
// The file is JSON, mode 0600, written in ranked order:
//
//	{"version": 1, "entries": [{"addr": "203.0.113.7:33033", "pubkey": "...", "since": "2026-03-01T12:00:00Z", ...}, ...]}
//
// [Cache.Save] writes a temporary file in the same directory, syncs it, renames
// it over the old file and syncs the directory, so a crash leaves either the old
// file or the new one, never a mix. [Open] reads at most 1 MiB. A file that is
// larger, is not JSON of this shape, or has a version other than 1 is moved
// aside to path+".corrupt", logged as a warning, and replaced by an empty cache
// ([Cache.Corrupted] reports this): a bad cache must not stop a client from
// starting, because it can always be refilled from the login server. Within a
// well-formed file, invalid entries are dropped one by one, then the rest are
// ranked and cut to MaxEntries.
//
// # Concurrency
//
// A [Cache] is safe for concurrent use.
package hostcache
