package portmap

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// routeFile is the kernel's IPv4 routing table on Linux.
const routeFile = "/proc/net/route"

// Route flags (linux/route.h).
const (
	rtfUp      = 0x1
	rtfGateway = 0x2
)

// defaultGateway returns the gateway of the IPv4 default route.
func defaultGateway() (netip.Addr, error) {
	f, err := os.Open(routeFile)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w (%v)", ErrNoGateway, err)
	}
	defer f.Close()
	// The kernel prints each address as the host-order integer of its network-order
	// bytes, so reading it back needs the host's byte order.
	return parseRoutes(f, binary.NativeEndian)
}

// parseRoutes returns the gateway of the default route with the lowest metric in a
// routing table in the format of /proc/net/route, whose addresses are hexadecimal
// integers in the byte order order:
//
//	Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
//	eth0	00000000	0102A8C0	0003	0	0	100	00000000	0	0	0
//
// Routes that are down, have no gateway or are not 0.0.0.0/0 are skipped, and so are
// lines that do not parse.
func parseRoutes(r io.Reader, order binary.ByteOrder) (netip.Addr, error) {
	var (
		best       netip.Addr
		bestMetric uint64
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[0] == "Iface" {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		gw, err2 := strconv.ParseUint(f[2], 16, 32)
		flags, err3 := strconv.ParseUint(f[3], 16, 32)
		metric, err4 := strconv.ParseUint(f[6], 10, 32)
		mask, err5 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
			continue
		}
		if dst != 0 || mask != 0 || gw == 0 || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		var a [4]byte
		order.PutUint32(a[:], uint32(gw))
		if !best.IsValid() || metric < bestMetric {
			best, bestMetric = netip.AddrFrom4(a), metric
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("%w (reading the routing table: %v)", ErrNoGateway, err)
	}
	if !best.IsValid() {
		return netip.Addr{}, ErrNoGateway
	}
	return best, nil
}

// routeSource returns the source address the kernel would use to reach dst. Connecting a
// UDP socket only looks the route up; nothing is sent.
func routeSource(dst netip.AddrPort) (netip.Addr, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: no route to the gateway %s: %w", dst.Addr(), err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}
