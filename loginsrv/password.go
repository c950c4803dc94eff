package loginsrv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

// Password hashing errors.
var (
	// ErrBusy means every hashing slot stayed taken until the caller's context ended. The
	// server should answer with a retry-after instead of queueing more work: shedding load
	// is what keeps a login server alive through a boot storm.
	ErrBusy = errors.New("loginsrv: server busy, retry later")
	// ErrBadHash means a stored password hash is not a well-formed argon2id PHC string with
	// sane parameters: the row is corrupt or was written by something else.
	ErrBadHash = errors.New("loginsrv: malformed password hash")
)

// Argon2Params are the argon2id cost parameters (RFC 9106). Hash uses them for new hashes;
// Verify uses the parameters recorded in each stored hash, so they can be raised later
// without invalidating existing passwords.
type Argon2Params struct {
	Time      uint32 // passes over memory (t); default 3
	MemoryKiB uint32 // memory per hash in KiB (m); default 64 MiB. Must be >= 8*Threads
	Threads   uint8  // lanes (p); default 2
	KeyLen    uint32 // hash length in bytes; default 32
	SaltLen   uint32 // random salt length in bytes; default 16
}

// DefaultArgon2Params is RFC 9106's second recommended option (t=3, m=64 MiB) with two
// lanes: one hash takes 64 MiB and about 0.12 s of two cores on the project's test machine
// (BenchmarkHashDefault), which is what bounds the login rate.
var DefaultArgon2Params = Argon2Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 2, KeyLen: 32, SaltLen: 16}

// TestArgon2Params are tiny parameters for tests only: they give no protection.
var TestArgon2Params = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}

// Limits on parameters accepted from a stored hash (and from NewHasher), so that a corrupt
// or hostile row cannot make Verify allocate gigabytes or spin for minutes.
const (
	pwMaxMemoryKiB = 1 << 20 // 1 GiB
	pwMaxTime      = 16
	pwMaxThreads   = 64
	pwMinSaltLen   = 8 // RFC 9106 minimum
	pwMaxSaltLen   = 64
	pwMinKeyLen    = 16
	pwMaxKeyLen    = 128
	pwVersion      = argon2.Version // 0x13 = 19
)

