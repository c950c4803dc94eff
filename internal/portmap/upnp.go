package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// maxDescription bounds the root device description read from the router.
const maxDescription = 1 << 20

// UPnP error codes this client acts on (IGD WANIPConnection:2 §2.5).
const (
	upnpNotAuthorized         = 606
	upnpConflict              = 718
	upnpOnlyPermanentLeases   = 725
	upnpConflictWithMechanism = 729 // the port is taken by another protocol's mapping
)

// igdClient is the slice of goupnp's generated WAN connection clients that mapping needs.
type igdClient interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string,
		internalPort uint16, internalClient string, enabled bool, description string, leaseDuration uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
}

var (
	_ igdClient = (*internetgateway2.WANIPConnection2)(nil)
	_ igdClient = (*internetgateway2.WANIPConnection1)(nil)
	_ igdClient = (*internetgateway2.WANPPPConnection1)(nil)
)

// igdService is one WAN connection service of the router's UPnP device.
type igdService struct {
	urn string
	igdClient
}

// igdURNs are the services mapped with, most preferred first.
var igdURNs = []string{
	internetgateway2.URN_WANIPConnection_2,
	internetgateway2.URN_WANIPConnection_1,
	internetgateway2.URN_WANPPPConnection_1,
}

// fetchIGD reads the root device description at loc with Config.HTTPClient and returns
// its WAN connection services, most preferred first. It does what goupnp's DeviceByURL
// does, but on the Config's HTTP client rather than goupnp's global one.
func (c *Client) fetchIGD(ctx context.Context, loc string) ([]igdService, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("portmap: UPnP root device URL %q: %w", loc, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil {
		return nil, fmt.Errorf("portmap: UPnP root device URL %q: %w", loc, err)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("portmap: fetching the UPnP description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("portmap: fetching the UPnP description %s: HTTP %s", loc, resp.Status)
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(io.LimitReader(resp.Body, maxDescription))
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	dec.CharsetReader = asciiCharset
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("portmap: the UPnP description at %s does not parse: %w", loc, err)
	}
	base := u
	if root.URLBaseStr != "" {
		if base, err = url.Parse(root.URLBaseStr); err != nil {
			return nil, fmt.Errorf("portmap: the UPnP description at %s has a bad URLBase: %w", loc, err)
		}
	}
	root.SetURLBase(base)
	var out []igdService
	for _, urn := range igdURNs {
		scs, err := goupnp.NewServiceClientsFromRootDevice(root, u, urn)
		if err != nil {
			continue // the device has no such service
		}
		for _, sc := range scs {
			sc.SOAPClient.HTTPClient = *c.cfg.HTTPClient
			out = append(out, igdService{urn, newIGDClient(urn, sc)})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w (description at %s)", ErrNoService, loc)
	}
	return out, nil
}

// newIGDClient wraps sc, a client of the service urn, in goupnp's generated client.
func newIGDClient(urn string, sc goupnp.ServiceClient) igdClient {
	switch urn {
	case internetgateway2.URN_WANIPConnection_2:
		return &internetgateway2.WANIPConnection2{ServiceClient: sc}
	case internetgateway2.URN_WANIPConnection_1:
		return &internetgateway2.WANIPConnection1{ServiceClient: sc}
	}
	return &internetgateway2.WANPPPConnection1{ServiceClient: sc}
}

// asciiCharset lets descriptions that declare a charset other than UTF-8 parse: the parts
// read here (service types and URLs) are ASCII in every charset routers use.
func asciiCharset(_ string, r io.Reader) (io.Reader, error) { return r, nil }

// probeUPnP finds the router's WAN connection services: from Config.UPnPRootURL, or by an
// SSDP search.
func (c *Client) probeUPnP(ctx context.Context, p path) answer {
	loc := c.cfg.UPnPRootURL
	if loc == "" {
		var err error
		if loc, err = c.ssdpSearch(ctx, p); err != nil {
			return answer{err: err}
		}
	}
	svcs, err := c.fetchIGD(ctx, loc)
	if err != nil {
		return answer{err: err}
	}
	return answer{ok: true, igd: svcs}
}

// mapUPnP maps with the first of svcs that works, asking for external port ext, and
// returns the mapping and the service that made it.
func (c *Client) mapUPnP(ctx context.Context, p path, svcs []igdService, ext uint16) (Mapping, igdService, error) {
	var errs []error
	for _, s := range svcs {
		m, err := c.mapIGD(ctx, p, s, ext)
		if err == nil {
			return m, s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return Mapping{}, igdService{}, errors.Join(errs...)
}

// mapIGD adds or refreshes the mapping on s and asks for the external address.
func (c *Client) mapIGD(ctx context.Context, p path, s igdService, ext uint16) (Mapping, error) {
	lease := seconds(c.cfg.Lifetime)
	err := s.AddPortMappingCtx(ctx, "", ext, "UDP", c.cfg.LocalPort, p.local.String(), true, c.cfg.Description, lease)
	if upnpCode(err) == upnpOnlyPermanentLeases {
		// Such a router keeps the mapping until it is deleted (or the router restarts):
		// Run still renews it now and then, which puts it back after a restart.
		lease = 0
		err = s.AddPortMappingCtx(ctx, "", ext, "UDP", c.cfg.LocalPort, p.local.String(), true, c.cfg.Description, lease)
	}
	if err != nil {
		return Mapping{}, upnpError("AddPortMapping", s.urn, err)
	}
	ipText, err := s.GetExternalIPAddressCtx(ctx)
	if err != nil {
		err = upnpError("GetExternalIPAddress", s.urn, err)
	} else if ip, perr := netip.ParseAddr(ipText); perr != nil || !ip.Unmap().Is4() || ip.IsUnspecified() {
		err = fmt.Errorf("%w: UPnP external address %q", ErrBadResponse, ipText)
	} else {
		return Mapping{
			Protocol: UPnP,
			External: netip.AddrPortFrom(ip.Unmap(), ext),
			Internal: netip.AddrPortFrom(p.local, c.cfg.LocalPort),
			Lifetime: time.Duration(lease) * time.Second,
			Obtained: c.clk.Now(),
		}, nil
	}
	// A mapping whose external address is unknown is of no use: take it back.
	if derr := s.DeletePortMappingCtx(ctx, "", ext, "UDP"); derr != nil {
		c.log.Debug("portmap: UPnP mapping not taken back", "err", derr)
	}
	return Mapping{}, err
}

// upnpCode is the UPnP error code of a SOAP fault, or 0.
func upnpCode(err error) int {
	var fault *soap.SOAPFaultError
	if errors.As(err, &fault) {
		return fault.Detail.UPnPError.Errorcode
	}
	return 0
}

// upnpError wraps the error of the SOAP action on the service urn in the named error of
// its UPnP error code, if it has one.
func upnpError(action, urn string, err error) error {
	var fault *soap.SOAPFaultError
	if !errors.As(err, &fault) {
		return fmt.Errorf("portmap: UPnP %s (%s): %w", action, urn, err)
	}
	var named error
	switch code := fault.Detail.UPnPError.Errorcode; code {
	case upnpNotAuthorized:
		named = ErrNotAuthorized
	case upnpConflict, upnpConflictWithMechanism:
		named = ErrPortInUse
	default:
		named = ErrRefused
	}
	return fmt.Errorf("%w (UPnP %s error %d %q, %s)", named, action, fault.Detail.UPnPError.Errorcode,
		fault.Detail.UPnPError.ErrorDescription, urn)
}
