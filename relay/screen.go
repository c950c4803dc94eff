package relay

import (
	"errors"
	"net"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"github.com/peerline/peerline/internal/serve"
)

// The relay looks at every datagram and TCP frame that is not on a flow's data path
// before pion does, for two reasons:
//
//   - what is not TURN at all (random bytes, STUN that does not decode, ChannelData or a
//     Send indication from a client without an allocation) is counted (bad_packets) and
//     dropped here, where pion would drop it silently;
//   - pion answers a wrong password, an expired or a malformed username with 400 Bad
//     Request, where RFC 8489 section 9.2.4 (long-term credentials, as in RFC 5766) wants
//     401 Unauthorized with REALM and NONCE, which tells a client that its credentials, not
//     its request, are wrong. The relay checks the credentials of each request that
//     carries MESSAGE-INTEGRITY itself and answers a bad one with 401; a good one goes on
//     to pion, which checks it again and handles the request.

// screenUDP screens a datagram from src that is not ChannelData or a Send indication of a
// known flow (hasFlow: src holds an allocation on this socket). It returns the response
// to send instead of handing the datagram to pion, if any, and whether pion gets it.
func (s *Server) screenUDP(pkt []byte, hasFlow bool, src net.Addr) (resp []byte, pass bool) {
	if !stun.IsMessage(pkt) || (!hasFlow && (isSendIndication(pkt) || isChannelData(pkt))) {
		s.m.Inc(MetricBadPackets)
		return nil, false
	}
	return s.screenSTUN(pkt, src)
}

// screenSTUN screens one STUN message or ChannelData frame from src: it passes what is not
// a STUN request with credentials and requests whose credentials are good, drops STUN that
// does not decode (counted bad_packets), and returns a 401 response for a request whose
// credentials are bad (counted by reason), which pion does not see.
func (s *Server) screenSTUN(b []byte, src net.Addr) (resp []byte, pass bool) {
	if !stun.IsMessage(b) || isSendIndication(b) {
		return nil, true
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		s.m.Inc(MetricBadPackets)
		return nil, false
	}
	if m.Type.Class != stun.ClassRequest || !m.Contains(stun.AttrMessageIntegrity) {
		return nil, true
	}
	var (
		username stun.Username
		realm    stun.Realm
		nonce    stun.Nonce
	)
	if username.GetFrom(m) != nil || realm.GetFrom(m) != nil || nonce.GetFrom(m) != nil {
		return nil, true // pion answers 400: the request itself is incomplete
	}
	name := username.String()
	exp, _, ok := parseUsername(name)
	var metric, reason string
	switch {
	case !ok:
		metric, reason = MetricAuthMalformed, "username is not <expiry>:<user>"
	case exp.Unix() < s.cfg.Now().Unix():
		metric, reason = MetricAuthExpired, "credentials expired"
	default:
		key := turn.GenerateAuthKey(name, realm.String(), password1(s.cfg.Secret, name))
		if err := stun.MessageIntegrity(key).Check(m); err == nil {
			return nil, true
		}
		metric, reason = MetricAuthBadHMAC, "bad password"
	}
	s.m.Inc(metric)
	s.m.Inc(MetricAuth401)
	s.log.Info("relay: auth refused", "reason", reason, "username", truncate(name, 64),
		"method", m.Type.Method.String(), "remote", src.String())
	r, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(m.Type.Method, stun.ClassErrorResponse), stun.CodeUnauthorized,
		stun.NewRealm(s.cfg.Realm), nonce)
	if err != nil {
		return nil, false
	}
	return r.Raw, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// readFailed decides what a read loop does after a socket read error: it returns true
// (give the error to pion, whose loop then ends) when the socket is closed or the server
// is closing; otherwise it counts the error, logs it (rate limited), waits out bo and
// returns false (read again). Pion ends a read loop on any error, and with it the
// listener or the allocation, so a transient error must not reach it.
func (s *Server) readFailed(err error, bo *serve.AcceptBackoff, socket string) bool {
	if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
		return true
	}
	s.m.Inc(MetricReadErrors)
	s.log.Warn("relay: socket read failed, retrying", "socket", socket, "err", err)
	return !bo.Wait(s.ctx)
}
