// Package version says which build of peerline is running: the module version and the
// VCS revision the Go toolchain stamped into the binary (runtime/debug.ReadBuildInfo).
package version

import (
	"runtime/debug"
	"strings"
	"sync"
)

// Info is what a build knows about itself.
type Info struct {
	// Module is the main module's version: a tag, a pseudo-version, or "(devel)" for
	// a build from a work tree.
	Module string `json:"module"`
	// Revision is the VCS commit (empty when the build was not stamped, e.g. go run
	// or a test binary), Time its commit time, Modified whether the work tree had
	// uncommitted changes.
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// Go is the toolchain that built the binary.
	Go string `json:"go"`
}

var (
	once sync.Once
	info Info
)

// Get returns the build's Info (read once).
func Get() Info {
	once.Do(func() {
		info = Info{Module: "unknown"}
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			return
		}
		info = fromBuildInfo(bi)
	})
	return info
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Module: bi.Main.Version, Go: bi.GoVersion}
	if in.Module == "" {
		in.Module = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one-line form, e.g. "(devel) rev 014b371c9e2a (2026-12-01T10:00:00Z,
// modified) go1.26.8".
func String() string { return Get().String() }

// String formats in on one line.
func (in Info) String() string {
	var b strings.Builder
	b.WriteString(in.Module)
	if in.Revision != "" {
		rev := in.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		b.WriteString(" rev " + rev)
		var extra []string
		if in.Time != "" {
			extra = append(extra, in.Time)
		}
		if in.Modified {
			extra = append(extra, "modified")
		}
		if len(extra) > 0 {
			b.WriteString(" (" + strings.Join(extra, ", ") + ")")
		}
	}
	if in.Go != "" {
		b.WriteString(" " + in.Go)
	}
	return b.String()
}
