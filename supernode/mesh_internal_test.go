package supernode

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
)

// TestViaDepartureMustBeSigned: a departure handed on through a contact is served only
// with its sender's signature for this target; a contact cannot forge one, nor replay
// one made for another supernode, nor speak for a supernode that is not a member.
func TestViaDepartureMustBeSigned(t *testing.T) {
	sn := newUnstarted(t)
	_, senderKey, _ := ed25519.GenerateKey(rand.Reader)
	sender := identity.EncodeKey(senderKey.Public().(ed25519.PublicKey))
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	other := identity.EncodeKey(otherKey.Public().(ed25519.PublicKey))
	sn.ix.SetRing(index.NewRing([]index.Member{{ID: sn.id, Addr: "192.0.2.1:4000"}, {ID: sender, Addr: "192.0.2.3:4000"}, {ID: "contact", Addr: "192.0.2.4:4000"}}), 1)
	body, _ := proto.Encode(&proto.IndexGone{Name: "alice", Seq: 1})
	sig := func(k ed25519.PrivateKey, to string) []byte {
		return ed25519.Sign(k, proto.ViaSigned(to, proto.TIndexGone, body))
	}
	ctx := context.Background()
	for _, c := range []struct {
		what string
		v    proto.Via
		ok   bool
	}{
		{"signed by its sender for this target", proto.Via{From: sender, Kind: proto.TIndexGone, Body: body, Sig: sig(senderKey, sn.id)}, true},
		{"unsigned", proto.Via{From: sender, Kind: proto.TIndexGone, Body: body}, false},
		{"signed by someone else", proto.Via{From: sender, Kind: proto.TIndexGone, Body: body, Sig: sig(otherKey, sn.id)}, false},
		{"signed for another target", proto.Via{From: sender, Kind: proto.TIndexGone, Body: body, Sig: sig(senderKey, "contact")}, false},
		{"from a non-member", proto.Via{From: other, Kind: proto.TIndexGone, Body: body, Sig: sig(otherKey, sn.id)}, false},
	} {
		refused := sn.m.Get("via_refused")
		_, err := sn.serveVia(ctx, "contact", &c.v)
		if c.ok != (err == nil) {
			t.Errorf("%s: err %v, want ok=%v", c.what, err, c.ok)
		}
		if !c.ok && (!errors.Is(err, proto.ErrRefused) || sn.m.Get("via_refused") != refused+1) {
			t.Errorf("%s: err %v, via_refused %d -> %d; want a refusal counted", c.what, err, refused, sn.m.Get("via_refused"))
		}
	}
	// A watch needs no signature: the worst a contact can forge is a push of presence
	// the target would give the sender anyway.
	wb, _ := proto.Encode(&proto.Watch{Name: "alice", Watcher: "bob"})
	if _, err := sn.serveVia(ctx, "contact", &proto.Via{From: sender, Kind: proto.TWatch, Body: wb}); err != nil {
		t.Errorf("watch handed on: %v", err)
	}
}

// TestIndexRefusedWithoutMemberList: a supernode that has no member list (restarted
// while the login server is down) answers the index's messages busy, so that its peers
// ask the next holder instead of leaving records, watches and lookups with a supernode
// that can pass nothing on; pings and messages for its clients are still served.
func TestIndexRefusedWithoutMemberList(t *testing.T) {
	sn := newUnstarted(t)
	ctx := context.Background()
	for _, m := range []proto.Message{
		&proto.IndexStore{Record: []byte("x"), Replicate: true},
		&proto.IndexStoreBatch{Records: [][]byte{[]byte("x")}},
		&proto.IndexLookup{Name: "alice", Asker: "bob"},
		&proto.IndexGone{Name: "alice", Seq: 1},
		&proto.Watch{Name: "alice", Watcher: "bob"},
	} {
		before := sn.m.Get("index_not_ready")
		if _, err := sn.handlePeer(ctx, "peer", m); !errors.Is(err, proto.ErrBusy) || sn.m.Get("index_not_ready") != before+1 {
			t.Errorf("%T without a member list: err %v, index_not_ready %d -> %d; want busy, counted", m, err, before, sn.m.Get("index_not_ready"))
		}
	}
	if _, err := sn.handlePeer(ctx, "peer", &proto.Ping{Seq: 1}); err != nil {
		t.Errorf("ping without a member list: %v", err)
	}
	sn.ix.SetRing(index.NewRing([]index.Member{{ID: sn.id, Addr: "192.0.2.1:4000"}}), 1)
	resp, err := sn.handlePeer(ctx, "peer", &proto.IndexLookup{Name: "alice", Asker: "bob"})
	if r, ok := resp.(*proto.IndexResult); err != nil || !ok || r.Found {
		t.Errorf("lookup with a member list: %v, %v; want not found", resp, err)
	}
}

// TestViaWithoutMemberList: a message handed on to a supernode without a member list is
// answered busy too, not refused for a sender it cannot know: the sender takes a
// refusal for the holder's last word and would look no further.
func TestViaWithoutMemberList(t *testing.T) {
	sn := newUnstarted(t)
	body, _ := proto.Encode(&proto.IndexStore{Record: []byte("x"), Replicate: true})
	_, err := sn.serveVia(context.Background(), "contact", &proto.Via{From: "sender", Kind: proto.TIndexStore, Body: body})
	if !errors.Is(err, proto.ErrBusy) {
		t.Fatalf("publication handed on to a supernode without a member list: %v; want busy", err)
	}
}
