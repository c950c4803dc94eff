package loginsrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
)

func TestHashVerify(t *testing.T) {
	ctx := context.Background()
	h := NewHasher(TestArgon2Params, 2)
	enc, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(enc), "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("encoding %q lacks the PHC prefix with the parameters", enc)
	}
	if bytes.Count(enc, []byte("=")) != 4 { // v=, m=, t=, p=; no base64 padding
		t.Fatalf("encoding %q is padded", enc)
	}
	ph, err := pwParseHash(enc)
	if err != nil || len(ph.salt) != 16 || len(ph.key) != 32 {
		t.Fatalf("parse own hash: %+v, %v", ph, err)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{
		{"correct horse", true},
		{"correct horse ", false},
		{"Correct horse", false},
		{"", false},
	} {
		ok, err := h.Verify(ctx, tc.pw, enc)
		if err != nil || ok != tc.want {
			t.Errorf("Verify(%q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
		}
	}
	// Salted: the same password hashes differently, and both verify.
	enc2, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(enc, enc2) {
		t.Fatal("two hashes of one password are equal: no salt?")
	}
	if ok, _ := h.Verify(ctx, "correct horse", enc2); !ok {
		t.Fatal("second hash does not verify")
	}
	// A flipped bit in the stored hash fails.
	bad := bytes.Clone(enc)
	bad[len(bad)-2] ^= 1 // stays within the base64 alphabet for 'A'..'z' pairs
	if ok, err := h.Verify(ctx, "correct horse", bad); ok {
		t.Fatalf("tampered hash verified (err %v)", err)
	}
}

// TestVerifyUsesStoredParams: a hash made with other parameters (say, before the defaults
// were raised) still verifies with a Hasher whose parameters differ.
func TestVerifyUsesStoredParams(t *testing.T) {
	ctx := context.Background()
	old := NewHasher(Argon2Params{Time: 2, MemoryKiB: 256, Threads: 2, KeyLen: 24, SaltLen: 8}, 1)
	enc, err := old.Hash(ctx, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(enc), "$argon2id$v=19$m=256,t=2,p=2$") {
		t.Fatalf("encoding %q", enc)
	}
	h := NewHasher(TestArgon2Params, 1)
	if ok, err := h.Verify(ctx, "pw", enc); err != nil || !ok {
		t.Fatalf("Verify with other params = %v, %v", ok, err)
	}
}

// pwRefHashes are argon2id test vectors of the reference implementation
// (phc-winner-argon2, src/test.c): password "password", salt "somesalt", 32-byte tag. They
// pin our encoding and parameter handling to what every other argon2 library produces.
var pwRefHashes = []string{
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc",
	"$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
}

func TestVerifyKnownAnswer(t *testing.T) {
	h := NewHasher(TestArgon2Params, 1)
	for _, enc := range pwRefHashes {
		ok, err := h.Verify(context.Background(), "password", []byte(enc))
		if err != nil || !ok {
			t.Errorf("reference hash %s: Verify = %v, %v", enc, ok, err)
		}
		if ok, _ := h.Verify(context.Background(), "passwore", []byte(enc)); ok {
			t.Errorf("reference hash %s verifies a wrong password", enc)
		}
		ph, err := pwParseHash([]byte(enc))
		if err != nil || string(ph.encode()) != enc {
			t.Errorf("reference hash %s does not round-trip: %q, %v", enc, ph.encode(), err)
		}
	}
}

func TestHasherCount(t *testing.T) {
	ctx := context.Background()
	h := NewHasher(TestArgon2Params, 1)
	step := func(what string, want uint64, f func()) {
		t.Helper()
		f()
		if got := h.Count(); got != want {
			t.Fatalf("after %s Count = %d, want %d", what, got, want)
		}
	}
	var enc []byte
	step("new hasher", 0, func() {})
	step("Hash", 1, func() { enc, _ = h.Hash(ctx, "pw") })
	step("Verify right", 2, func() { h.Verify(ctx, "pw", enc) })
	step("Verify wrong", 3, func() { h.Verify(ctx, "nope", enc) })
	step("DummyVerify", 4, func() { h.DummyVerify(ctx, "pw") })
	step("Verify malformed", 4, func() { h.Verify(ctx, "pw", []byte("$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$aGFzaA")) })
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	step("Hash cancelled", 4, func() { h.Hash(cancelled, "pw") })
	step("Verify cancelled", 4, func() { h.Verify(cancelled, "pw", enc) })
	step("DummyVerify cancelled", 4, func() { h.DummyVerify(cancelled, "pw") })
}

// waitedOn is a context that tells, by closing waited, that something first asked for its
// Done channel: the hasher asks for it only in the select that waits for a slot. A test
// whose slots are all taken cancels it then, to end a wait that has begun rather than one
// not yet started.
type waitedOn struct {
	context.Context
	once   sync.Once
	waited chan struct{}
}

func newWaitedOn(ctx context.Context) *waitedOn {
	return &waitedOn{Context: ctx, waited: make(chan struct{})}
}

func (c *waitedOn) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waited) })
	return c.Context.Done()
}

