package relay

import (
	"strconv"
	"strings"
	"time"

	"github.com/peerline/peerline/internal/turncred"
)

// Credentials returns TURN credentials for user valid for ttl from now, in the TURN REST
// API style that coturn's --use-auth-secret accepts too:
//
//	username = "<unix expiry seconds>:<user>"
//	password = base64(HMAC-SHA1(secret, username))
//
// The login server calls it with the secret it shares with the relays; a relay checks a
// username's expiry and recomputes its password, so it needs no user database.
func Credentials(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string, expires time.Time) {
	return turncred.New(secret, user, ttl, now)
}

// password1 is the TURN REST API password of username.
func password1(secret []byte, username string) string { return turncred.Password(secret, username) }

// parseUsername splits a TURN REST API username into its expiry and user name. A username
// of digits only is accepted with an empty user name, as coturn does.
func parseUsername(username string) (expires time.Time, user string, ok bool) {
	ts, user, _ := strings.Cut(username, ":")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, "", false
	}
	return time.Unix(sec, 0), user, true
}
