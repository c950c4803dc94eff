package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is the kernel's struct mmsghdr (Go pads it to the alignment of Msghdr as C does).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// sysBatch is a batchReader's recvmmsg state: one message header, I/O vector and address
// buffer per slot, set up once.
type sysBatch struct {
	ok    bool
	raw   syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for IPv4 and IPv6 addresses

	// The read callback and what it reports, kept here so that a read allocates nothing.
	r      *batchReader
	take   takeFunc
	got    int // the slot take refused, or -1
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

func (s *sysBatch) init(uc *net.UDPConn, batch int) {
	raw, err := uc.SyscallConn()
	if err != nil || batch < 1 {
		return
	}
	s.ok, s.raw = true, raw
	s.hdrs = make([]mmsghdr, batch)
	s.iovs = make([]unix.Iovec, batch)
	s.names = make([]unix.RawSockaddrInet6, batch)
	s.readFn = s.recv
}

func (s *sysBatch) setup(slots [][]byte, head, size int) {
	for i := range s.hdrs {
		s.iovs[i].Base = &slots[i][head]
		s.iovs[i].SetLen(size)
		h := &s.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
	}
}

// read reads batches until take refuses a datagram, and returns its slot.
func (s *sysBatch) read(r *batchReader, take takeFunc) (int, error) {
	s.r, s.take, s.got, s.errno = r, take, -1, 0
	err := s.raw.Read(s.readFn)
	s.r, s.take = nil, nil
	switch {
	case err != nil:
		return 0, err
	case s.errno != 0:
		return 0, &net.OpError{Op: "read", Net: "udp", Err: s.errno}
	}
	return s.got, nil
}

// recv is the runtime's read callback: true ends the read, false waits until the socket
// is readable and calls it again.
func (s *sysBatch) recv(fd uintptr) bool {
	for {
		for i := range s.hdrs {
			s.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(s.names[i]))
			s.hdrs[i].hdr.Flags = 0
			s.hdrs[i].len = 0
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[0])), uintptr(len(s.hdrs)), 0, 0, 0)
		switch errno {
		case 0:
		case unix.EAGAIN:
			return false
		case unix.EINTR:
			continue
		default:
			s.errno = errno
			return true
		}
		r := s.r
		for i := 0; i < int(n); i++ {
			r.lens[i] = min(int(s.hdrs[i].len), r.size)
			r.srcs[i] = sockaddrPort(&s.names[i], s.hdrs[i].hdr.Namelen)
		}
		if s.got = r.handOut(int(n), s.take); s.got >= 0 {
			return true
		}
		if int(n) < len(s.hdrs) {
			return false // the queue is empty: wait, without a read to say so
		}
	}
}

// sockaddrPort decodes a struct sockaddr_in or sockaddr_in6 of namelen bytes.
func sockaddrPort(sa *unix.RawSockaddrInet6, namelen uint32) netip.AddrPort {
	b := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	port := binary.BigEndian.Uint16(b[2:4])
	switch {
	case sa.Family == unix.AF_INET && namelen >= unix.SizeofSockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	case sa.Family == unix.AF_INET6 && namelen >= unix.SizeofSockaddrInet6:
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if sa.Scope_id != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return unmap(netip.AddrPortFrom(a, port))
	}
	return netip.AddrPort{}
}
