package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/config"
)

// startCluster joins the cluster when cluster.nats_url is set: the relay then
// routes through NATS to sessions on every node. It must run before the
// relay starts; its closer runs after the relay has shut down.
func (m *Main) startCluster(ctx context.Context) error {
	if m.cfg.Cluster.NATSURL == "" {
		return nil
	}
	r, err := cluster.New(ctx, clusterConfig(m.cfg), m.log, m.reg)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	m.relayRouter = r
	m.closers = append(m.closers, func(ctx context.Context) error { return r.Close(ctx) })
	m.log.Info("cluster mode", "nats", m.cfg.Cluster.NATSURL, "node", nodeID(m.cfg.Node))
	return nil
}

// clusterConfig is the cluster router's part of the configuration.
func clusterConfig(cfg config.Config) cluster.Config {
	return cluster.Config{URL: cfg.Cluster.NATSURL, Node: nodeID(cfg.Node),
		DeadAfter: cfg.Cluster.DeadAfter, PurgeAfter: cfg.Cluster.PurgeAfter}
}

// nodeID makes a node name usable as a NATS subject token: letters, digits,
// '-' and '_' (a hostname's dots become '-').
func nodeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, s)
}