// validate reports whether p can be used to hash.
func (p Argon2Params) validate() error {
	switch {
	case p.Time < 1 || p.Time > pwMaxTime:
		return fmt.Errorf("argon2 time %d not in [1, %d]", p.Time, pwMaxTime)
	case p.Threads < 1 || p.Threads > pwMaxThreads:
		return fmt.Errorf("argon2 threads %d not in [1, %d]", p.Threads, pwMaxThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > pwMaxMemoryKiB:
		return fmt.Errorf("argon2 memory %d KiB not in [8*threads, %d]", p.MemoryKiB, pwMaxMemoryKiB)
	case p.KeyLen < pwMinKeyLen || p.KeyLen > pwMaxKeyLen:
		return fmt.Errorf("argon2 key length %d not in [%d, %d]", p.KeyLen, pwMinKeyLen, pwMaxKeyLen)
	case p.SaltLen < pwMinSaltLen || p.SaltLen > pwMaxSaltLen:
		return fmt.Errorf("argon2 salt length %d not in [%d, %d]", p.SaltLen, pwMinSaltLen, pwMaxSaltLen)
	}
	return nil
}

// Hasher hashes and verifies passwords with argon2id and counts every argon2 computation
// (tests assert on the count). A semaphore bounds how many hashes run at once: each one
// takes MemoryKiB of memory and a core for tens of milliseconds, so unbounded concurrency
// under a login flood would exhaust memory instead of shedding load. Callers wait for a
// slot until their context is done and then get ErrBusy.
type Hasher struct {
	params Argon2Params
	slots  chan struct{} // a token per running computation; cap = maxConcurrent
	count  atomic.Uint64 // argon2 computations started
}

// NewHasher returns a Hasher that makes new hashes with p and runs at most maxConcurrent
// argon2 computations at once (0 or less = runtime.NumCPU()). It panics if p is out of
// range (see Argon2Params): parameters are fixed by the program, not by user input.
func NewHasher(p Argon2Params, maxConcurrent int) *Hasher {
	if err := p.validate(); err != nil {
		panic("loginsrv: NewHasher: " + err.Error())
	}
	if maxConcurrent <= 0 {
		maxConcurrent = runtime.NumCPU()
	}
	return &Hasher{params: p, slots: make(chan struct{}, maxConcurrent)}
}

// Hash returns a new salted argon2id hash of password, encoded as a PHC string:
//
//	$argon2id$v=19$m=<MemoryKiB>,t=<Time>,p=<Threads>$<salt>$<hash>
//
// with salt and hash in standard base64 without padding. It returns an error wrapping both
// ErrBusy and ctx.Err() if no hashing slot frees up before ctx is done.
func (h *Hasher) Hash(ctx context.Context, password string) ([]byte, error) {
	ph := pwHash{params: h.params, salt: make([]byte, h.params.SaltLen)}
	if _, err := rand.Read(ph.salt); err != nil {
		return nil, fmt.Errorf("loginsrv: password salt: %w", err)
	}
	key, err := h.pwCompute(ctx, []byte(password), ph.salt, ph.params)
	if err != nil {
		return nil, err
	}
	ph.key = key
	return ph.encode(), nil
}

// Verify reports whether password matches encoded, a hash made by Hash (possibly with other
// parameters: those recorded in encoded are used). A malformed hash gives an error wrapping
// ErrBadHash; a full Hasher gives one wrapping ErrBusy and ctx.Err().
func (h *Hasher) Verify(ctx context.Context, password string, encoded []byte) (bool, error) {
	ph, err := pwParseHash(encoded)
	if err != nil {
		return false, err
	}
	key, err := h.pwCompute(ctx, []byte(password), ph.salt, ph.params)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(key, ph.key) == 1, nil
}

// DummyVerify hashes password once with the current parameters and throws the result
// away, so that a login for an unknown user costs as much time as a wrong password and the
// response time does not tell an attacker which names exist.
//
// If no slot frees up before ctx is done, it returns without hashing, just as Verify would
// return ErrBusy. The caller must then answer exactly as it answers ErrBusy (check
// ctx.Err()), or "busy" versus "wrong password" under load would reveal the same thing.
func (h *Hasher) DummyVerify(ctx context.Context, password string) {
	salt := make([]byte, h.params.SaltLen) // contents do not matter, only the cost
	_, _ = h.pwCompute(ctx, []byte(password), salt, h.params)
}

// Count returns the number of argon2 computations run so far by Hash, Verify and
// DummyVerify. Calls that failed before hashing (malformed hash, busy) do not count.
func (h *Hasher) Count() uint64 { return h.count.Load() }

// pwCompute runs one argon2id computation once a slot is free.
func (h *Hasher) pwCompute(ctx context.Context, password, salt []byte, p Argon2Params) ([]byte, error) {
	// A caller that already gave up gets no slot, even if one is free: the work would be
	// wasted, and a flood of abandoned requests must not keep the cores busy.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBusy, err)
	}
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
	}
	defer func() { <-h.slots }()
	h.count.Add(1)
	return argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen), nil
}

// pwHash is a parsed PHC string.
type pwHash struct {
	params Argon2Params // KeyLen and SaltLen are the lengths of key and salt
	salt   []byte
	key    []byte
}

var pwB64 = base64.RawStdEncoding.Strict()

