//go:build !linux

package relay

import "net"

// sysBatch is recvmmsg's state, which systems other than Linux do without: every socket
// is read one datagram at a time.
type sysBatch struct{ ok bool }

func (s *sysBatch) init(*net.UDPConn, int)                   {}
func (s *sysBatch) setup([][]byte, int, int)                 {}
func (s *sysBatch) read(*batchReader, takeFunc) (int, error) { panic("relay: no recvmmsg") }
