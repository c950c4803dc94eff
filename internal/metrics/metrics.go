// Package metrics holds the counters every Peerline role keeps: a flat set of named,
// monotonically increasing uint64 values that tests read directly and that the roles
// export in the Prometheus text format.
package metrics

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
)

// Counter is what code that counts events needs: one method, so tests can pass a Set
// and production code can pass the same Set that feeds the exporter.
type Counter interface {
	Inc(name string)
}

// Discard is a Counter that counts nothing, for code whose counter is optional.
var Discard Counter = discard{}

type discard struct{}

func (discard) Inc(string) {}

// Set is a concurrency-safe collection of named counters. The zero value is ready.
type Set struct {
	m sync.Map // name -> *atomic.Uint64
}

var _ Counter = (*Set)(nil)

func (s *Set) counter(name string) *atomic.Uint64 {
	if v, ok := s.m.Load(name); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := s.m.LoadOrStore(name, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

// Inc adds one to the counter name.
func (s *Set) Inc(name string) { s.counter(name).Add(1) }

// Add adds n to the counter name.
func (s *Set) Add(name string, n uint64) { s.counter(name).Add(n) }

// Get returns the value of counter name (0 if never counted).
func (s *Set) Get(name string) uint64 {
	if v, ok := s.m.Load(name); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

// Snapshot returns a copy of every counter.
func (s *Set) Snapshot() map[string]uint64 {
	out := make(map[string]uint64)
	s.m.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// WritePrometheus writes every counter as a Prometheus counter named prefix_name_total.
func (s *Set) WritePrometheus(w io.Writer, prefix string) error {
	snap := s.Snapshot()
	names := make([]string, 0, len(snap))
	for n := range snap {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		full := prefix + "_" + n + "_total"
		if _, err := fmt.Fprintf(w, "# TYPE %s counter\n%s %d\n", full, full, snap[n]); err != nil {
			return err
		}
	}
	return nil
}
