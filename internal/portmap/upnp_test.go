package portmap

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/metrics"
)

// upnpClient returns a Client of g alone; with byURL it is given the root description's
// URL, otherwise it finds it by an SSDP search of g.
func upnpClient(t *testing.T, g *igd, byURL bool) *Client {
	t.Helper()
	c, _, _ := upnpClientMod(t, g, byURL, nil)
	return c
}

func upnpClientMod(t *testing.T, g *igd, byURL bool, mod func(*Config)) (*Client, *clockwork.FakeClock, *metrics.Set) {
	t.Helper()
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk) // unused by UPnP, but the Config names its port
	c, ms := testClient(t, r, func(cfg *Config) {
		cfg.SSDPPort = g.ssdpPort()
		if byURL {
			cfg.UPnPRootURL = g.rootURL()
		}
		if mod != nil {
			mod(cfg)
		}
	}, UPnP)
	return c, clk, ms
}

func wantCall(t *testing.T, got soapCall, action string, args map[string]string) {
	t.Helper()
	if got.action != action || !maps.Equal(got.args, args) {
		t.Errorf("SOAP call %s %v\nwant %s %v", got.action, got.args, action, args)
	}
}

func addArgs(lease string) map[string]string {
	return map[string]string{
		"NewRemoteHost":             "",
		"NewExternalPort":           "41641",
		"NewProtocol":               "UDP",
		"NewInternalPort":           "41641",
		"NewInternalClient":         "127.0.0.1",
		"NewEnabled":                "1",
		"NewPortMappingDescription": "peerline",
		"NewLeaseDuration":          lease,
	}
}

var deleteArgs = map[string]string{"NewRemoteHost": "", "NewExternalPort": "41641", "NewProtocol": "UDP"}

// Each WAN connection service, found by an SSDP search: AddPortMapping with this host's
// address and port, GetExternalIPAddress, and DeletePortMapping on Delete.
func TestMapUPnP(t *testing.T) {
	for _, urn := range []string{
		"urn:schemas-upnp-org:service:WANIPConnection:1",
		"urn:schemas-upnp-org:service:WANIPConnection:2",
		"urn:schemas-upnp-org:service:WANPPPConnection:1",
	} {
		t.Run(urn[len("urn:schemas-upnp-org:service:"):], func(t *testing.T) {
			g := newIGD(t, urn)
			c := upnpClient(t, g, false)
			m, err := c.Map(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			wantMapping(t, m, UPnP, testExt, 2*time.Hour)
			if n := g.searchCount(); n != 1 {
				t.Errorf("%d SSDP searches, want 1", n)
			}
			if err := c.Delete(t.Context()); err != nil {
				t.Fatal(err)
			}
			calls := g.soapCalls()
			if len(calls) != 3 {
				t.Fatalf("SOAP calls %v", calls)
			}
			wantCall(t, calls[0], "AddPortMapping", addArgs("7200"))
			wantCall(t, calls[1], "GetExternalIPAddress", map[string]string{})
			wantCall(t, calls[2], "DeletePortMapping", deleteArgs)
		})
	}
}

// Given the root description's URL, the client searches for nothing.
func TestUPnPRootURL(t *testing.T) {
	g := newIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
	c := upnpClient(t, g, true)
	if _, err := c.Map(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := g.searchCount(); n != 0 {
		t.Errorf("%d SSDP searches with a root URL given", n)
	}
	// A renewal reuses the service found, without fetching the description again.
	if _, err := c.Map(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := g.actions(), []string{"AddPortMapping", "GetExternalIPAddress", "AddPortMapping", "GetExternalIPAddress"}; !slices.Equal(got, want) {
		t.Errorf("SOAP actions %v, want %v", got, want)
	}
}

// A router that grants only permanent leases (error 725) gets asked again with lease 0.
func TestUPnPPermanentLeaseOnly(t *testing.T) {
	g := newIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
	g.set(func(g *igd) { g.permanentOnly = true })
	c := upnpClient(t, g, true)
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantMapping(t, m, UPnP, testExt, 0)
	if !m.Expiry().IsZero() {
		t.Errorf("a permanent mapping expires at %v", m.Expiry())
	}
	calls := g.soapCalls()
	if len(calls) != 3 {
		t.Fatalf("SOAP calls %v", calls)
	}
	wantCall(t, calls[0], "AddPortMapping", addArgs("7200"))
	wantCall(t, calls[1], "AddPortMapping", addArgs("0"))
}

func TestUPnPErrors(t *testing.T) {
	for _, tc := range []struct {
		fault int
		want  error
	}{{606, ErrNotAuthorized}, {718, ErrPortInUse}, {501, ErrRefused}} {
		g := newIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:2")
		g.set(func(g *igd) { g.fault = tc.fault })
		c := upnpClient(t, g, true)
		_, err := c.Map(t.Context())
		if !errors.Is(err, tc.want) {
			t.Errorf("fault %d: %v, want %v", tc.fault, err, tc.want)
		}
		if got := g.actions(); !slices.Equal(got, []string{"AddPortMapping"}) {
			t.Errorf("fault %d: SOAP actions %v", tc.fault, got)
		}
	}
}

// A mapping whose external address the router will not tell is taken back.
func TestUPnPNoExternalAddress(t *testing.T) {
	g := newIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
	g.set(func(g *igd) { g.ext = "" })
	c := upnpClient(t, g, true)
	if _, err := c.Map(t.Context()); !errors.Is(err, ErrBadResponse) {
		t.Fatalf("Map: %v, want ErrBadResponse", err)
	}
	if got, want := g.actions(), []string{"AddPortMapping", "GetExternalIPAddress", "DeletePortMapping"}; !slices.Equal(got, want) {
		t.Errorf("SOAP actions %v, want %v", got, want)
	}
}

func TestUPnPNoService(t *testing.T) {
	g := newIGD(t, "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1")
	c := upnpClient(t, g, true)
	if _, err := c.Map(t.Context()); !errors.Is(err, ErrNoService) {
		t.Fatalf("Map: %v, want ErrNoService", err)
	}
	res, err := c.Probe(t.Context())
	if err != nil || res.UPnP {
		t.Fatalf("probe %+v, %v", res, err)
	}
}

func TestParseSSDPResponse(t *testing.T) {
	for name, b := range fuzzSeeds()["FuzzParseSSDP"] {
		r, err := parseSSDPResponse(b)
		if ok := name == "igd"; (err == nil) != ok {
			t.Errorf("%s: %v", name, err)
		} else if ok {
			if loc, _ := r.Location(); loc.String() != "http://192.168.1.1:5000/rootDesc.xml" {
				t.Errorf("LOCATION %v", loc)
			}
		} else if !errors.Is(err, errSSDP) {
			t.Errorf("%s: %v, want errSSDP", name, err)
		}
	}
}
