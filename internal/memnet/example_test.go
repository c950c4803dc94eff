package memnet_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/peerline/peerline/internal/memnet"
)

// A server on one host, a client on another, 10ms apart.
func Example() {
	n := memnet.New(memnet.Options{Latency: 10 * time.Millisecond})
	server, client := n.Host("198.51.100.1"), n.Host("198.51.100.2")

	ln, err := server.Listen("tcp", ":7000")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo
	}()

	c, err := client.DialContext(context.Background(), "tcp", "198.51.100.1:7000")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	io.ReadFull(c, buf)
	fmt.Printf("%s from %v\n", buf, c.RemoteAddr())

	server.Kill()
	_, err = client.DialContext(context.Background(), "tcp", "198.51.100.1:7000")
	fmt.Println("after Kill:", errors.Is(err, syscall.EHOSTUNREACH), err)
	// Output:
	// hello from 198.51.100.1:7000
	// after Kill: true dial tcp 198.51.100.2:32769->198.51.100.1:7000: connect: no route to host
}
