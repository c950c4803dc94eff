package overlaysim

import (
	"context"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// BenchmarkSearch1000 measures a lookup at 1,000 supernodes: a random supernode asks the
// holders of a random user's record over the in-memory network (TLS, real protocol), with
// its lookup cache off so every iteration crosses the overlay. PEERLINE_SIM overrides the
// default population of 1000 supernodes and 2000 users.
//
//	go test ./e2e/overlaysim -run '^$' -bench Search1000 -benchtime 2000x
func BenchmarkSearch1000(b *testing.B) {
	sns, users := benchScale(b, 1000, 2000)
	keep, hb := pace(sns, users)
	s := startBench(b, Options{Supernodes: sns, Users: users, KeepAlive: keep, Heartbeat: hb, CacheTTL: -1})
	ctx := context.Background()
	var hops, found int
	n := 0
	for b.Loop() {
		sn := s.SNs[rand.IntN(len(s.SNs))]
		res, h, _ := sn.Lookup(ctx, s.Users[rand.IntN(len(s.Users))].Name, "")
		hops += h
		if res.Found && res.Online {
			found++
		}
		n++
	}
	b.ReportMetric(float64(hops)/float64(n), "hops/op")
	b.ReportMetric(100*float64(found)/float64(n), "found%")
}

// BenchmarkLookupUnderChurn kills 10% of the supernodes at once, waits one keep-alive
// period, then looks users up from random surviving supernodes, and reports the mean and
// 99th percentile of the hops (other supernodes contacted) and the share found.
//
//	PEERLINE_SIM=1000,10000 go test ./e2e/overlaysim -run '^$' -bench UnderChurn -benchtime 10000x -timeout 30m
func BenchmarkLookupUnderChurn(b *testing.B) {
	sns, users := benchScale(b, 1000, 2000)
	keep, hb := pace(sns, users)
	s := startBench(b, Options{Supernodes: sns, Users: users, KeepAlive: keep, Heartbeat: hb, CacheTTL: -1})
	s.KillSupernodes(sns / 10)
	// What is measured is a lookup one keep-alive period after the kill: the time the
	// supernodes have, by the protocol, to notice the dead and place their records
	// again. It is that much real time passing, which no state of theirs stands in for.
	time.Sleep(keep)
	var live []*SN
	for _, sn := range s.SNs {
		if !sn.Killed() {
			live = append(live, sn)
		}
	}
	ctx := context.Background()
	var hops []int
	found := 0
	for b.Loop() {
		sn := live[rand.IntN(len(live))]
		res, h, _ := sn.Lookup(ctx, s.Users[rand.IntN(len(s.Users))].Name, "")
		hops = append(hops, h)
		if res.Found && res.Online {
			found++
		}
	}
	sort.Ints(hops)
	sum := 0
	for _, h := range hops {
		sum += h
	}
	b.ReportMetric(float64(sum)/float64(len(hops)), "mean-hops")
	b.ReportMetric(float64(hops[len(hops)*99/100]), "p99-hops")
	b.ReportMetric(100*float64(found)/float64(len(hops)), "found%")
}

func benchScale(b *testing.B, sns, users int) (int, int) {
	if v := getenvScale(); v != nil {
		return v[0], v[1]
	}
	return sns, users
}

func startBench(b *testing.B, opts Options) *Sim {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := Start(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	b.Logf("%d supernodes, %d users up in %v", opts.Supernodes, opts.Users, time.Since(start).Round(time.Millisecond))
	return s
}
