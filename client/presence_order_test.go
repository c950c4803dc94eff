package client

import (
	"testing"

	"github.com/peerline/peerline/internal/proto"
)

// TestPresenceNewest: pushes arrive in any order; a watcher keeps the newest by the
// record's sequence number, and of one record's two states the offline one (its end).
func TestPresenceNewest(t *testing.T) {
	for _, c := range []struct {
		what   string
		steps  []proto.Presence
		online bool
	}{
		{"in order", []proto.Presence{{Online: true, Seq: 5}, {Online: false, Seq: 5}, {Online: true, Seq: 6}}, true},
		{"the end of a record after the next record", []proto.Presence{{Online: true, Seq: 6}, {Online: false, Seq: 5}}, true},
		{"a record after its own end", []proto.Presence{{Online: false, Seq: 5}, {Online: true, Seq: 5}}, false},
		{"an older record", []proto.Presence{{Online: false, Seq: 7}, {Online: true, Seq: 6}}, false},
		{"no sequence number: as it comes", []proto.Presence{{Online: true, Seq: 9}, {Online: false}}, false},
	} {
		cur := &Presence{}
		for _, p := range c.steps {
			if cur.newer(&p) {
				cur.Online, cur.seq, cur.offline = p.Online, p.Seq, !p.Online
			}
		}
		if cur.Online != c.online {
			t.Errorf("%s: online %v, want %v", c.what, cur.Online, c.online)
		}
	}
}
