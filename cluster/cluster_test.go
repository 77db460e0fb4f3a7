package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

func TestChatAcrossNodesWithReceipts(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b")
	alice, bob, carol := c.user(1), c.user(2), c.user(3)
	ca := dial(t, a, alice, client.Options{})
	cb := dial(t, b, bob, client.Options{})
	waitFor(t, "a to see bob on b", func() bool { return locatedOn(a, bob, "b") })
	waitFor(t, "b to see alice on a", func() bool { return locatedOn(b, alice, "a") })

	// alice (node a) -> bob (node b): the SendResult waits for bob's ack,
	// which travels back across the nodes.
	p, err := ca.Send(string(bob), "hello across nodes")
	if err != nil {
		t.Fatal(err)
	}
	d := next(t, cb.Deliveries(), "delivery on b")
	if d.From != string(alice) || d.Text != "hello across nodes" || d.Offline || d.ClientMsgId != p.ClientMsgID {
		t.Fatalf("delivery = %v (sent as %s)", d, p.ClientMsgID)
	}
	select {
	case <-p.Done():
		t.Fatal("SendResult before bob acknowledged")
	case <-time.After(50 * time.Millisecond):
	}
	cb.Ack(d.ServerMsgId)
	if id, state := result(t, p); id != d.ServerMsgId || state != "DELIVERED" {
		t.Fatalf("SendResult = %s %s, want %s DELIVERED", id, state, d.ServerMsgId)
	}
	waitFor(t, "chat record", func() bool {
		rec, err := c.db.ChatRecord(context.Background(), d.ServerMsgId)
		return err == nil && rec.State == store.MsgDelivered && rec.Receiver == bob
	})

	// And back.
	p, _ = cb.Send(string(alice), "hi back")
	d = next(t, ca.Deliveries(), "delivery on a")
	ca.Ack(d.ServerMsgId)
	if _, state := result(t, p); state != "DELIVERED" || d.Text != "hi back" {
		t.Fatalf("reply: %s %q", state, d.Text)
	}

	// carol is offline: stored; she logs in on b, gets it, and alice on a
	// gets the DELIVERED receipt through the cluster.
	p, _ = ca.Send(string(carol), "for later")
	id, state := result(t, p)
	if state != "STORED" {
		t.Fatalf("to offline carol: %s", state)
	}
	cc := dial(t, b, carol, client.Options{AutoAck: true})
	if d := next(t, cc.Deliveries(), "offline delivery"); d.ServerMsgId != id || !d.Offline {
		t.Fatalf("carol got %v", d)
	}
	for {
		r := next(t, ca.Receipts(), "receipt on a")
		if r.ServerMsgId == id && r.State == relaypb.MessageState_DELIVERED {
			break
		}
	}

	// The connection table is the whole cluster's, from either node.
	for _, n := range []*node{a, b} {
		conns := n.srv.Connections()
		where := map[phonebook.MSISDN]string{}
		for _, ci := range conns {
			where[ci.Number] = ci.Node
		}
		if len(conns) != 3 || where[alice] != "a" || where[bob] != "b" || where[carol] != "b" {
			t.Fatalf("node %s connections = %+v", n.id, conns)
		}
	}
	if nodes := a.router.Nodes(); len(nodes) != 2 {
		t.Fatalf("nodes = %v", nodes)
	}

	// Notify reaches local and remote recipients; offline ones are skipped.
	dave := c.user(4)
	waitFor(t, "a to see carol", func() bool { return locatedOn(a, carol, "b") })
	frame := &relaypb.Frame{Body: &relaypb.Frame_Receipt{Receipt: &relaypb.Receipt{ServerMsgId: "presence-test", State: relaypb.MessageState_DELIVERED}}}
	k, err := a.router.Notify(context.Background(), []phonebook.MSISDN{alice, bob, carol, dave}, frame)
	if err != nil || k != 3 {
		t.Fatalf("Notify = %d, %v; want 3 reached", k, err)
	}
	for _, cl := range []*client.Client{ca, cb, cc} {
		for {
			if r := next(t, cl.Receipts(), "notification"); r.ServerMsgId == "presence-test" {
				break
			}
		}
	}
}

