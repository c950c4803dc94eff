package overlaysim

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // served only when PEERLINE_PPROF is set
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain serves net/http/pprof on PEERLINE_PPROF (host:port) when it is set, so that a
// long run at full scale can be profiled while it runs:
//
//	go tool pprof -seconds 30 http://localhost:6060/debug/pprof/profile
//
// A process too loaded to answer HTTP in time can profile itself instead:
// PEERLINE_CPUPROFILE=FILE,START,LENGTH (e.g. cpu.pb,60s,30s) writes a CPU profile of
// LENGTH from START after the process began, PEERLINE_GOROUTINES=FILE,AT (e.g.
// g.pb,200s) the goroutine profile at AT, and PEERLINE_HEAPPROFILE=FILE,AT the heap
// profile at AT (after a collection, with the runtime's memory statistics beside it in
// FILE.txt). PEERLINE_MEMLOG=INTERVAL (e.g. 5s) prints the runtime's memory figures, the
// goroutine count and the CPU time used so far to stderr every INTERVAL.
func TestMain(m *testing.M) {
	if v := os.Getenv("PEERLINE_MEMLOG"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "PEERLINE_MEMLOG=%q: want an interval\n", v)
			os.Exit(2)
		}
		go logMemory(d)
	}
	if addr := os.Getenv("PEERLINE_PPROF"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
	if v := os.Getenv("PEERLINE_CPUPROFILE"); v != "" {
		if err := profileLater(v); err != nil {
			fmt.Fprintln(os.Stderr, "PEERLINE_CPUPROFILE:", err)
			os.Exit(2)
		}
	}
	for _, p := range []struct{ env, profile string }{{"PEERLINE_GOROUTINES", "goroutine"}, {"PEERLINE_HEAPPROFILE", "heap"}} {
		v := os.Getenv(p.env)
		if v == "" {
			continue
		}
		file, at, ok := strings.Cut(v, ",")
		d, err := time.ParseDuration(at)
		if !ok || err != nil {
			fmt.Fprintf(os.Stderr, "%s=%q: want FILE,AT\n", p.env, v)
			os.Exit(2)
		}
		time.AfterFunc(d, func() { writeProfile(p.env, p.profile, file) })
	}
	os.Exit(m.Run())
}

func profileLater(spec string) error {
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		return fmt.Errorf("%q: want FILE,START,LENGTH", spec)
	}
	start, err1 := time.ParseDuration(parts[1])
	length, err2 := time.ParseDuration(parts[2])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%q: want FILE,START,LENGTH", spec)
	}
	f, err := os.Create(parts[0])
	if err != nil {
		return err
	}
	// The profile covers the window of wall-clock time asked for, START after the test
	// binary began and LENGTH long: real time passing is the point.
	go func() {
		time.Sleep(start)
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "PEERLINE_CPUPROFILE:", err)
			return
		}
		time.Sleep(length)
		pprof.StopCPUProfile()
		f.Close()
		fmt.Fprintln(os.Stderr, "PEERLINE_CPUPROFILE: written", parts[0])
	}()
	return nil
}

// writeProfile writes the named profile to file; a heap profile comes after a collection,
// with the runtime's memory statistics in file.txt.
func writeProfile(env, name, file string) {
	if name == "heap" {
		runtime.GC()
	}
	f, err := os.Create(file)
	if err == nil {
		err = pprof.Lookup(name).WriteTo(f, 0)
		f.Close()
	}
	if err == nil && name == "heap" {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		err = os.WriteFile(file+".txt", fmt.Appendf(nil, "HeapAlloc %d\nHeapInuse %d\nStackInuse %d\nSys %d\nNumGC %d\nGoroutines %d\n",
			ms.HeapAlloc, ms.HeapInuse, ms.StackInuse, ms.Sys, ms.NumGC, runtime.NumGoroutine()), 0o644)
	}
	fmt.Fprintln(os.Stderr, env+": written", file, err)
}

// logMemory prints the memory figures every d, for the life of the test binary.
func logMemory(d time.Duration) {
	start := time.Now()
	for range time.Tick(d) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Fprintf(os.Stderr, "memlog %6.0fs heap %5d MiB inuse %5d stacks %5d sys %5d gc %4d goroutines %d cpu %.0fs\n",
			time.Since(start).Seconds(), ms.HeapAlloc>>20, ms.HeapInuse>>20, ms.StackInuse>>20, ms.Sys>>20, ms.NumGC, runtime.NumGoroutine(), cpu.Seconds())
	}
}
