package supernode

import (
	"context"
	"errors"
	"time"

	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/sig"
)

// Unless Config.NoMesh, the messages between supernodes that no user waits on (watches,
// presence pushes, publications, departures) cross the mesh of index.Ring.Via: straight
// to the peer when a connection to it is open or it is in this supernode's group, else
// through this supernode's contact in the peer's group, which hands the message on. A
// supernode then
// keeps connections to its group and one contact per other group, about 2√N peers,
// instead of one to every supernode that holds a record of one of its users or of one
// of their buddies: at 1,000 supernodes with 20 users each and four buddies per user,
// 86,000 connections for 17,000 users, each a handshake (TLS ones were 40% of the CPU of
// a reboot storm) and some 15-25 KB to keep at both ends. Lookups and messages between
// users stay one hop (a user waits on them); so do the copies a holder passes on to the
// next holders, its ring neighbours.

// viaTimeout bounds a contact's hand-on, under the sender's 5 s per call.
const viaTimeout = 4 * time.Second

// callVia sends msg, of a kind proto.Forwardable allows, to m over the mesh. Errors are
// those of peerPool.call about m: a contact that is gone is suspected and m tried
// directly, and so is m when the contact could not reach it (the direct attempt's
// failure, first-hand, is what the caller suspects m on).
func (sn *Supernode) callVia(ctx context.Context, m index.Member, msg proto.Message) (proto.Message, error) {
	p := sn.ov.peers
	if sn.cfg.NoMesh || m.ID == sn.id || p.open(m.ID) {
		return p.call(ctx, m, msg)
	}
	via, ok := sn.currentRing().Via(sn.id, m.ID, sn.ix.Alive)
	if !ok || via.ID == m.ID || via.ID == sn.id {
		return p.call(ctx, m, msg)
	}
	// The body goes in its binary form (every kind a Via carries has one), which the
	// contact re-encodes as JSON for a target that reads only JSON (proto.EncodeFor), a
	// signed one excepted.
	body, err := proto.AppendBinary(nil, msg)
	if err != nil {
		return nil, err
	}
	v := &proto.Via{To: m.ID, Kind: msg.Type(), Body: body, BodyBinary: true}
	if v.Kind == proto.TIndexGone {
		v.Sig = sig.Sign(sn.cfg.Key, proto.ViaSigned(m.ID, v.Kind, body))
	}
	resp, err := p.call(ctx, via, v)
	switch {
	case err == nil:
		sn.m.Inc("via_sent")
		return resp, nil
	case errors.Is(err, errTransport):
		sn.ix.MarkDead(via.ID, err)
		sn.m.Inc("via_contact_lost")
		return p.call(ctx, m, msg)
	case errors.Is(err, proto.ErrUnreachable):
		// The contact could not reach m. Try m directly, once: a third party's word is
		// not enough to suspect m, and without suspecting a dead m this supernode would
		// send every message for it to the contact again, and walk past the next
		// holders with its bounded walks (with the login server down, dead members stay
		// on the list: one client of the login-down storm attached 536 times, its
		// supernode unable to publish).
		sn.m.Inc("via_unreachable")
		return p.call(ctx, m, msg)
	}
	return nil, err // m's answer (a refusal), or errSlow about the contact
}

// serveVia serves a Via from peer: as the contact, it hands the message on to its target
// with peer as the sender; as the target, it serves the message as if its sender had
// sent it.
func (sn *Supernode) serveVia(ctx context.Context, peer string, v *proto.Via) (proto.Message, error) {
	if v.To != "" && v.To != sn.id {
		m, ok := sn.currentRing().Member(v.To)
		if !ok || !sn.ix.Alive(m.ID) {
			sn.m.Inc("via_unreachable")
			return nil, proto.ErrUnreachable.With("%s is not a live member here", v.To)
		}
		cctx, cancel := context.WithTimeout(ctx, viaTimeout)
		defer cancel()
		resp, err := sn.ov.peers.call(cctx, m, &proto.Via{From: peer, Kind: v.Kind, Body: v.Body, Sig: v.Sig, BodyBinary: v.BodyBinary})
		if err == nil {
			sn.m.Inc("via_handed_on")
			return resp, nil
		}
		if _, ok := proto.AsError(err); ok {
			return nil, err // the target's answer
		}
		if errors.Is(err, errTransport) {
			sn.ix.MarkDead(m.ID, err)
		}
		sn.m.Inc("via_unreachable")
		return nil, proto.ErrUnreachable.With("%v", err)
	}
	if v.Kind != proto.TPresence {
		// No member list (see indexReady): checked before the sender, which would be
		// refused, and the sender take the refusal for the holder's final answer.
		if err := sn.listReady(); err != nil {
			return nil, err
		}
	}
	from := peer
	if v.From != "" {
		if !sn.currentRing().Has(v.From) {
			sn.m.Inc("via_refused")
			return nil, proto.ErrRefused.With("sender %s is not a member here", v.From)
		}
		if v.Kind == proto.TIndexGone {
			key, err := identity.DecodeKey(v.From)
			if err != nil || !sig.Verify(key, proto.ViaSigned(sn.id, v.Kind, v.Body), v.Sig) {
				sn.m.Inc("via_refused")
				return nil, proto.ErrRefused.With("departure not signed by %s", v.From)
			}
		}
		from = v.From
	}
	inner, err := proto.DecodeAs(v.Kind, v.Body, v.BodyBinary)
	if err != nil {
		sn.m.Inc("via_refused")
		return nil, proto.ErrBadRequest.With("%v", err)
	}
	sn.m.Inc("via_received")
	return sn.handlePeer(ctx, from, inner)
}
