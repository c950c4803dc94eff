// Package ctl is the local control protocol between a running client and the commands
// that talk to it (peerline status, buddy, search). It runs over a Unix socket in the
// client's data directory, mode 0600, so only the owner can drive the client.
//
// Each exchange is one request line and one response line, both JSON objects ending in
// '\n', at most MaxLine bytes:
//
//	request:  {"cmd":"buddy.add","args":["bob"]}
//	response: {"ok":true,"result":{...}}  or  {"ok":false,"code":"no_such_user","error":"no such user \"bob\""}
package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/serve"
)

// MaxLine bounds a request or response line.
const MaxLine = 1 << 20

// CmdStatus is the request every node's control socket answers, a supernode's too: the
// node's status as a JSON object.
const CmdStatus = "status"

// Request asks the client to do Cmd.
type Request struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args,omitempty"`
}

// Response carries the result or the error of a Request.
type Response struct {
	OK     bool            `json:"ok"`
	Code   string          `json:"code,omitempty"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Errors.
var (
	ErrLineTooLong = errors.New("ctl: line longer than 1 MiB")
	ErrBadRequest  = errors.New("ctl: malformed request")
	ErrNoClient    = errors.New("ctl: no client is running with that data directory (start 'peerline client --data DIR' first)")
)

// DecodeRequest parses one request line.
func DecodeRequest(line []byte) (Request, error) {
	if len(line) > MaxLine {
		return Request{}, ErrLineTooLong
	}
	var r Request
	if err := json.Unmarshal(line, &r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if r.Cmd == "" || len(r.Cmd) > 64 || len(r.Args) > 64 {
		return Request{}, fmt.Errorf("%w: missing or oversized cmd/args", ErrBadRequest)
	}
	for _, a := range r.Args {
		if len(a) > 4096 {
			return Request{}, fmt.Errorf("%w: argument too long", ErrBadRequest)
		}
	}
	return r, nil
}

// Handler answers a request. A *proto.Error keeps its code in the response.
type Handler func(ctx context.Context, r Request) (any, error)

// Listen opens the control socket at path, replacing a stale socket file left by a client
// that died. It refuses to take over the socket of a client that still answers.
func Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("ctl: a client is already running on %s", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve answers requests on ln until ctx ends. Bad lines are answered with an error and
// counted as ctl_errors.
func Serve(ctx context.Context, ln net.Listener, h Handler, m metrics.Counter) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var bo serve.AcceptBackoff
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if serve.Temporary(err) {
				// Out of descriptors: the process is busy, not its socket gone.
				m.Inc("ctl_accept_errors")
				if !bo.Wait(ctx) {
					return nil
				}
				continue
			}
			return err
		}
		bo.Reset()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			serveConn(ctx, c, h, m)
		}()
	}
}

func serveConn(ctx context.Context, c net.Conn, h Handler, m metrics.Counter) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	br := bufio.NewReaderSize(c, 4096)
	for {
		line, err := readLine(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				m.Inc("ctl_errors")
				writeResponse(c, Response{Code: "bad_request", Error: err.Error()})
			}
			return
		}
		req, err := DecodeRequest(line)
		var resp Response
		if err != nil {
			m.Inc("ctl_errors")
			resp = Response{Code: "bad_request", Error: err.Error()}
		} else {
			resp = respond(h(ctx, req))
		}
		if err := writeResponse(c, resp); err != nil {
			return
		}
	}
}

func respond(v any, err error) Response {
	if err != nil {
		r := Response{Code: "error", Error: err.Error()}
		if pe, ok := proto.AsError(err); ok {
			r.Code = pe.Code
		}
		return r
	}
	b, err := json.Marshal(v)
	if err != nil {
		return Response{Code: "internal", Error: err.Error()}
	}
	return Response{OK: true, Result: b}
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxLine {
			return nil, ErrLineTooLong
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

func writeResponse(w io.Writer, r Response) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// RemoteError is an error the client answered with.
type RemoteError struct {
	Code, Msg string
}

func (e *RemoteError) Error() string { return e.Msg }

// Do sends one request to the client whose socket is at path and decodes the result into
// out (which may be nil).
func Do(ctx context.Context, path string, req Request, out any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoClient, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return err
	}
	line, err := readLine(bufio.NewReader(c))
	if err != nil {
		return fmt.Errorf("ctl: reading the answer: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("ctl: bad answer: %w", err)
	}
	if !resp.OK {
		return &RemoteError{Code: resp.Code, Msg: resp.Error}
	}
	if out != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}
