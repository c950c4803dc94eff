package overlaysim

import (
	"net/http"
	_ "net/http/pprof" // served only when PEERLINE_PPROF is set
	"os"
	"testing"
)

// TestMain serves net/http/pprof on PEERLINE_PPROF (host:port) when it is set, so that a
// long run at full scale can be profiled while it runs:
//
//	go tool pprof -seconds 30 http://localhost:6060/debug/pprof/profile
func TestMain(m *testing.M) {
	if addr := os.Getenv("PEERLINE_PPROF"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
	os.Exit(m.Run())
}