// TestHasherBusy: with one slot taken by a running hash, a caller whose context ends while
// waiting gets ErrBusy (and the context's error), and no hash is counted for it.
func TestHasherBusy(t *testing.T) {
	// Big enough that the first hash is surely still running when the second one waits;
	// the test does not rely on that for correctness, only the slot below does.
	h := NewHasher(TestArgon2Params, 1)
	h.slots <- struct{}{} // occupy the only slot, as a running hash would
	released := false
	release := func() {
		if !released {
			released = true
			<-h.slots
		}
	}
	defer release()

	start := time.Now() // before the deadline is set: a pause between the two must not shorten the wait seen
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := h.Hash(ctx, "pw")
	if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Hash while busy: %v, want ErrBusy wrapping DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("Hash gave up after %v, before its context ended", d)
	}
	enc := []byte(pwRefHashes[0])
	cctx, ccancel := context.WithCancel(context.Background())
	wctx := newWaitedOn(cctx)
	go func() { <-wctx.waited; ccancel() }() // cancelled while Verify waits for the slot
	if ok, err := h.Verify(wctx, "password", enc); ok || !errors.Is(err, ErrBusy) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify while busy: %v, %v; want ErrBusy wrapping Canceled", ok, err)
	}
	if h.Count() != 0 {
		t.Fatalf("Count = %d after refused calls, want 0", h.Count())
	}

	// Once the slot frees, a waiting caller proceeds.
	done := make(chan error, 1)
	go func() {
		_, err := h.Hash(context.Background(), "pw")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Hash ran while the slot was taken (err %v)", err)
	case <-time.After(20 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Hash after release: %v", err)
	}
	if h.Count() != 1 {
		t.Fatalf("Count = %d, want 1", h.Count())
	}
}

// TestHasherBusyRealHash is the same with a real hash holding the slot: a hash with large
// parameters runs while a second caller with a context cancelled meanwhile is refused.
func TestHasherBusyRealHash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 64 MiB hash")
	}
	h := NewHasher(DefaultArgon2Params, 1)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		close(started)
		_, err := h.Hash(context.Background(), "first")
		done <- err
	}()
	<-started
	// Wait until the first hash holds the slot (it counts on acquiring it).
	eventually.That(t, 10*time.Second, "the first hash to take the slot", func() bool { return h.Count() > 0 })
	ctx, cancel := context.WithCancel(context.Background())
	wctx := newWaitedOn(ctx)
	go func() { <-wctx.waited; cancel() }() // cancelled while the second Hash waits for the slot
	if _, err := h.Hash(wctx, "second"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Hash: %v, want ErrBusy", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h.Count() != 1 {
		t.Fatalf("Count = %d, want 1", h.Count())
	}
}

// TestHasherBound: never more than maxConcurrent computations at once.
func TestHasherBound(t *testing.T) {
	const limit = 3
	h := NewHasher(TestArgon2Params, limit)
	var (
		mu          sync.Mutex
		peak, inUse int
		wg          sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Go(func() { // samples the semaphore
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			inUse = len(h.slots)
			peak = max(peak, inUse)
			mu.Unlock()
		}
	})
	var hashers sync.WaitGroup
	for range 20 {
		hashers.Go(func() {
			if _, err := h.Hash(context.Background(), "pw"); err != nil {
				t.Error(err)
			}
		})
	}
	hashers.Wait()
	close(stop)
	wg.Wait()
	if peak > limit {
		t.Fatalf("%d hashes ran at once, limit %d", peak, limit)
	}
	if h.Count() != 20 {
		t.Fatalf("Count = %d, want 20", h.Count())
	}
}

