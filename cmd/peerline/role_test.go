package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDataRole(t *testing.T) {
	for _, c := range []struct {
		files []string
		role  string
		hint  string
	}{
		{[]string{"client.json", "key", "credential"}, "client", "start 'peerline client --data DIR' first"},
		{[]string{"key"}, "", "start 'peerline client --data DIR' (or 'peerline supernode --data DIR') first"}, // a first client run that stopped early
		{[]string{"supernode.role", "key", "peerline.sock"}, "supernode", "start 'peerline supernode --data DIR' first"},
		{[]string{"login.key", "login.pub", "admit.secret", "turn.secret"}, "loginsrv", "a login server has no control socket"},
		{[]string{"turn.secret"}, "relay", "a relay has no control socket"},
		{nil, "", "start 'peerline client --data DIR' (or 'peerline supernode --data DIR') first"},
	} {
		dir := t.TempDir()
		for _, f := range c.files {
			os.WriteFile(filepath.Join(dir, f), nil, 0o600)
		}
		if got := dataRole(dir); got != c.role {
			t.Errorf("%v: role %q, want %q", c.files, got, c.role)
		}
		if err := notRunning(dir); !strings.Contains(err.Error(), strings.ReplaceAll(c.hint, "DIR", dir)) {
			t.Errorf("%v: %q, want %q", c.files, err, c.hint)
		}
	}
	missing := filepath.Join(t.TempDir(), "none")
	if err := notRunning(missing); !strings.Contains(err.Error(), "no such data directory") {
		t.Errorf("missing dir: %v", err)
	}
}
