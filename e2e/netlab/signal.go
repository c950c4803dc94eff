package netlab

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// A test process that gets SIGINT (Ctrl-C), SIGTERM (a harness stopping it) or SIGHUP
// tears down every lab it has open, then dies of the same signal, so its exit status still
// says what happened. (A test that exceeds go test's -timeout panics instead; that, and
// SIGKILL, leave namespaces for the next lab's Reap.)

var live struct {
	once sync.Once
	mu   sync.Mutex // mu protects all following fields
	labs map[*Lab]struct{}
	// interrupted is set once a signal arrived: no new lab may start.
	interrupted bool
}

// interruptSignals are the signals that tear labs down.
var interruptSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// register adds l to the labs a signal tears down; it fails after a signal.
func register(l *Lab) error {
	live.once.Do(func() {
		live.labs = map[*Lab]struct{}{}
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, interruptSignals...)
		go onSignal(ch)
	})
	live.mu.Lock()
	defer live.mu.Unlock()
	if live.interrupted {
		return fmt.Errorf("netlab: test process interrupted")
	}
	live.labs[l] = struct{}{}
	return nil
}

func unregister(l *Lab) {
	live.mu.Lock()
	delete(live.labs, l)
	live.mu.Unlock()
}

// onSignal waits for the first interrupting signal (for the life of the process: a signal
// can come at any time), tears down every open lab, and re-raises the signal with its
// default action.
func onSignal(ch <-chan os.Signal) {
	sig := <-ch
	live.mu.Lock()
	live.interrupted = true
	labs := make([]*Lab, 0, len(live.labs))
	for l := range live.labs {
		labs = append(labs, l)
	}
	live.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.teardown(true)
			fmt.Fprintf(os.Stderr, "netlab: %v: tore down lab %s (%d namespaces): %v\n", sig, l.id, len(l.Namespaces()), errOK(err))
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Fprintf(os.Stderr, "netlab: %v: teardown still running after 30s; the next lab's Reap removes the rest\n", sig)
	}
	signal.Reset(interruptSignals...)
	s, _ := sig.(syscall.Signal)
	syscall.Kill(os.Getpid(), s)
	// The signal is delivered meanwhile and ends the process with its default action,
	// so that the parent sees death by the signal. Nothing can be awaited for that: it
	// is the end of this process. The exit is there for a signal whose default action
	// does not end it.
	time.Sleep(5 * time.Second)
	os.Exit(128 + int(s))
}

func errOK(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}
