// Package rfc5780 holds the STUN attributes of NAT behaviour discovery (RFC 5780) that
// the server (internal/stunsrv) and the detector (internal/natdetect) both speak:
// CHANGE-REQUEST and RESPONSE-PORT.
package rfc5780

import (
	"encoding/binary"
	"errors"

	"github.com/pion/stun/v3"
)

// Change flags of the CHANGE-REQUEST attribute (RFC 5780 section 7.2).
const (
	FlagChangeIP   = 0x04
	FlagChangePort = 0x02
)

// ChangeRequest is the CHANGE-REQUEST attribute (RFC 5780 section 7.2):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 A B 0|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// A is change-IP, B is change-port. Other bits are ignored on receipt.
type ChangeRequest struct {
	ChangeIP, ChangePort bool
}

// errBadChangeRequest means the attribute's value is not 4 bytes long.
var errBadChangeRequest = errors.New("rfc5780: CHANGE-REQUEST value is not 4 bytes")

// errBadResponsePort means the attribute's value is not 4 bytes long or names port 0.
var errBadResponsePort = errors.New("rfc5780: RESPONSE-PORT value is not 4 bytes or is port 0")

// AddTo adds CHANGE-REQUEST to m.
func (c ChangeRequest) AddTo(m *stun.Message) error {
	var v [4]byte
	if c.ChangeIP {
		v[3] |= FlagChangeIP
	}
	if c.ChangePort {
		v[3] |= FlagChangePort
	}
	m.Add(stun.AttrChangeRequest, v[:])
	return nil
}

// GetFrom reads CHANGE-REQUEST from m.
func (c *ChangeRequest) GetFrom(m *stun.Message) error {
	v, err := m.Get(stun.AttrChangeRequest)
	if err != nil {
		return err
	}
	if len(v) != 4 {
		return errBadChangeRequest
	}
	c.ChangeIP = v[3]&FlagChangeIP != 0
	c.ChangePort = v[3]&FlagChangePort != 0
	return nil
}

// ResponsePort is the RESPONSE-PORT attribute (RFC 5780 section 7.5): a 16-bit port
// followed by 16 bits of padding. The server sends its response to the request's source
// IP at this port.
type ResponsePort uint16

// AddTo adds RESPONSE-PORT to m.
func (p ResponsePort) AddTo(m *stun.Message) error {
	var v [4]byte
	binary.BigEndian.PutUint16(v[:2], uint16(p))
	m.Add(stun.AttrResponsePort, v[:])
	return nil
}

// GetFrom reads RESPONSE-PORT from m.
func (p *ResponsePort) GetFrom(m *stun.Message) error {
	v, err := m.Get(stun.AttrResponsePort)
	if err != nil {
		return err
	}
	if len(v) != 4 || binary.BigEndian.Uint16(v[:2]) == 0 {
		return errBadResponsePort
	}
	*p = ResponsePort(binary.BigEndian.Uint16(v[:2]))
	return nil
}
