package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	in := fromBuildInfo(bi)
	if got, want := in.String(), "v1.2.3 rev 0123456789ab (2026-12-01T10:00:00Z, modified) go1.26.8"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	in = fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.8"})
	if got, want := in.String(), "(devel) go1.26.8"; got != want {
		t.Fatalf("unstamped String() = %q, want %q", got, want)
	}
	if Get().Go == "" {
		t.Fatal("Get() of the test binary has no Go version")
	}
}
