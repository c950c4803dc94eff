package portmap

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The igd of these tests is a router's UPnP Internet Gateway Device on loopback: an HTTP
// server with a minimal root description and one WAN connection service, and an SSDP
// responder that answers a unicast search with the description's URL. It records the
// searches and the SOAP calls it receives and checks them as it goes.

const testUDN = "uuid:11111111-2222-3333-4444-555555555555"

type soapCall struct {
	action string
	args   map[string]string
}

type igd struct {
	t    testing.TB
	srv  *httptest.Server
	ssdp net.PacketConn
	urn  string // the WAN connection service offered
	wg   sync.WaitGroup

	mu sync.Mutex // mu protects all following fields
	// ext is what GetExternalIPAddress answers.
	ext string
	// fault, if not 0, is the UPnP error AddPortMapping answers with.
	fault int
	// permanentOnly makes AddPortMapping refuse leases other than 0 (error 725).
	permanentOnly bool
	calls         []soapCall
	searches      [][]byte
}

func newIGD(t testing.TB, urn string) *igd {
	t.Helper()
	g := &igd{t: t, urn: urn, ext: routerExt.String()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rootDesc.xml", g.serveDescription)
	mux.HandleFunc("POST /ctl/conn", g.serveSOAP)
	g.srv = httptest.NewServer(mux)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.ssdp = conn
	g.wg.Go(g.serveSSDP)
	t.Cleanup(func() {
		conn.Close()
		g.wg.Wait()
		g.srv.Close()
	})
	return g
}

func (g *igd) rootURL() string { return g.srv.URL + "/rootDesc.xml" }

func (g *igd) ssdpPort() uint16 { return uint16(g.ssdp.LocalAddr().(*net.UDPAddr).Port) }

func (g *igd) set(f func(g *igd)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *igd) soapCalls() []soapCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]soapCall(nil), g.calls...)
}

func (g *igd) searchCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.searches)
}

func (g *igd) actions() []string {
	var out []string
	for _, c := range g.soapCalls() {
		out = append(out, c.action)
	}
	return out
}

func (g *igd) serveDescription(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	// The service sits two devices down, as in real IGDs, with a relative control URL.
	fmt.Fprintf(w, `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>0</minor></specVersion>
  <device>
    <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
    <friendlyName>test router</friendlyName>
    <UDN>%[1]s</UDN>
    <serviceList>
      <service>
        <serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
        <serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>
        <controlURL>/ctl/l3f</controlURL>
        <eventSubURL>/evt/l3f</eventSubURL>
        <SCPDURL>/l3f.xml</SCPDURL>
      </service>
    </serviceList>
    <deviceList>
      <device>
        <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
        <UDN>%[1]s-wan</UDN>
        <deviceList>
          <device>
            <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
            <UDN>%[1]s-conn</UDN>
            <serviceList>
              <service>
                <serviceType>%[2]s</serviceType>
                <serviceId>urn:upnp-org:serviceId:WANConn1</serviceId>
                <controlURL>ctl/conn</controlURL>
                <eventSubURL>/evt/conn</eventSubURL>
                <SCPDURL>/conn.xml</SCPDURL>
              </service>
            </serviceList>
          </device>
        </deviceList>
      </device>
    </deviceList>
  </device>
</root>
`, testUDN, g.urn)
}

// soapEnvelope is what a SOAP request is read into: the action element and its
// arguments, whatever their names.
type soapEnvelope struct {
	Body struct {
		Action struct {
			XMLName xml.Name
			Args    []struct {
				XMLName xml.Name
				Value   string `xml:",chardata"`
			} `xml:",any"`
		} `xml:",any"`
	} `xml:"Body"`
}

func (g *igd) serveSOAP(w http.ResponseWriter, r *http.Request) {
	header := r.Header.Get("SOAPACTION")
	ns, action, ok := strings.Cut(strings.Trim(header, `"`), "#")
	if !ok || ns != g.urn {
		g.t.Errorf("SOAPACTION %q, want %q#...", header, g.urn)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		g.t.Errorf("SOAP Content-Type %q", ct)
	}
	body, _ := io.ReadAll(r.Body)
	var env soapEnvelope
	if err := xml.Unmarshal(body, &env); err != nil {
		g.t.Errorf("SOAP body does not parse: %v\n%s", err, body)
	}
	if got := env.Body.Action.XMLName; got.Local != action || got.Space != g.urn {
		g.t.Errorf("SOAP body action %v, header says %s", got, header)
	}
	args := map[string]string{}
	for _, a := range env.Body.Action.Args {
		args[a.XMLName.Local] = a.Value
	}
	g.mu.Lock()
	g.calls = append(g.calls, soapCall{action, args})
	fault := 0
	var out string
	switch action {
	case "AddPortMapping":
		switch {
		case g.fault != 0:
			fault = g.fault
		case g.permanentOnly && args["NewLeaseDuration"] != "0":
			fault = 725
		}
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>" + g.ext + "</NewExternalIPAddress>"
	case "DeletePortMapping":
	default:
		fault = 401 // Invalid Action
	}
	g.mu.Unlock()
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	if fault != 0 {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>test fault</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, fault)
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%[1]sResponse xmlns:u="%[2]s">%[3]s</u:%[1]sResponse></s:Body></s:Envelope>`, action, g.urn, out)
}

// wantSearch is the SSDP search the client must send, byte for byte.
const wantSearch = "M-SEARCH * HTTP/1.1\r\n" +
	"HOST: 239.255.255.250:1900\r\n" +
	"MAN: \"ssdp:discover\"\r\n" +
	"MX: 1\r\n" +
	"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
	"\r\n"

func (g *igd) serveSSDP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := g.ssdp.ReadFrom(buf)
		if err != nil {
			return
		}
		b := append([]byte(nil), buf[:n]...)
		g.mu.Lock()
		g.searches = append(g.searches, b)
		g.mu.Unlock()
		if string(b) != wantSearch {
			g.t.Errorf("SSDP search\n%q\nwant\n%q", b, wantSearch)
			continue
		}
		resp := "HTTP/1.1 200 OK\r\n" +
			"CACHE-CONTROL: max-age=120\r\n" +
			"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"USN: " + testUDN + "::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"EXT:\r\n" +
			"SERVER: test/1.0 UPnP/1.1 router/1.0\r\n" +
			"LOCATION: " + g.rootURL() + "\r\n" +
			"\r\n"
		g.ssdp.WriteTo([]byte(resp), from)
	}
}
