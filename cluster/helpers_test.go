package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/cluster/clustertest"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/relaytest"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// tokenAuth is the test's Authenticator and Directory: "tok-<number>"
// logs in as number on device "dev-<number>".
type tokenAuth struct{ *relaytest.Tokens }

func newTokenAuth() *tokenAuth { return &tokenAuth{relaytest.NewTokens()} }

func (a *tokenAuth) add(n phonebook.MSISDN) { a.Add("tok-"+string(n), n, "dev-"+string(n)) }

// testCluster is several relay nodes in one process sharing one SQL
// database (MariaDB when PHONEBOOK_TEST_MYSQL_DSN is set, else one SQLite
// file) and one NATS server.
type testCluster struct {
	t      testing.TB
	nats   *clustertest.NATS
	auth   *tokenAuth
	open   func() *store.DB
	db     *store.DB // for assertions
	nodes  map[string]*node
	mu     sync.Mutex
	nodeID int
}

type node struct {
	id     string
	srv    *relay.Server
	router *cluster.Router
	db     *store.DB
	addr   string
	ln     *trackingListener
	reg    *prometheus.Registry
	killed atomic.Bool
}

func newCluster(t testing.TB) *testCluster {
	t.Helper()
	return newClusterOn(t, clustertest.StartNATS(t))
}

// newClusterOn is newCluster on a NATS server that is already running
// (shared with another cluster, or one of a NATS cluster).
func newClusterOn(t testing.TB, ns *clustertest.NATS) *testCluster {
	t.Helper()
	c := &testCluster{t: t, nats: ns, auth: newTokenAuth(), nodes: map[string]*node{}}
	ctx := context.Background()
	if os.Getenv(storetest.EnvDSN) != "" {
		dsn := storetest.MySQLDSN(t)
		c.open = func() *store.DB {
			db, err := store.Open(ctx, store.Options{Driver: "mysql", DSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
	} else {
		t.Logf("%s not set: the nodes share a SQLite file instead of MariaDB", storetest.EnvDSN)
		path := filepath.Join(t.TempDir(), "phonebook.db")
		c.open = func() *store.DB {
			db, err := store.Open(ctx, store.Options{Driver: "sqlite", DSN: path})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
	}
	c.db = c.open()
	if _, err := c.db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// testEntryTTL is short so that tests run through registry refreshes.
const testEntryTTL = 2 * time.Second

func clusterConfig(url, id string) cluster.Config {
	return cluster.Config{URL: url, Node: id, HeartbeatInterval: 100 * time.Millisecond, DeadAfter: time.Second,
		DeliverTimeout: 3 * time.Second, ReconnectWait: 50 * time.Millisecond, PurgeAfter: 2 * time.Second,
		EntryTTL: testEntryTTL}
}

func relayConfig(id string) relay.Config {
	return relay.Config{NodeID: id, DefaultRegion: "CN", SendRate: 1e6, SendBurst: 1e6, AckTimeout: 2 * time.Second}
}

// start starts node id: its own store connections, router and relay server.
func (c *testCluster) start(id string) *node {
	c.t.Helper()
	return c.startWith(id, nil)
}

// startWith starts node id with its cluster configuration changed by mod
// (a NATS URL through a proxy, other timings).
func (c *testCluster) startWith(id string, mod func(*cluster.Config)) *node {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test", t.Name())
	reg := prometheus.NewRegistry()
	cfg := clusterConfig(c.nats.URL(), id)
	if mod != nil {
		mod(&cfg)
	}
	r, err := cluster.New(ctx, cfg, log, reg)
	if err != nil {
		t.Fatalf("node %s: %v", id, err)
	}
	n := &node{id: id, router: r, db: c.open(), reg: reg}
	n.srv, err = relay.NewServer(relayConfig(id), relay.Deps{Auth: c.auth, Store: n.db, Directory: c.auth, Router: r,
		Logger: log, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.ln = &trackingListener{Listener: inner, conns: map[net.Conn]struct{}{}}
	n.addr = inner.Addr().String()
	go n.srv.Serve(n.ln)
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	t.Cleanup(func() { n.stop() })
	return n
}

func (n *node) stop() {
	if n.killed.Load() {
		n.srv.Shutdown(context.Background())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.srv.Shutdown(ctx)
	n.router.Close(ctx)
}

// kill stops node n as a crash would, as far as the others can tell: its
// listener and every client connection close and its NATS connection drops
// without draining or deregistering.
func (n *node) kill() {
	n.killed.Store(true)
	n.router.Kill()
	n.ln.closeAll()
}

// trackingListener remembers accepted connections so a test can cut them
// all at once.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	return c, nil
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.Listener.Close()
	for c := range l.conns {
		c.Close()
	}
}

func (c *testCluster) user(i int) phonebook.MSISDN {
	n := phonebook.MSISDN(fmt.Sprintf("+86139%08d", i))
	c.auth.add(n)
	return n
}

func dial(t testing.TB, n *node, who phonebook.MSISDN, o client.Options) *client.Client {
	t.Helper()
	cl, err := tryDial(n, who, o)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", n.id, who, err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func tryDial(n *node, who phonebook.MSISDN, o client.Options) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.Token, o.DeviceID = "tok-"+string(who), "dev-"+string(who)
	return client.Dial(ctx, n.addr, o)
}

// waitFor polls cond until it holds or the test runs out of patience.
var waitFor = poll.Until

// locatedOn reports whether n sees number's newest session on node want
// ("" for offline).
func locatedOn(n *node, number phonebook.MSISDN, want string) bool {
	ep := n.router.Locate(number)
	if ep == nil {
		return want == ""
	}
	return ep.Info().Node == want
}

// next receives from ch; see poll.Next.
func next[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return poll.Next(t, ch, what)
}

func result(t testing.TB, p *client.Pending) (id, state string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("SendResult of %s: %v", p.ClientMsgID, err)
	}
	return r.ServerMsgId, r.State.String()
}

// metric returns the value of an unlabelled counter or gauge of n's
// cluster router (0 when absent).
func (n *node) metric(name string) float64 {
	mfs, _ := n.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return 0
}
