package client

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
)

// LoginServer names the login server a client trusts.
type LoginServer struct {
	Addr string            // host:port
	Key  ed25519.PublicKey // pinned: a server without this key is refused
}

// dialLogin opens a control connection to the login server, authenticating with key (nil
// for an anonymous connection, as registration uses). The caller must Close the conn.
// The connection's reader runs in wg, which the caller waits for once it has closed the
// connection.
func dialLogin(ctx context.Context, d secure.Dialer, ls LoginServer, key ed25519.PrivateKey, idle time.Duration, wg *sync.WaitGroup) (*rpc.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	cfg, err := secure.ClientConfig(key, secure.PinnedKey(ls.Key))
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tc, err := secure.Dial(dctx, d, ls.Addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("login server %s: %w", ls.Addr, err)
	}
	c := rpc.New(tc, rpc.Options{IdleTimeout: idle})
	wg.Go(func() { c.Run(context.WithoutCancel(ctx)) })
	return c, nil
}

// Register creates an account on the login server; d may be nil for real sockets. The password travels only inside TLS
// to the pinned server.
func Register(ctx context.Context, d secure.Dialer, ls LoginServer, name, password string) error {
	var wg sync.WaitGroup
	c, err := dialLogin(ctx, d, ls, nil, 0, &wg)
	if err != nil {
		return err
	}
	defer wg.Wait()
	defer c.Close()
	_, err = c.Call(ctx, &proto.Register{Name: name, Password: password})
	return err
}

// completeHandshake answers one dial-back: an overlay handshake with the client's key, which is
// all the dialler needs to see.
func completeHandshake(ctx context.Context, nc net.Conn, c *Client) {
	defer nc.Close()
	if tc, err := c.ident.AcceptOverlay(ctx, nc); err == nil {
		tc.Close()
	}
}
