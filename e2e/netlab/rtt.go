package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// RTTStats summarises round-trip times measured with MeasureRTT.
type RTTStats struct {
	Sent, Received   int
	Min, Median, Max time.Duration
}

func (s RTTStats) String() string {
	return fmt.Sprintf("rtt min/median/max = %v/%v/%v, %d/%d answered",
		s.Min.Round(100*time.Microsecond), s.Median.Round(100*time.Microsecond), s.Max.Round(100*time.Microsecond), s.Received, s.Sent)
}

// RTTOptions tunes MeasureRTT.
type RTTOptions struct {
	// N is the number of probes, 1..1000. 0 means 10.
	N int
	// Addr is the address to send to. The zero Addr means to.IP().
	Addr netip.Addr
	// Timeout is how long each probe waits for its echo. 0 means 1 s.
	Timeout time.Duration
}

// MeasureRTT sends UDP probes, one at a time, from a socket in from's namespace to an
// echo socket in to's namespace, and returns the statistics of the answered ones.
func MeasureRTT(from, to *Host, o RTTOptions) (RTTStats, error) {
	var st RTTStats
	n, toAddr := o.N, o.Addr
	if n == 0 {
		n = 10
	}
	if n < 1 || n > 1000 {
		return st, fmt.Errorf("netlab: MeasureRTT: N=%d out of 1..1000", n)
	}
	if !toAddr.IsValid() {
		toAddr = to.IP()
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	echo, err := to.ListenUDP("0.0.0.0:0")
	if err != nil {
		return st, err
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			k, a, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:k], a)
		}
	}()
	c, err := from.ListenUDP("0.0.0.0:0")
	if err != nil {
		return st, err
	}
	defer c.Close()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(toAddr, uint16(echo.LocalAddr().(*net.UDPAddr).Port)))
	var rtts []time.Duration
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		var msg [8]byte
		binary.BigEndian.PutUint64(msg[:], uint64(i))
		t0 := time.Now()
		if _, err := c.WriteTo(msg[:], dst); err != nil {
			return st, err
		}
		st.Sent++
		c.SetReadDeadline(t0.Add(o.Timeout))
		for {
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return st, err
			}
			if k == 8 && binary.BigEndian.Uint64(buf[:8]) == uint64(i) {
				rtts = append(rtts, time.Since(t0))
				break
			}
		}
	}
	st.Received = len(rtts)
	if len(rtts) == 0 {
		return st, fmt.Errorf("netlab: no echo from %s at %s", to.Name, dst)
	}
	slices.Sort(rtts)
	st.Min, st.Median, st.Max = rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1]
	return st, nil
}