func TestParseHashMalformed(t *testing.T) {
	good := pwRefHashes[0]
	if _, err := pwParseHash([]byte(good)); err != nil {
		t.Fatalf("good hash: %v", err)
	}
	bad := map[string]string{
		"empty":            "",
		"argon2i":          strings.Replace(good, "argon2id", "argon2i", 1),
		"argon2d":          strings.Replace(good, "argon2id", "argon2d", 1),
		"bcrypt":           "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"no version":       strings.Replace(good, "$v=19", "", 1),
		"version 16":       strings.Replace(good, "v=19", "v=16", 1),
		"params reordered": strings.Replace(good, "m=256,t=2,p=1", "t=2,m=256,p=1", 1),
		"leading zero":     strings.Replace(good, "m=256", "m=0256", 1),
		"sign":             strings.Replace(good, "t=2", "t=+2", 1),
		"m huge":           strings.Replace(good, "m=256", "m=1048577", 1),
		"m overflow":       strings.Replace(good, "m=256", "m=99999999999", 1),
		"m below 8p":       strings.Replace(good, "m=256,t=2,p=1", "m=15,t=2,p=2", 1),
		"t zero":           strings.Replace(good, "t=2", "t=0", 1),
		"t huge":           strings.Replace(good, "t=2", "t=17", 1),
		"p zero":           strings.Replace(good, "p=1", "p=0", 1),
		"p huge":           strings.Replace(good, "p=1", "p=65", 1),
		"p wraps uint8":    strings.Replace(good, "m=256,t=2,p=1", "m=256,t=2,p=257", 1),
		"keyid param":      strings.Replace(good, "p=1$", "p=1,keyid=AA$", 1),
		"no hash":          good[:strings.LastIndexByte(good, '$')],
		"empty hash":       good[:strings.LastIndexByte(good, '$')+1],
		"extra field":      good + "$AAAA",
		"padded salt":      strings.Replace(good, "c29tZXNhbHQ", "c29tZXNhbHQ=", 1),
		"bad base64":       strings.Replace(good, "c29tZXNhbHQ", "c29tZXNhb!Q", 1),
		"non-canonical":    strings.Replace(good, "c29tZXNhbHQ", "c29tZXNhbHR", 1),
		"newline in hash":  strings.Replace(good, "nf65", "nf\n65", 1),
		"short salt":       strings.Replace(good, "c29tZXNhbHQ", "c2FsdA", 1),
		"short hash":       good[:len(good)-24],
		"huge salt":        strings.Replace(good, "c29tZXNhbHQ", strings.Repeat("A", 1000), 1),
		"huge hash":        good + strings.Repeat("A", 1000),
		"trailing space":   good + " ",
	}
	h := NewHasher(TestArgon2Params, 1)
	for name, s := range bad {
		if _, err := pwParseHash([]byte(s)); !errors.Is(err, ErrBadHash) {
			t.Errorf("%s: pwParseHash(%q) = %v, want ErrBadHash", name, s, err)
		}
		if ok, err := h.Verify(context.Background(), "password", []byte(s)); ok || !errors.Is(err, ErrBadHash) {
			t.Errorf("%s: Verify = %v, %v; want false, ErrBadHash", name, ok, err)
		}
	}
	if h.Count() != 0 {
		t.Fatalf("malformed hashes ran %d argon2 computations", h.Count())
	}
}

func TestNewHasherRejectsBadParams(t *testing.T) {
	for _, p := range []Argon2Params{
		{},
		{Time: 1, MemoryKiB: 64, Threads: 0, KeyLen: 32, SaltLen: 16},
		{Time: 1, MemoryKiB: 4, Threads: 1, KeyLen: 32, SaltLen: 16},
		{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 4},
		{Time: 1, MemoryKiB: 2 << 20, Threads: 1, KeyLen: 32, SaltLen: 16},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewHasher(%+v) did not panic", p)
				}
			}()
			NewHasher(p, 1)
		}()
	}
	for _, p := range []Argon2Params{DefaultArgon2Params, TestArgon2Params} {
		if err := p.validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
}

// FuzzParseHash: pwParseHash never panics, accepts only parameters within the limits, and
// accepts only the canonical encoding (what it accepts re-encodes to the same bytes).
func FuzzParseHash(f *testing.F) {
	for _, s := range pwRefHashes {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ph, err := pwParseHash(data)
		if err != nil {
			if !errors.Is(err, ErrBadHash) {
				t.Fatalf("error %v is not ErrBadHash", err)
			}
			return
		}
		p := ph.params
		if p.MemoryKiB > 1<<20 || p.Time > 16 || p.Threads > 64 || p.Time < 1 || p.Threads < 1 ||
			p.MemoryKiB < 8*uint32(p.Threads) || int(p.SaltLen) != len(ph.salt) || int(p.KeyLen) != len(ph.key) {
			t.Fatalf("accepted out-of-range params %+v", p)
		}
		if re := ph.encode(); !bytes.Equal(re, data) {
			t.Fatalf("accepted non-canonical %q (canonical %q)", data, re)
		}
	})
}

// BenchmarkHashDefault is the real cost of one login (and one registration): an argon2id
// hash with DefaultArgon2Params. Its ns/op and B/op bound the login rate per core.
func BenchmarkHashDefault(b *testing.B) {
	h := NewHasher(DefaultArgon2Params, 1)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

func ExampleHasher() {
	h := NewHasher(TestArgon2Params, 0) // use DefaultArgon2Params in production
	enc, _ := h.Hash(context.Background(), "s3cret")
	ok, _ := h.Verify(context.Background(), "s3cret", enc)
	fmt.Println(ok, h.Count())
	// Output: true 2
}
