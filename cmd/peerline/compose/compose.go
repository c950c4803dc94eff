// Package compose joins the roles where one runs another: a promoted client runs a
// supernode, and a supernode runs a TURN relay. The roles know each other only by the
// interfaces the one that runs the other declares (client.SupernodeRole,
// supernode.Relay); the binary and the harnesses build the concrete ones here.
package compose

import (
	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/relay"
	"github.com/peerline/peerline/supernode"
)

// Supernode is client.PromoteConfig.NewSupernode: package supernode's role, adjusted by
// configure if set (tests and simulations pace it).
func Supernode(configure func(*supernode.Config)) func(client.SupernodeParams) (client.SupernodeRole, error) {
	return func(p client.SupernodeParams) (client.SupernodeRole, error) {
		cfg := supernode.Config{
			Key: p.Key, Name: p.Name, Advertise: p.Advertise, Listener: p.Listener, LoginAddr: p.Login.Addr, LoginKey: p.Login.Key,
			UserCredential: p.UserCredential, Dialer: p.Dialer, MaxClients: p.MaxClients, Logger: p.Logger,
			Overload: p.Overload,
		}
		if configure != nil {
			configure(&cfg)
		}
		return supernode.New(cfg)
	}
}

// Relay is supernode.Config.NewRelay: package relay's server with cfg, keyed with the
// supernode's secret, logging and counting as the supernode says unless cfg does. The
// server is listening when it returns (a port in use is its error); the supernode runs
// it.
func Relay(cfg relay.Config) func(supernode.RelayParams) (supernode.Relay, error) {
	return func(p supernode.RelayParams) (supernode.Relay, error) {
		c := cfg
		c.Secret = p.Secret
		if c.Logger == nil {
			c.Logger = p.Logger
		}
		if c.Metrics == nil {
			c.Metrics = p.Metrics
		}
		if c.Clock == nil && c.Now == nil {
			c.Clock = p.Clock
		}
		s, err := relay.New(c)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}
