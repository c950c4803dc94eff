package portmap

import (
	"flag"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/peerline/peerline/internal/fuzzseed"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/Fuzz* from the seeds in fuzz_test.go")

// fuzzSeeds are the checked-in seeds of each fuzz target: answers as routers send them,
// and the near misses and junk a router or a stranger on the network may send instead.
func fuzzSeeds() map[string]map[string][]byte {
	ext := netip.MustParseAddr("203.0.113.7")
	mapOK := appendPCPResponse(nil, pcpResponse{op: pcpOpMap, lifetime: 3600, epoch: 77, hasMap: true,
		nonce: testNonce, protocol: 17, internalPort: 41641, externalPort: 50000, externalIP: ext})
	ssdpOK := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: " + igdSearchTarget + "\r\n" +
		"USN: " + testUDN + "::" + igdSearchTarget + "\r\nEXT:\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"
	return map[string]map[string][]byte{
		"FuzzParseNATPMP": {
			"external":            appendNATPMPResponse(nil, natpmpResponse{op: 0, epoch: 256, external: ext}),
			"map":                 appendNATPMPResponse(nil, natpmpResponse{op: 1, epoch: 9, internalPort: 41641, externalPort: 50000, lifetime: 3600}),
			"delete":              appendNATPMPResponse(nil, natpmpResponse{op: 1, epoch: 9, internalPort: 41641}),
			"not-authorized":      {0, 129, 0, 2, 0, 0, 0, 5},
			"unsupported-version": {0, 128, 0, 1, 0, 0, 0, 0},
			"short-success":       {0, 129, 0, 0, 0, 0, 0, 9, 0xa2, 0x69},
			"request":             appendNATPMPMap(nil, 41641, 41641, 7200),
			"unknown-opcode":      {0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			"pcp":                 mapOK,
			"empty":               {},
		},
		"FuzzParsePCP": {
			"map":               mapOK,
			"map-options":       append(append([]byte(nil), mapOK...), 0x80, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0),
			"option-overrun":    append(append([]byte(nil), mapOK...), 0x80, 0, 0, 9, 1, 2, 3, 4),
			"announce":          appendPCPResponse(nil, pcpResponse{op: pcpOpAnnounce, epoch: 5}),
			"error-no-data":     appendPCPResponse(nil, pcpResponse{op: pcpOpMap, result: pcpMalformedRequest}),
			"unsupp-version":    appendPCPResponse(nil, pcpResponse{op: pcpOpAnnounce, result: pcpUnsuppVersion}),
			"success-truncated": mapOK[:pcpHeaderLen+12],
			"request":           appendPCPMap(nil, pcpMapRequest{client: ext, lifetime: 7200, nonce: testNonce, internalPort: 1}),
			"natpmp":            appendNATPMPResponse(nil, natpmpResponse{op: 1, epoch: 9, internalPort: 41641, externalPort: 50000, lifetime: 3600}),
			"odd-length":        mapOK[:57],
		},
		"FuzzParseSSDP": {
			"igd":         []byte(ssdpOK),
			"no-location": []byte("HTTP/1.1 200 OK\r\nST: " + igdSearchTarget + "\r\n\r\n"),
			"not-found":   []byte("HTTP/1.1 404 Not Found\r\nLOCATION: http://192.168.1.1/\r\n\r\n"),
			"bad-scheme":  []byte("HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n"),
			"relative":    []byte("HTTP/1.1 200 OK\r\nLOCATION: /rootDesc.xml\r\n\r\n"),
			"search":      []byte(wantSearch),
			"truncated":   []byte(ssdpOK[:40]),
			"binary":      mapOK,
		},
	}
}

func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range fuzzSeeds() {
		fuzzseed.Sync(t, filepath.Join("testdata", "fuzz", target), seeds, *updateCorpus, nil)
	}
}

// FuzzParseNATPMP checks that parseNATPMP never panics, and that what it reads is what
// it would read again from the response written back.
func FuzzParseNATPMP(f *testing.F) {
	for _, b := range fuzzSeeds()["FuzzParseNATPMP"] {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseNATPMP(b)
		if err != nil {
			return
		}
		if r.op > natpmpOpMapTCP {
			t.Fatalf("opcode %d accepted", r.op)
		}
		if r.result == natpmpSuccess && r.op == natpmpOpExternal && !r.external.Is4() {
			t.Fatalf("success without an external address: %+v", r)
		}
		again, err := parseNATPMP(appendNATPMPResponse(nil, r))
		if err != nil || again != r {
			t.Fatalf("written back and parsed again: %+v, %v; first %+v", again, err, r)
		}
	})
}

// FuzzParsePCP checks that parsePCP never panics, and that what it reads is what it
// would read again from the response written back.
func FuzzParsePCP(f *testing.F) {
	for _, b := range fuzzSeeds()["FuzzParsePCP"] {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCP(b)
		if err != nil {
			return
		}
		if len(b) > pcpMaxLen || len(b)%4 != 0 {
			t.Fatalf("%d bytes accepted", len(b))
		}
		if r.op == pcpOpMap && r.result == pcpSuccess && !r.hasMap {
			t.Fatalf("successful MAP without its data: %+v", r)
		}
		again, err := parsePCP(appendPCPResponse(nil, r))
		if err != nil || again != r {
			t.Fatalf("written back and parsed again: %+v, %v; first %+v", again, err, r)
		}
	})
}

// FuzzParseSSDP checks that parseSSDPResponse never panics and accepts only answers with
// status 200 and an absolute http or https LOCATION.
func FuzzParseSSDP(f *testing.F) {
	for _, b := range fuzzSeeds()["FuzzParseSSDP"] {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseSSDPResponse(b)
		if err != nil {
			return
		}
		loc, lerr := r.Location()
		if r.StatusCode != 200 || lerr != nil || loc.Host == "" || (loc.Scheme != "http" && loc.Scheme != "https") {
			t.Fatalf("accepted status %d, LOCATION %v (%v)", r.StatusCode, loc, lerr)
		}
	})
}
