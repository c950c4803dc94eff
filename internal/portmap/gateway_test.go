package portmap

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// testdata/route is a routing table as the kernel of a little-endian machine prints it:
// two default routes by metric (wlan0 at 600, eth0 at 100), and routes that must not
// count: one without a gateway (tun0), one down (eth1, flags 0002), local networks, a
// 10.0.0.0/8 route via a gateway, and lines that do not parse.
func TestParseRoutes(t *testing.T) {
	f, err := os.Open("testdata/route")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := parseRoutes(f, binary.LittleEndian)
	if want := netip.MustParseAddr("192.168.2.1"); err != nil || got != want {
		t.Fatalf("default gateway %v, %v; want %v", got, err, want)
	}
	none := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
	if _, err := parseRoutes(strings.NewReader(none), binary.LittleEndian); !errors.Is(err, ErrNoGateway) {
		t.Fatalf("table without a default route: %v", err)
	}
}

func TestEpochConsistent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur uint32
		elapsed   time.Duration
		want      bool
	}{
		{"in step", 1000, 1060, time.Minute, true},
		{"reordered by a second", 1000, 999, 0, true},
		{"went back", 1000, 998, 0, false},
		{"rebooted", 100000, 30, 10 * time.Minute, false},
		{"router slow by a sixteenth", 0, 1600, 1700 * time.Second, true},
		{"router far too slow", 0, 1000, 1200 * time.Second, false},
		{"router far too fast", 0, 1200, 1000 * time.Second, false},
		{"within two seconds", 10, 12, 0, true},
	} {
		if got := epochConsistent(tc.prev, tc.cur, tc.elapsed); got != tc.want {
			t.Errorf("%s: epochConsistent(%d, %d, %v) = %v", tc.name, tc.prev, tc.cur, tc.elapsed, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want error
	}{
		{Config{}, ErrNoLocalPort},
		{Config{LocalPort: 1, Gateway: netip.MustParseAddr("fe80::1")}, ErrGatewayNotIPv4},
		{Config{LocalPort: 1, LocalAddr: netip.MustParseAddr("::1")}, ErrGatewayNotIPv4},
		{Config{LocalPort: 1, Protocols: []Protocol{PCP, PCP}}, ErrBadProtocols},
		{Config{LocalPort: 1, Protocols: []Protocol{0}}, ErrBadProtocols},
		{Config{LocalPort: 1, Gateway: netip.MustParseAddr("::ffff:192.168.1.1"), Protocols: []Protocol{UPnP, NATPMP}}, nil},
	} {
		if _, err := New(tc.cfg); !errors.Is(err, tc.want) {
			t.Errorf("New(%+v) = %v, want %v", tc.cfg, err, tc.want)
		}
	}
}
