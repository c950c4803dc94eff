package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/peerline/peerline/client"
)

// supernodeMarker is the file 'peerline supernode' leaves in its data dir, so that a
// command that finds no control socket there can name the command to start.
const supernodeMarker = "supernode.role"

// dataRole says which role keeps its state in dir: "client", "supernode", "loginsrv",
// "relay", "" when none does (or dir does not exist).
func dataRole(dir string) string {
	has := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	switch {
	case has(clientFileName) || has(client.CredentialFile):
		return "client"
	case has(supernodeMarker):
		return "supernode"
	case has(loginKeyFile):
		return "loginsrv"
	case has(relaySecretFile):
		return "relay"
	}
	return ""
}

// notRunning explains that nothing answers on dir's control socket, naming the command
// that starts the role the dir belongs to.
func notRunning(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: no such data directory: start 'peerline client --data %s' (or 'peerline supernode --data %s') first", dir, dir, dir)
	}
	switch r := dataRole(dir); r {
	case "client", "supernode":
		return fmt.Errorf("no %s is running with data dir %s: start 'peerline %s --data %s' first", r, dir, r, dir)
	case "loginsrv":
		return fmt.Errorf("%s is a login server's data dir, and a login server has no control socket: give the data dir of a client or supernode", dir)
	case "relay":
		return fmt.Errorf("%s is a relay's data dir, and a relay has no control socket: give the data dir of a client or supernode", dir)
	}
	return fmt.Errorf("nothing is running with data dir %s: start 'peerline client --data %s' (or 'peerline supernode --data %s') first", dir, dir, dir)
}
