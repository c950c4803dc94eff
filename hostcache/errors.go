package hostcache

import "errors"

// Errors returned by Open.
var (
	// ErrNoPath is returned by Open when the path is empty.
	ErrNoPath = errors.New("hostcache: no file path given; pass the path of the host cache file to Open")

	// ErrInvalidOptions is returned by Open when an Options field is out of
	// range; the wrapping error names the field.
	ErrInvalidOptions = errors.New("hostcache: invalid options")
)

// Reasons a file is treated as corrupt. They are not returned to callers (a
// corrupt file is not an error for Open) but appear in the warning Open logs.
var (
	errTooLarge = errors.New("hostcache: file is too large to be a host cache")
	errSyntax   = errors.New("hostcache: file is not host cache JSON")
	errVersion  = errors.New("hostcache: unsupported host cache file version")
)

// Reasons an entry is ignored by Merge or dropped when a file is loaded.
var (
	errBadAddr  = errors.New("hostcache: address must be host:port with a non-empty host and a port from 1 to 65535")
	errFailures = errors.New("hostcache: negative failure count")
	errTooLong  = errors.New("hostcache: field too long")
	errBadText  = errors.New("hostcache: field is not valid UTF-8")
	errBadTime  = errors.New("hostcache: time outside years 0 to 9999")
)
