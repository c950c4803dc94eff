package overlaysim

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"testing/synctest"
	"time"
)

func snCounters(s *Sim) map[string]uint64 {
	out := map[string]uint64{}
	for _, sn := range s.SNs {
		for k, v := range sn.Metrics().Snapshot() {
			out["sn."+k] += v
		}
	}
	for _, u := range s.Users {
		if cl := u.Client(); cl != nil {
			for k, v := range cl.Metrics().Snapshot() {
				out["cl."+k] += v
			}
		}
	}
	return out
}

func TestScratchCounters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := startStormSim(t, "cold", true, func(s *Sim) { t.Cleanup(func() { s.Close() }) }, func(o *Options) { o.Buddies = 2 })
		s := st.sim
		time.Sleep(30 * time.Second)
		before := snCounters(s)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := s.RebootUsers(ctx); err != nil {
			t.Fatal(err)
		}
		for {
			n := 0
			for _, u := range s.Users {
				if u.Ready() {
					n++
				}
			}
			if n == len(s.Users) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		after := snCounters(s)
		var ks []string
		for k := range after {
			if after[k] != before[k] && k[:3] == "sn." {
				ks = append(ks, k)
			}
		}
		sort.Slice(ks, func(i, j int) bool { return after[ks[i]]-before[ks[i]] > after[ks[j]]-before[ks[j]] })
		for _, k := range ks {
			fmt.Printf("%-40s %d\n", k, after[k]-before[k])
		}
	})
}
