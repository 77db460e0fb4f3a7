package cluster

// This file holds connecting to NATS and opening the JetStream KV buckets.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connect reaches NATS and opens the buckets, trying again with backoff
// for ConnectTimeout: nodes and NATS often start together.
func (r *Router) connect(ctx context.Context, opts []nats.Option) error {
	start := time.Now()
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := r.connectOnce(ctx, opts)
		if err == nil {
			if attempt > 1 {
				r.log.Info("cluster: NATS reachable", "attempts", attempt, "after", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("cluster: connecting to NATS %s: %w (last error: %v)", redactURL(r.cfg.URL), ctx.Err(), err)
		}
		if time.Since(start)+backoff > r.cfg.ConnectTimeout {
			return fmt.Errorf("cluster: NATS %s still not usable after %d attempts in %s (cluster.connect_timeout %s); is it running, with JetStream, and are the address and credentials right? last error: %w",
				redactURL(r.cfg.URL), attempt, time.Since(start).Round(time.Second), r.cfg.ConnectTimeout, err)
		}
		r.logRate.warn(r.log, "connect", "cluster: NATS not usable yet; retrying", "url", redactURL(r.cfg.URL), "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (r *Router) connectOnce(ctx context.Context, opts []nats.Option) error {
	nc, err := nats.Connect(r.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	r.nc = nc
	r.js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("JetStream: %w", err)
	}
	if err := r.openBuckets(ctx); err != nil {
		nc.Close()
		return err
	}
	return nil
}

// redactURL hides passwords and tokens in NATS URLs.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("REDACTED")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func (r *Router) openBuckets(ctx context.Context) error {
	storage := jetstream.FileStorage
	if r.cfg.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	// An attempt that JetStream does not answer (a NATS cluster electing
	// a leader) is given up soon, and tried again.
	ctx, cancel := context.WithTimeout(ctx, min(max(2*r.cfg.DeadAfter, 2*time.Second), 10*time.Second))
	defer cancel()
	sess, err := r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: r.cfg.SessionsBucket, Description: "Phonebook relay sessions: number.device -> node",
		History: 1, Storage: storage, Replicas: r.cfg.Replicas,
		// Live entries are rewritten every EntryTTL/3; what ages out is
		// delete markers and the entries of nodes that died, so the
		// bucket holds the connected devices, not everyone ever seen.
		TTL: r.cfg.EntryTTL,
	})
	if err != nil {
		return fmt.Errorf("cluster: KV bucket %s (is JetStream enabled on the NATS server?): %w", r.cfg.SessionsBucket, err)
	}
	nodes, err := r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: r.cfg.NodesBucket, Description: "Phonebook relay node heartbeats",
		History: 1, Storage: storage, Replicas: r.cfg.Replicas,
		// Heartbeats of vanished nodes age out; liveness itself is judged
		// by each reader from when it last saw a heartbeat.
		TTL: max(r.cfg.PurgeAfter, 2*r.cfg.DeadAfter),
	})
	if err != nil {
		return fmt.Errorf("cluster: KV bucket %s: %w", r.cfg.NodesBucket, err)
	}
	r.kvMu.Lock()
	r.sessKV, r.nodeKV = sess, nodes
	r.kvMu.Unlock()
	return nil
}

func (r *Router) buckets() (sess, nodes jetstream.KeyValue) {
	r.kvMu.Lock()
	defer r.kvMu.Unlock()
	return r.sessKV, r.nodeKV
}
