package hostcache_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/peerline/peerline/hostcache"
)

func Example() {
	dir, err := os.MkdirTemp("", "hostcache-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c, err := hostcache.Open(filepath.Join(dir, "hostcache.json"), hostcache.Options{
		Now: func() time.Time { return now },
	})
	if err != nil {
		log.Fatal(err)
	}

	// A seed from the login server.
	c.Merge(
		hostcache.Entry{Addr: "203.0.113.7:33033", Since: now.Add(-30 * 24 * time.Hour), Source: hostcache.SourceLogin},
		hostcache.Entry{Addr: "198.51.100.2:33033", Since: now.Add(-24 * time.Hour), Source: hostcache.SourceLogin},
		hostcache.Entry{Addr: "192.0.2.9:33033", Since: now.Add(-10 * time.Minute), Source: hostcache.SourceLogin},
	)
	// The oldest supernode did not answer; a young one did.
	c.MarkFailure("203.0.113.7:33033")
	c.MarkSuccess("192.0.2.9:33033")

	for _, e := range c.Ranked() {
		fmt.Println(e.Addr, e.Failures)
	}
	if err := c.Save(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 198.51.100.2:33033 0
	// 192.0.2.9:33033 0
	// 203.0.113.7:33033 1
}
