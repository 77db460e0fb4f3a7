package cluster_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/cluster/clustertest"
	"github.com/phonebook/phonebook/internal/poll"
)

// failoverPatience bounds a NATS cluster's recovery from a dead server.
const failoverPatience = 3 * time.Minute

// Three nodes on a three-server NATS cluster (routes on loopback,
// JetStream on each, buckets with 3 replicas), each node preferring a
// different server. The server of node a is killed while messages flow
// both ways: no acknowledged message is lost, nobody has to log in again,
// and every node still routes to every session.
func TestNATSClusterLosesAServer(t *testing.T) {
	if testing.Short() {
		t.Skip("load test on three nats-servers")
	}
	servers := clustertest.StartNATSCluster(t, 3)
	c := newClusterOn(t, servers[0])
	urls := func(first int) string {
		var u []string
		for i := range servers {
			u = append(u, servers[(first+i)%len(servers)].URL())
		}
		return strings.Join(u, ",")
	}
	onServer := func(i int) func(*cluster.Config) {
		return func(cc *cluster.Config) {
			cc.URL, cc.Replicas = urls(i), 3
			cc.NATSOptions = []nats.Option{nats.DontRandomize()}
		}
	}
	a, b, x := c.startWith("a", onServer(0)), c.startWith("b", onServer(1)), c.startWith("c", onServer(2))

	const pairs = 10
	l := &ledger{acked: map[string]*inbox{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var inboxes []*inbox
	// a -> b and b -> a, with a's NATS server about to die.
	for i := range pairs {
		in := newInbox(t, c.user(1000+i), b)
		inboxes = append(inboxes, in)
		waitFor(t, "a to see the recipient on b", func() bool { return locatedOn(a, in.who, "b") })
		cl := dial(t, a, c.user(i), client.Options{})
		wg.Add(1)
		go sendLoop(t, cl, in, l, 8, stop, &wg)
	}
	for i := range pairs {
		in := newInbox(t, c.user(2000+i), a)
		inboxes = append(inboxes, in)
		waitFor(t, "b to see the recipient on a", func() bool { return locatedOn(b, in.who, "a") })
		cl := dial(t, b, c.user(3000+i), client.Options{})
		wg.Add(1)
		go sendLoop(t, cl, in, l, 8, stop, &wg)
	}
	waitFor(t, "traffic before the kill", func() bool { return l.total() >= 300 })
	servers[0].Kill()
	killed, before := time.Now(), l.total()
	// JetStream elects a new meta leader and new stream leaders (Raft
	// election timeouts of 4-9 s each, longer under -race on two cores)
	// before the buckets answer again: measured 5-25 s on a quiet machine.
	poll.Within(t, failoverPatience, "a to reconnect to another NATS server", func() bool {
		return a.metric("phonebook_cluster_nats_reconnects_total") >= 1 && a.router.Outage() == 0
	})
	t.Logf("a healthy again %s after its NATS server died", time.Since(killed).Round(time.Millisecond))
	poll.Within(t, failoverPatience, "traffic after the kill", func() bool { return l.total() >= before+300 })
	close(stop)
	wg.Wait()

	l.mu.Lock()
	acked := l.acked
	t.Logf("acknowledged to senders: %d (%d delivered, %d stored), %d failed", len(acked), l.delivered, l.stored, l.failed)
	l.mu.Unlock()
	for text, in := range acked {
		waitFor(t, "acknowledged message "+text, func() bool { return in.has(text) })
	}
	for _, in := range inboxes {
		if n := in.logins.Load(); n != 1 {
			t.Fatalf("%s logged in %d times; sessions should survive a NATS server's death", in.who, n)
		}
		for _, n := range []*node{a, b, x} {
			waitFor(t, "routing to "+string(in.who)+" on "+n.id, func() bool { return locatedOn(n, in.who, in.node.Load().(string)) })
		}
	}
	for _, n := range []*node{a, b, x} {
		waitFor(t, "every node alive on "+n.id, func() bool { return slices.Equal(n.router.Nodes(), []string{"a", "b", "c"}) })
	}
}

// Two clusters with different namespaces share one NATS server, with the
// same node ids and the same number online in both: neither sees the
// other's nodes, sessions or messages.
func TestNamespacesDoNotSeeEachOther(t *testing.T) {
	ns := clustertest.StartNATS(t)
	one, two := newClusterOn(t, ns), newClusterOn(t, ns)
	in := func(name string) func(*cluster.Config) { return func(cc *cluster.Config) { cc.Namespace = name } }
	a1, b1 := one.startWith("a", in("one")), one.startWith("b", in("one"))
	a2, b2 := two.startWith("a", in("two")), two.startWith("b", in("two"))
	alice1, bob1, carol1 := one.user(1), one.user(2), one.user(3)
	alice2, bob2 := two.user(1), two.user(2)
	ca1 := dial(t, a1, alice1, client.Options{})
	cb1 := dial(t, b1, bob1, client.Options{AutoAck: true})
	dial(t, b1, carol1, client.Options{})
	ca2 := dial(t, a2, alice2, client.Options{})
	cb2 := dial(t, b2, bob2, client.Options{AutoAck: true})
	waitFor(t, "each a to see its bob on b", func() bool { return locatedOn(a1, bob1, "b") && locatedOn(a2, bob2, "b") })

	p, _ := ca1.Send(string(bob1), "within one")
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("within one: %s", state)
	}
	p, _ = ca2.Send(string(bob2), "within two")
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("within two: %s", state)
	}
	if d := next(t, cb1.Deliveries(), "bob in one"); d.Text != "within one" {
		t.Fatalf("bob in one got %q", d.Text)
	}
	if d := next(t, cb2.Deliveries(), "bob in two"); d.Text != "within two" {
		t.Fatalf("bob in two got %q (the other cluster's message?)", d.Text)
	}
	// Carol is online in one only.
	if !locatedOn(a1, carol1, "b") || !locatedOn(a2, carol1, "") {
		t.Fatal("carol (cluster one) is visible from cluster two")
	}
	for _, n := range []*node{a1, b1, a2, b2} {
		if got := n.router.Nodes(); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("node %s sees nodes %v", n.id, got)
		}
		if v := n.metric("phonebook_cluster_node_id_conflicts_total"); v != 0 {
			t.Fatalf("node %s reports %v node id conflicts", n.id, v)
		}
	}
	if n := len(a1.router.Connections()); n != 3 {
		t.Fatalf("cluster one lists %d connections, want its 3", n)
	}
	if n := len(a2.router.Connections()); n != 2 {
		t.Fatalf("cluster two lists %d connections, want its 2", n)
	}
	// The buckets carry the namespace; the default ones were never made.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, bucket := range []string{"pb_one_sessions", "pb_one_nodes", "pb_two_sessions", "pb_two_nodes"} {
		if _, err := js.KeyValue(ctx, bucket); err != nil {
			t.Fatalf("bucket %s: %v", bucket, err)
		}
	}
	if _, err := js.KeyValue(ctx, "pb_sessions"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("default bucket pb_sessions: %v, want not found", err)
	}
}
