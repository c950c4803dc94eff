package ctl

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
)

func TestServeAndDo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	m := &metrics.Set{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Serve(ctx, ln, func(ctx context.Context, r Request) (any, error) {
			if r.Cmd == "echo" {
				return map[string][]string{"args": r.Args}, nil
			}
			return nil, proto.ErrNoSuchUser.With("no such user %q", "zed")
		}, m)
	}()
	defer func() { cancel(); <-done }()

	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	var out struct{ Args []string }
	if err := Do(cctx, path, Request{Cmd: "echo", Args: []string{"a", "b"}}, &out); err != nil || len(out.Args) != 2 {
		t.Fatalf("echo: %v %v", out, err)
	}
	err = Do(cctx, path, Request{Cmd: "x"}, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != "no_such_user" {
		t.Fatalf("remote error: %v", err)
	}
	if _, err := Listen(path); err == nil {
		t.Fatal("second Listen took over a live socket")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("{garbage\n"))
	buf := make([]byte, 200)
	n, _ := c.Read(buf)
	c.Close()
	if !strings.Contains(string(buf[:n]), "bad_request") || m.Get("ctl_errors") != 1 {
		t.Fatalf("garbage answered %q, ctl_errors=%d", buf[:n], m.Get("ctl_errors"))
	}
	if err := Do(cctx, filepath.Join(t.TempDir(), "none.sock"), Request{Cmd: "x"}, nil); !errors.Is(err, ErrNoClient) {
		t.Fatalf("no client: %v", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"cmd":"status"}`))
	f.Add([]byte(`{"cmd":"buddy.add","args":["bob"]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err == nil && (r.Cmd == "" || len(r.Args) > 64) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
