package proto

import (
	"errors"
	"fmt"
	"time"
)

// Error is the body of an error response and the error a caller gets back. Two Errors
// match under errors.Is when their codes are equal, so callers test against the sentinels
// below whatever the message says.
type Error struct {
	Code         string `json:"code"`
	Message      string `json:"message,omitempty"`
	RetryAfterMs int64  `json:"retry_after_ms,omitempty"`
	// Alternatives, on a busy answer from a supernode, are less loaded supernodes it
	// knows, for the client to try before it backs off (older peers ignore the field).
	Alternatives []SupernodeInfo `json:"alternatives,omitempty"`
}

// Type implements Message.
func (*Error) Type() Type { return TError }

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Message
}

// Is matches by code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// RetryAfter is how long the server asked the caller to wait (0 = not said).
func (e *Error) RetryAfter() time.Duration { return time.Duration(e.RetryAfterMs) * time.Millisecond }

func (e *Error) validate() error {
	if err := checkLen("code", e.Code, 1, 64); err != nil {
		return err
	}
	if err := checkLen("message", e.Message, 0, MaxText); err != nil {
		return err
	}
	if e.RetryAfterMs < 0 {
		return fmt.Errorf("retry_after_ms %d", e.RetryAfterMs)
	}
	return validSupernodes(e.Alternatives)
}

// With returns a copy of e carrying a more specific message.
func (e *Error) With(format string, args ...any) *Error {
	c := *e
	c.Message = fmt.Sprintf(format, args...)
	return &c
}

// WithRetry returns a copy of e that asks the caller to wait d.
func (e *Error) WithRetry(d time.Duration) *Error {
	c := *e
	c.RetryAfterMs = d.Milliseconds()
	return &c
}

// WithAlternatives returns a copy of e that points the caller at other supernodes.
func (e *Error) WithAlternatives(list []SupernodeInfo) *Error {
	c := *e
	c.Alternatives = list
	return &c
}

// Sentinel errors, by code.
var (
	ErrBadRequest      = &Error{Code: "bad_request", Message: "malformed or unexpected request"}
	ErrBadFrame        = &Error{Code: "bad_frame", Message: "malformed frame; closing the connection"}
	ErrInternal        = &Error{Code: "internal", Message: "internal server error"}
	ErrUnauthenticated = &Error{Code: "unauthenticated", Message: "log in first"}
	ErrInvalidName     = &Error{Code: "invalid_name", Message: "invalid user name"}
	ErrWeakPassword    = &Error{Code: "weak_password", Message: "password too short or too long"}
	ErrUserExists      = &Error{Code: "user_exists", Message: "that name is taken"}
	ErrNoSuchUser      = &Error{Code: "no_such_user", Message: "no such user"}
	ErrWrongPassword   = &Error{Code: "wrong_password", Message: "wrong password"}
	ErrRateLimited     = &Error{Code: "rate_limited", Message: "too many failed logins; wait before trying again"}
	ErrBusy            = &Error{Code: "busy", Message: "server busy; retry later"}
	ErrCredExpired     = &Error{Code: "credential_expired", Message: "credential expired; log in again with your password"}
	ErrCredInvalid     = &Error{Code: "credential_invalid", Message: "credential does not verify (forged, or from another login server)"}
	ErrNotAdmitted     = &Error{Code: "not_admitted", Message: "supernode not admitted: wrong admission secret"}
	ErrBlocked         = &Error{Code: "blocked", Message: "blocked by that user"}
)

// AsError returns err as an *Error if it is one (or wraps one).
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
