package memnet

import (
	"errors"
	"os"
	"syscall"
)

// ErrHostDown means the host was killed: its Listen, ListenPacket and DialContext fail
// until Host.Revive is called.
var ErrHostDown = errors.New("memnet: host is down (killed); call Host.Revive before using it")

// errno wraps a syscall error the way the net package does, so that errors.Is(err,
// syscall.ECONNREFUSED) and friends work on what callers get.
func errno(call string, e syscall.Errno) error { return os.NewSyscallError(call, e) }
