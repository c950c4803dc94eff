package hostcache

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Field limits. They bound the memory a peer's report or a hand-edited file
// can make the cache hold; real values are far shorter (an Ed25519 key is 44
// base64 characters).
const (
	maxAddrLen   = 300 // a 253-byte DNS name, brackets, colon and port, with room to spare
	maxPubKeyLen = 1024
	maxSourceLen = 32
)

// canonicalAddr validates a host:port address and returns its canonical form:
// net.JoinHostPort of the host and the port in decimal without leading zeros.
func canonicalAddr(addr string) (string, error) {
	if addr == "" || len(addr) > maxAddrLen {
		return "", errBadAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errBadAddr, err)
	}
	if host == "" || !utf8.ValidString(host) {
		return "", errBadAddr
	}
	for i := 0; i < len(host); i++ {
		if b := host[i]; b <= ' ' || b == 0x7f {
			return "", errBadAddr
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", errBadAddr
	}
	// Fast path, no allocation: addr is already canonical if the port has no
	// leading zero and the host is bracketed exactly when it has a colon.
	if port[0] != '0' && (addr[0] == '[') == strings.Contains(host, ":") {
		return addr, nil
	}
	return net.JoinHostPort(host, strconv.FormatUint(p, 10)), nil
}

// normalize validates e and returns it with a canonical Addr and its times in
// UTC without monotonic readings, so that it encodes to JSON and decodes back
// to the same value.
func normalize(e Entry) (Entry, error) {
	addr, err := canonicalAddr(e.Addr)
	if err != nil {
		return Entry{}, err
	}
	e.Addr = addr
	if e.Failures < 0 {
		return Entry{}, errFailures
	}
	if len(e.PubKey) > maxPubKeyLen || len(e.Source) > maxSourceLen {
		return Entry{}, errTooLong
	}
	if !utf8.ValidString(e.PubKey) || !utf8.ValidString(e.Source) {
		return Entry{}, errBadText
	}
	for _, t := range []*time.Time{&e.Since, &e.LastSuccess, &e.LastFailure} {
		*t = t.UTC()
		// encoding/json cannot write years outside 0..9999 (RFC 3339).
		if y := t.Year(); y < 0 || y > 9999 {
			return Entry{}, errBadTime
		}
	}
	return e, nil
}
