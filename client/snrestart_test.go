package client_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
)

// restartKeepAlive is long enough that no keep-alive republishes a record while a test
// below watches: what a restarted supernode holds came from repair.
const restartKeepAlive = 30 * time.Second

// TestRestartedSupernodeGetsRecords restarts a supernode with the same key (a process
// restarted with its data directory): it comes back with no records, and carol's
// supernode, which sees the holder's new incarnation (its Since), hands it carol's record
// without waiting for her next keep-alive. With three supernodes every one holds every
// record.
func TestRestartedSupernodeGetsRecords(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3, KeepAlive: restartKeepAlive})
	sns := o.Supernodes()
	o.Register("carol", "correct horse")
	c := o.StartClient(filepath.Join(t.TempDir(), "carol"), "carol", "correct horse", func(cfg *client.Config) {
		cfg.Prefer, cfg.ParallelAttach = sns[1].Addr, 1
	})
	o.Eventually("carol attached", attached(c))
	// Her first publication is counted when its answer comes back, which is after the
	// holders stored the record: counted before it, it would look like one made meanwhile.
	o.Eventually("carol's first publication answered", func() bool { return c.Metrics().Get("publishes") > 0 })
	o.Eventually("every supernode holds carol", func() bool {
		for _, sn := range o.Supernodes() {
			if _, ok := sn.Held("carol"); !ok {
				return false
			}
		}
		return true
	})
	publishes := c.Metrics().Get("publishes")
	sn0 := o.Restart(sns[0])
	overlaytest.Eventually(t, restartKeepAlive/3, "the restarted supernode holds carol", func() bool {
		_, ok := sn0.Held("carol")
		return ok
	})
	if got := c.Metrics().Get("publishes"); got != publishes {
		t.Fatalf("carol published %d times meanwhile: the record did not come from repair", got-publishes)
	}
}

// TestLookupAfterLoginServerRestart restarts the login server, then a supernode: the
// login server's supernode list starts empty and fills as the supernodes register
// again, and a supernode that registers meanwhile must not take the partial list for the
// layer. alice's lookup through the restarted supernode finds carol online.
func TestLookupAfterLoginServerRestart(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, KeepAlive: restartKeepAlive})
	sns := o.Supernodes()
	o.Register("alice", "correct horse")
	o.Register("carol", "battery staple")
	c := o.StartClient(filepath.Join(t.TempDir(), "carol"), "carol", "battery staple", func(cfg *client.Config) {
		cfg.Prefer, cfg.ParallelAttach = sns[1].Addr, 1
	})
	o.Eventually("carol attached", attached(c))
	o.Eventually("carol published", func() bool { return c.Metrics().Get("publishes") > 0 })
	o.RestartLogin()
	sn0 := o.Restart(sns[0])
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", func(cfg *client.Config) {
		cfg.Prefer, cfg.ParallelAttach = sn0.Addr, 1
	})
	o.Eventually("alice attached", attached(a))
	var sr client.SearchResult
	if err := ask(t, a, client.CmdSearch, []string{"carol"}, &sr); err != nil {
		t.Fatal(err)
	}
	if sr.Source != "overlay" || sr.User == nil || !sr.User.Online {
		t.Fatalf("alice's search for carol through the restarted supernode: %+v, want her online from the overlay", sr)
	}
}
