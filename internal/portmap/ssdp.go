package portmap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/huin/goupnp/ssdp"
)

// igdSearchTarget is the device an SSDP search asks for. An IGD of version 2 answers a
// search for version 1 too, as UPnP devices answer for every version up to theirs.
const igdSearchTarget = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"

// ssdpMulticast is the SSDP group (UPnP Device Architecture 1.1 §1.1.2).
var ssdpMulticast = netip.MustParseAddrPort("239.255.255.250:1900")

// ssdpSearch sends an SSDP search to the router and returns the LOCATION of its root
// device description. The request is goupnp's, and so is the check of the answers; only
// the transport is this package's, so that it runs on Config.ListenPacket and Clock and
// ends with the router's first answer.
func (c *Client) ssdpSearch(ctx context.Context, p path) (string, error) {
	resps, err := ssdp.SSDPRawSearchCtx(ctx, &ssdpClient{c: c, p: p}, igdSearchTarget, 1, c.cfg.Sends)
	if err != nil {
		return "", err
	}
	for _, r := range resps {
		if loc, err := r.Location(); err == nil {
			return loc.String(), nil
		}
	}
	return "", fmt.Errorf("%w: no answer to the SSDP search from %s (UPnP off?)", ErrNoResponse, p.gateway)
}

// ssdpClient is the slice of an HTTP-over-UDP client that goupnp's SSDP search needs.
type ssdpClient struct {
	c *Client
	p path
}

var _ ssdp.HTTPUClient = (*ssdpClient)(nil)

// Do sends req to the router's SSDP port, and to the SSDP group unless the router is on
// loopback, and returns the router's first answer that is for req's search target. Other
// hosts' answers are dropped: the mapping must be made on the gateway. No answer in
// timeout is no answer, not an error, as goupnp's own clients have it.
func (s *ssdpClient) Do(req *http.Request, timeout time.Duration, numSends int) ([]*http.Response, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s %s HTTP/1.1\r\n", req.Method, req.URL.RequestURI())
	if err := req.Header.Write(&buf); err != nil {
		return nil, err
	}
	buf.WriteString("\r\n")
	to := []netip.AddrPort{s.p.ssdp}
	if !s.p.gateway.IsLoopback() {
		to = append(to, ssdpMulticast)
	}
	var target string
	if st := req.Header["ST"]; len(st) > 0 { // goupnp keeps SSDP's header names as they are, not canonical
		target = st[0]
	}
	ctx, cancel := withTimeout(req.Context(), s.c.clk, timeout)
	defer cancel()
	var resp *http.Response
	err := s.c.roundTrip(ctx, s.p.local, exchange{
		what:  "SSDP search",
		to:    to,
		from:  func(src netip.AddrPort) bool { return src.Addr() == s.p.gateway },
		req:   buf.Bytes(),
		sends: min(numSends, s.c.cfg.Sends),
		accept: func(b []byte) (bool, error) {
			r, err := parseSSDPResponse(b)
			if err != nil || r.Header.Get("ST") != target {
				return false, nil
			}
			resp = r
			return true, nil
		},
	})
	if errors.Is(err, ErrNoResponse) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []*http.Response{resp}, nil
}

// parseSSDPResponse parses the answer to an SSDP search: an HTTP 200 response, headers
// only, with an http or https LOCATION.
func parseSSDPResponse(b []byte) (*http.Response, error) {
	r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errSSDP, err)
	}
	r.Body.Close()
	r.Body = http.NoBody
	if r.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: status %q", errSSDP, r.Status)
	}
	loc, err := r.Location()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errSSDP, err)
	}
	if (loc.Scheme != "http" && loc.Scheme != "https") || loc.Host == "" {
		return nil, fmt.Errorf("%w: LOCATION %q", errSSDP, loc)
	}
	return r, nil
}
