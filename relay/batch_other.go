//go:build !linux

package relay

import "net"

// sysBatch is recvmmsg's state, which systems other than Linux do without: every socket
// is read one datagram at a time.
type sysBatch struct{ ok bool }

func (s *sysBatch) init(*net.UDPConn, int)                   {}
func (s *sysBatch) setup([][]byte, int, int)                 {}
func (s *sysBatch) read(*batchReader, takeFunc) (int, error) { panic("relay: no recvmmsg") }

// sysSock and sysWriter are sendmmsg's state, which they do without too: every datagram
// is sent with its own call, when queued.
type sysSock struct{ ok bool }

func (s *sysSock) init(*net.UDPConn) {}

type sysWriter struct{ ok bool }

func (s *sysWriter) init(int)                  {}
func (s *sysWriter) flush([]queued) sendCounts { panic("relay: no sendmmsg") }