func TestSessionMovesToAnotherNode(t *testing.T) {
	c := newCluster(t)
	a, b, x := c.start("a"), c.start("b"), c.start("c")
	alice, bob := c.user(1), c.user(2)
	ca := dial(t, x, alice, client.Options{})
	onA := dial(t, a, bob, client.Options{AutoAck: true})
	waitFor(t, "c to see bob on a", func() bool { return locatedOn(x, bob, "a") })
	p, _ := ca.Send(string(bob), "one")
	if d := next(t, onA.Deliveries(), "delivery on a"); d.Text != "one" {
		t.Fatalf("got %q", d.Text)
	}
	result(t, p)

	// bob's phone reconnects through node b: the newer login wins and the
	// session on a is closed.
	onB := dial(t, b, bob, client.Options{AutoAck: true})
	select {
	case <-onA.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("old session on a still open")
	}
	if se, ok := onA.Err().(*client.ServerError); !ok || se.Code != phonebook.ESessionReplaced {
		t.Fatalf("old session ended with %v, want %s", onA.Err(), phonebook.ESessionReplaced)
	}
	for _, n := range []*node{a, b, x} {
		waitFor(t, "node "+n.id+" to route bob to b", func() bool {
			conns := 0
			for _, ci := range n.srv.Connections() {
				if ci.Number == bob {
					conns++
				}
			}
			return locatedOn(n, bob, "b") && conns == 1
		})
	}
	for i, text := range []string{"two", "three"} {
		p, _ := ca.Send(string(bob), text)
		d := next(t, onB.Deliveries(), "delivery on b")
		if d.Text != text {
			t.Fatalf("message %d: got %q want %q", i, d.Text, text)
		}
		if _, state := result(t, p); state != "DELIVERED" {
			t.Fatalf("state %s", state)
		}
	}
	// Moving back to a works the same way.
	onA2 := dial(t, a, bob, client.Options{AutoAck: true})
	<-onB.Done()
	waitFor(t, "c to route bob to a again", func() bool { return locatedOn(x, bob, "a") })
	p, _ = ca.Send(string(bob), "four")
	if d := next(t, onA2.Deliveries(), "delivery on a again"); d.Text != "four" {
		t.Fatalf("got %q", d.Text)
	}
}

func TestGracefulLeaveAndRejoin(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b")
	alice, bob := c.user(1), c.user(2)
	ca := dial(t, a, alice, client.Options{})
	dial(t, b, bob, client.Options{})
	waitFor(t, "a to see bob", func() bool { return locatedOn(a, bob, "b") })
	b.stop()
	// A clean stop deregisters at once: nothing is routed to b.
	waitFor(t, "bob offline on a", func() bool { return locatedOn(a, bob, "") && len(a.router.Nodes()) == 1 })
	p, _ := ca.Send(string(bob), "while b is away")
	id, state := result(t, p)
	if state != "STORED" {
		t.Fatalf("state %s", state)
	}
	// A new process under the same node id.
	b2 := c.start("b")
	cb := dial(t, b2, bob, client.Options{AutoAck: true})
	if d := next(t, cb.Deliveries(), "stored message"); d.ServerMsgId != id {
		t.Fatalf("got %v", d)
	}
}

// Registry records expire after EntryTTL (so the bucket does not keep every
// device ever connected); live sessions are rewritten in time and stay
// reachable, even from a node that joins later and reads only the bucket.
func TestLiveEntriesOutliveEntryTTL(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b")
	alice, bob := c.user(1), c.user(2)
	login := time.Now()
	cb := dial(t, b, bob, client.Options{AutoAck: true})
	dial(t, a, alice, client.Options{})
	waitFor(t, "three TTLs to pass", func() bool { return time.Since(login) > 3*testEntryTTL })
	x := c.start("c")
	if !locatedOn(x, bob, "b") || !locatedOn(x, alice, "a") {
		t.Fatalf("a node joining after %s does not find the live sessions: %v", time.Since(login), x.srv.Connections())
	}
	cx := dial(t, x, c.user(3), client.Options{})
	p, _ := cx.Send(string(bob), "still here")
	if d := next(t, cb.Deliveries(), "delivery"); d.Text != "still here" {
		t.Fatalf("got %q", d.Text)
	}
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("state %s", state)
	}
}

func TestDuplicateNodeIDIsReported(t *testing.T) {
	c := newCluster(t)
	a := c.start("a")
	waitFor(t, "a to see itself alive", func() bool { return a.metric("phonebook_cluster_nodes_alive") == 1 })
	twin := c.start("a")
	waitFor(t, "both processes to notice", func() bool {
		return a.metric("phonebook_cluster_node_id_conflicts_total") > 0 && twin.metric("phonebook_cluster_node_id_conflicts_total") > 0
	})
}