// encode formats h as a PHC string. pwParseHash(h.encode()) gives h back.
func (h pwHash) encode() []byte {
	b := make([]byte, 0, 64+pwB64.EncodedLen(len(h.salt))+pwB64.EncodedLen(len(h.key)))
	b = append(b, "$argon2id$v="...)
	b = strconv.AppendUint(b, pwVersion, 10)
	b = append(b, "$m="...)
	b = strconv.AppendUint(b, uint64(h.params.MemoryKiB), 10)
	b = append(b, ",t="...)
	b = strconv.AppendUint(b, uint64(h.params.Time), 10)
	b = append(b, ",p="...)
	b = strconv.AppendUint(b, uint64(h.params.Threads), 10)
	b = append(b, '$')
	b = pwB64.AppendEncode(b, h.salt)
	b = append(b, '$')
	b = pwB64.AppendEncode(b, h.key)
	return b
}

// pwParseHash parses a PHC string made by encode. It accepts exactly that canonical form
// (argon2id, v=19, m, t and p in that order, decimal without leading zeros, canonical
// unpadded base64) and parameters within the limits above; anything else is ErrBadHash.
func pwParseHash(s []byte) (pwHash, error) {
	bad := func(why string) (pwHash, error) {
		return pwHash{}, fmt.Errorf("%w: %s", ErrBadHash, why)
	}
	rest, ok := bytes.CutPrefix(s, []byte("$argon2id$v="))
	if !ok {
		return bad("not an argon2id PHC string")
	}
	var (
		v, m, t, p uint64
		err        error
	)
	if v, rest, err = pwParseUint(rest, '$'); err != nil || v != pwVersion {
		return bad("unsupported argon2 version")
	}
	if rest, ok = bytes.CutPrefix(rest, []byte("m=")); !ok {
		return bad("missing m")
	}
	if m, rest, err = pwParseUint(rest, ','); err != nil {
		return bad("bad m")
	}
	if rest, ok = bytes.CutPrefix(rest, []byte("t=")); !ok {
		return bad("missing t")
	}
	if t, rest, err = pwParseUint(rest, ','); err != nil {
		return bad("bad t")
	}
	if rest, ok = bytes.CutPrefix(rest, []byte("p=")); !ok {
		return bad("missing p")
	}
	if p, rest, err = pwParseUint(rest, '$'); err != nil {
		return bad("bad p")
	}
	saltB64, keyB64, ok := bytes.Cut(rest, []byte("$"))
	if !ok {
		return bad("missing hash")
	}
	// Check lengths before decoding so that a huge field costs nothing. The base64 decoder
	// skips '\r' and '\n'; refuse them so that only the canonical string parses.
	if bytes.ContainsAny(rest, "\r\n") {
		return bad("line break in salt or hash")
	}
	if len(saltB64) > pwB64.EncodedLen(pwMaxSaltLen) || len(keyB64) > pwB64.EncodedLen(pwMaxKeyLen) {
		return bad("salt or hash too long")
	}
	salt, err := pwB64.AppendDecode(nil, saltB64)
	if err != nil {
		return bad("salt is not base64")
	}
	key, err := pwB64.AppendDecode(nil, keyB64)
	if err != nil {
		return bad("hash is not base64")
	}
	if m > pwMaxMemoryKiB || t > pwMaxTime || p > pwMaxThreads {
		return bad("parameters above the limits")
	}
	h := pwHash{
		params: Argon2Params{Time: uint32(t), MemoryKiB: uint32(m), Threads: uint8(p), KeyLen: uint32(len(key)), SaltLen: uint32(len(salt))},
		salt:   salt,
		key:    key,
	}
	if err := h.params.validate(); err != nil {
		return bad(err.Error())
	}
	return h, nil
}

// pwParseUint parses a decimal number (no sign, no leading zeros, at most 10 digits)
// followed by sep, and returns what follows sep.
func pwParseUint(b []byte, sep byte) (n uint64, rest []byte, err error) {
	i := bytes.IndexByte(b, sep)
	if i < 1 || i > 10 || (i > 1 && b[0] == '0') {
		return 0, nil, ErrBadHash
	}
	for _, c := range b[:i] {
		if c < '0' || c > '9' {
			return 0, nil, ErrBadHash
		}
		n = n*10 + uint64(c-'0')
	}
	return n, b[i+1:], nil
}
