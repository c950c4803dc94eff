package netlab

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// The processes a lab starts get SIGKILL when the test process dies (Pdeathsig), so a
// test process killed by a timeout or SIGKILL leaves no server running; its namespaces
// (and anything a process forked off, which Pdeathsig does not cover) are reaped by the
// next lab's Reap.
//
// Linux sends the parent-death signal when the *thread* that forked the child exits, not
// the process, and the Go runtime may end threads (a goroutine that exits while locked to
// its thread takes the thread with it, as Host.Do does when it cannot leave a namespace).
// So every start goes through one goroutine locked to its own thread for the life of the
// test process: that thread ends only with the process.

var spawner struct {
	once sync.Once
	req  chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

// StartTied starts cmd with SIGKILL as its parent-death signal, from the spawner thread.
func StartTied(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.req = make(chan spawnReq)
		go spawnLoop(spawner.req)
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	r := spawnReq{cmd: cmd, errc: make(chan error, 1)}
	spawner.req <- r
	return <-r.errc
}

// spawnLoop runs for the life of the process on purpose: its thread must never exit
// (see above), and it holds nothing but that thread.
func spawnLoop(req <-chan spawnReq) {
	runtime.LockOSThread() // never unlocked
	for r := range req {
		r.errc <- r.cmd.Start()
	}
}

// execOutput runs a short command in the root namespace (no lab log) and returns its
// combined output.
func execOutput(argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
}
