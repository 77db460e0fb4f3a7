package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/config"
)

// startCluster joins the cluster when cluster.nats_url is set: the relay then
// routes through NATS to sessions on every node. It must run before the
// relay starts; its closer runs after the relay has shut down. It waits up
// to cluster.connect_timeout for NATS.
func (m *Main) startCluster(ctx context.Context) error {
	cc := m.cfg.Cluster
	if cc.NATSURL == "" {
		return nil
	}
	opts, err := natsOptions(cc)
	if err != nil {
		return err
	}
	ccfg := clusterConfig(m.cfg)
	ccfg.NATSOptions = opts
	r, err := cluster.New(ctx, ccfg, m.log, m.reg)
	if err != nil {
		return err
	}
	m.relayRouter = r
	m.closers = append(m.closers, func(ctx context.Context) error { return r.Close(ctx) })
	// A node cut off from NATS still serves its own clients, but messages
	// to the rest of the cluster are only stored: past the grace, the load
	// balancer should send new clients elsewhere.
	m.API.AddCheck("cluster", func(context.Context) error {
		if d := r.Outage(); d > cc.ReadyGrace {
			return fmt.Errorf("cut off from NATS for %s (cluster.ready_grace %s): messages to other nodes are stored, not delivered", d.Round(100*time.Millisecond), cc.ReadyGrace)
		}
		return nil
	})
	m.log.Info("cluster mode", "nats", r.URL(), "node", nodeID(m.cfg.Node), "namespace", cc.Namespace)
	return nil
}

// clusterConfig is the cluster router's part of the configuration (but
// the NATS options, see natsOptions).
func clusterConfig(cfg config.Config) cluster.Config {
	cc := cfg.Cluster
	return cluster.Config{URL: cc.NATSURL, Node: nodeID(cfg.Node),
		DeadAfter: cc.DeadAfter, PurgeAfter: cc.PurgeAfter, Namespace: cc.Namespace, Replicas: cc.Replicas,
		MemoryStorage: cc.Storage == "memory", ConnectTimeout: cc.ConnectTimeout}
}

// natsOptions turns the TLS and credential keys into NATS options. Files
// are checked here, so that a wrong path is one clear error at start and
// not connect_timeout's worth of retries.
func natsOptions(cc config.Cluster) ([]nats.Option, error) {
	var opts []nats.Option
	for key, path := range map[string]string{"tls_ca": cc.TLSCA, "tls_cert": cc.TLSCert, "tls_key": cc.TLSKey,
		"creds_file": cc.CredsFile, "nkey_file": cc.NKeyFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("cluster.%s: %w", key, err)
		}
	}
	if cc.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cc.TLSCA))
	}
	if cc.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cc.TLSCert, cc.TLSKey))
	}
	if cc.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cc.CredsFile))
	}
	if cc.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cc.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.nkey_file: %w", err)
		}
		opts = append(opts, o)
	}
	return opts, nil
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
