// Package proto defines Peerline's control messages: what travels inside the frames of
// package wire, on the three kinds of control connection (client-login server,
// supernode-login server, client-supernode).
//
// A frame's type byte names the message; its body is one JSON object whose fields are the
// struct tags below. Byte strings (credentials, keys) are base64 as encoding/json writes
// them. Decode validates sizes and required fields, so handlers see only well-formed
// messages. Unknown fields are ignored, so a newer peer can add fields without breaking an
// older one; a change that older peers must understand takes a new type.
package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Type identifies a message on the wire.
type Type uint8

// Message types. Requests and their responses sit next to each other; numbers are never
// reused.
const (
	TError Type = 1 // body of an error response (wire.FlagError)
	TOK    Type = 2 // empty success answer
	TPing  Type = 3 // keep-alive on any connection
	TPong  Type = 4

	TRegister     Type = 10 // client -> login server
	TLogin        Type = 11
	TResume       Type = 12
	TLoginOK      Type = 13
	TSeed         Type = 14
	TSeedOK       Type = 15
	TBuddyAdd     Type = 16
	TBuddyRemove  Type = 17
	TBuddyBlock   Type = 18
	TBuddyList    Type = 19
	TBuddyListOK  Type = 20
	TDirectory    Type = 21
	TDirectoryOK  Type = 22
	TTurnCreds    Type = 23 // client -> login server: credentials for a TURN relay
	TTurnCredsOK  Type = 24
	TSNRegister   Type = 30 // supernode -> login server
	TSNRegisterOK Type = 31
	TSNHeartbeat  Type = 32
	TSNPeers      Type = 33 // answer to a heartbeat: the live supernodes
	TAttach       Type = 40 // client -> supernode
	TAttachOK     Type = 41
	TPeers        Type = 42
	TPeersOK      Type = 43
)

// Message is any control message.
type Message interface {
	Type() Type
}

// Limits enforced by Decode.
const (
	MaxName       = 64
	MaxPassword   = 1024
	MaxCredential = 256
	MaxTicket     = 256 // a session ticket (secure.TicketLen is 121)
	MaxAddr       = 256
	MaxList       = 200
	MaxText       = 1024
)

// ErrDecode is wrapped by every Decode failure.
var ErrDecode = errors.New("proto: bad message")

var registry = map[Type]reflect.Type{}

func register(ms ...Message) {
	for _, m := range ms {
		registry[m.Type()] = reflect.TypeOf(m).Elem()
	}
}

// New returns a fresh zero message of type t, or nil if t is unknown.
func New(t Type) Message {
	rt, ok := registry[t]
	if !ok {
		return nil
	}
	return reflect.New(rt).Interface().(Message)
}

// Encode renders m as a frame body.
func Encode(m Message) ([]byte, error) { return json.Marshal(m) }

type validator interface{ validate() error }

// Decode parses body as a message of type t and validates it.
func Decode(t Type, body []byte) (Message, error) {
	m := New(t)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown type %d", ErrDecode, t)
	}
	if err := json.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("%w: type %d: %v", ErrDecode, t, err)
	}
	if v, ok := m.(validator); ok {
		if err := v.validate(); err != nil {
			return nil, fmt.Errorf("%w: type %d: %v", ErrDecode, t, err)
		}
	}
	return m, nil
}

func checkLen(field, s string, min, max int) error {
	if len(s) < min || len(s) > max {
		return fmt.Errorf("%s: length %d not in [%d, %d]", field, len(s), min, max)
	}
	return nil
}

func checkBytes(field string, b []byte, min, max int) error {
	if len(b) < min || len(b) > max {
		return fmt.Errorf("%s: length %d not in [%d, %d]", field, len(b), min, max)
	}
	return nil
}
