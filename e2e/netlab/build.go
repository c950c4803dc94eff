package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

var builds struct {
	mu   sync.Mutex // guards m
	m    map[string]*buildResult
	once sync.Once
	dir  string
	err  error
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// BuildPeerline builds ./cmd/peerline once per test process and returns the binary's path.
func BuildPeerline(t testing.TB) string {
	return BuildTool(t, "./cmd/peerline")
}

// BuildTool builds the package pkg (relative to the module root, e.g. "./cmd/peerline")
// once per test process into a per-process temp dir, and returns the binary's path. It
// fails the test when the build fails.
func BuildTool(t testing.TB, pkg string) string {
	t.Helper()
	builds.once.Do(func() {
		removeStaleBinDirs()
		builds.dir, builds.err = os.MkdirTemp("", fmt.Sprintf("peerline-lab-bin-%d-", os.Getpid()))
		builds.m = map[string]*buildResult{}
	})
	if builds.err != nil {
		t.Fatalf("netlab: %v", builds.err)
	}
	builds.mu.Lock()
	r := builds.m[pkg]
	if r == nil {
		r = &buildResult{}
		builds.m[pkg] = r
	}
	builds.mu.Unlock()
	r.once.Do(func() {
		root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
		if err != nil {
			r.err = fmt.Errorf("find module root: %w", err)
			return
		}
		r.path = filepath.Join(builds.dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", r.path, pkg)
		cmd.Dir = strings.TrimSpace(string(root))
		if out, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	})
	if r.err != nil {
		t.Fatalf("netlab: %v", r.err)
	}
	return r.path
}

// removeStaleBinDirs removes build dirs of test processes that no longer run (a test
// process cannot remove its own at exit without a TestMain).
func removeStaleBinDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "peerline-lab-bin-*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(d), "peerline-lab-bin-%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}
