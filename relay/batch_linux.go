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

// sysSock is a sendSock's sendmmsg state: the socket's RawConn and address family.
type sysSock struct {
	ok     bool
	raw    syscall.RawConn
	family int // AF_INET or AF_INET6: how destinations are written
}

func (s *sysSock) init(uc *net.UDPConn) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return
	}
	family, ferr := 0, error(nil)
	err = raw.Control(func(fd uintptr) {
		family, ferr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	})
	if err != nil || ferr != nil || family != unix.AF_INET && family != unix.AF_INET6 {
		return
	}
	s.ok, s.raw, s.family = true, raw, family
}

// sysWriter is a batchWriter's sendmmsg state: one message header, I/O vector and address
// buffer per datagram it may queue, set up once.
type sysWriter struct {
	ok    bool
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	sizes []int // payload bytes of each header's datagram

	// sendmmsg makes the system call; tests wrap it.
	sendmmsg func(fd uintptr, hs []mmsghdr) (int, unix.Errno)

	// The write callback, what it works on (hdrs[lo:hi]) and what it reports, kept here so
	// that a flush allocates nothing.
	lo, hi  int
	n       sendCounts
	writeFn func(fd uintptr) bool
}

func (s *sysWriter) init(n int) {
	if n < 1 {
		return
	}
	s.ok = true
	s.hdrs = make([]mmsghdr, n)
	s.iovs = make([]unix.Iovec, n)
	s.names = make([]unix.RawSockaddrInet6, n)
	s.sizes = make([]int, n)
	for i := range s.hdrs {
		h := &s.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
	}
	s.sendmmsg = sendmmsg
	s.writeFn = s.write
}

func sendmmsg(fd uintptr, hs []mmsghdr) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hs[0])), uintptr(len(hs)), 0, 0, 0)
	return int(n), errno
}

// flush sends q, socket by socket in the order of each socket's first datagram, each
// socket's datagrams in the order queued. It clears q's sock fields.
func (s *sysWriter) flush(q []queued) sendCounts {
	s.n = sendCounts{}
	for i := range q {
		sock := q[i].sock
		if sock == nil {
			continue // sent with an earlier socket's
		}
		k := 0
		for j := i; j < len(q); j++ {
			e := &q[j]
			if e.sock != sock {
				continue
			}
			e.sock = nil
			namelen := putSockaddr(&s.names[k], e.to, sock.sys.family)
			if namelen == 0 {
				s.n.errs++ // an address the socket cannot send to, as sendto would refuse it
				continue
			}
			s.hdrs[k].hdr.Namelen = namelen
			s.iovs[k].Base = unsafe.SliceData(e.b)
			s.iovs[k].SetLen(len(e.b))
			s.sizes[k] = e.size
			k++
		}
		if k == 0 {
			continue
		}
		s.lo, s.hi = 0, k
		if err := sock.sys.raw.Write(s.writeFn); err != nil {
			s.n.errs += uint64(s.hi - s.lo) // the socket is closed or past its write deadline
		}
	}
	for i := range s.iovs {
		s.iovs[i].Base = nil // hold on to no slot
	}
	return s.n
}

// write is the runtime's write callback: it sends hdrs[lo:hi], and returns true when it
// has, or false to wait until the socket is writable and be called again.
func (s *sysWriter) write(fd uintptr) bool {
	for s.lo < s.hi {
		n, errno := s.sendmmsg(fd, s.hdrs[s.lo:s.hi])
		s.n.calls++
		switch {
		case errno == unix.EAGAIN:
			s.n.waits++
			return false
		case errno == unix.EINTR:
		case errno != 0 || n <= 0:
			// The first datagram was refused (EMSGSIZE, EHOSTUNREACH, ECONNREFUSED...): drop
			// it and go on with the rest.
			s.n.errs++
			s.lo++
		default:
			n = min(n, s.hi-s.lo)
			for _, size := range s.sizes[s.lo : s.lo+n] {
				s.n.bytes += uint64(size)
			}
			s.n.sent += uint64(n)
			s.lo += n
		}
	}
	return true
}

// putSockaddr writes ap into sa as a struct sockaddr_in or sockaddr_in6, as a socket of
// the family wants it (an IPv4 address on an IPv6 socket is IPv4-mapped), and returns its
// length, or 0 if the socket cannot send to ap.
func putSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort, family int) uint32 {
	a := ap.Addr()
	if !a.IsValid() {
		return 0
	}
	b := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	switch family {
	case unix.AF_INET:
		if a = a.Unmap(); !a.Is4() {
			return 0
		}
		clear(b[:unix.SizeofSockaddrInet4])
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16(b[2:4], ap.Port())
		a4 := a.As4()
		copy(b[4:8], a4[:])
		return unix.SizeofSockaddrInet4
	case unix.AF_INET6:
		sa.Family = unix.AF_INET6
		binary.BigEndian.PutUint16(b[2:4], ap.Port())
		sa.Flowinfo = 0
		sa.Addr = a.As16()
		sa.Scope_id = zoneIndex(a.Zone())
		return unix.SizeofSockaddrInet6
	}
	return 0
}

// zoneIndex is the interface index of an IPv6 zone: a number, as sockaddrPort writes it,
// or an interface's name.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}
