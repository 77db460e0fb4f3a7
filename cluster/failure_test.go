package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// inbox is a recipient that survives its node: it records each message
// before acknowledging it (so an ack never covers a message the test did
// not see) and, when its connection drops, logs in again on the next node
// in its list.
type inbox struct {
	t      *testing.T
	who    phonebook.MSISDN
	nodes  []*node
	mu     sync.Mutex
	got    map[string]bool // by text
	logins atomic.Int32
	node   atomic.Value // id of the node it is on
	cur    atomic.Pointer[client.Client]
	stop   chan struct{}
	done   chan struct{}
}

func newInbox(t *testing.T, who phonebook.MSISDN, nodes ...*node) *inbox {
	in := &inbox{t: t, who: who, nodes: nodes, got: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	cl := dial(t, nodes[0], who, client.Options{})
	in.logins.Add(1)
	in.node.Store(nodes[0].id)
	in.cur.Store(cl)
	go in.run(cl)
	t.Cleanup(func() {
		close(in.stop)
		in.cur.Load().Close()
		<-in.done
	})
	return in
}

func (in *inbox) run(cl *client.Client) {
	defer close(in.done)
	i := 0
	for {
		for d := range cl.Deliveries() {
			in.mu.Lock()
			in.got[d.Text] = true
			in.mu.Unlock()
			cl.Ack(d.ServerMsgId)
		}
		cl.Close()
		// Reconnect, as a handset would, to the next node that answers.
		for {
			select {
			case <-in.stop:
				return
			default:
			}
			i = (i + 1) % len(in.nodes)
			n := in.nodes[i]
			if n.killed.Load() {
				continue
			}
			c, err := tryDial(n, in.who, client.Options{})
			if err == nil {
				cl = c
				in.cur.Store(c)
				select {
				case <-in.stop:
					c.Close()
				default:
				}
				in.logins.Add(1)
				in.node.Store(n.id)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (in *inbox) has(text string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.got[text]
}

// ledger counts what senders were told: every message with a DELIVERED or
// STORED SendResult must reach its recipient.
type ledger struct {
	mu        sync.Mutex
	acked     map[string]*inbox // text -> recipient
	delivered int
	stored    int
	failed    int
}

func (l *ledger) note(text string, to *inbox, r *relaypb.SendResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch r.State {
	case relaypb.MessageState_DELIVERED:
		l.delivered++
		l.acked[text] = to
	case relaypb.MessageState_STORED:
		l.stored++
		l.acked[text] = to
	default:
		l.failed++
	}
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// sendLoop sends numbered messages from cl to in, keeping up to window
// unanswered, until stop is closed or cl's connection ends; then it waits
// for the rest. Only SendResults received count in the ledger.
func sendLoop(t *testing.T, cl *client.Client, in *inbox, l *ledger, window int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	var pend sync.WaitGroup
	slots := make(chan struct{}, window)
	for i := 0; ; i++ {
		select {
		case <-stop:
			pend.Wait()
			return
		case slots <- struct{}{}:
		}
		text := fmt.Sprintf("%s>%s #%d", cl.Number, in.who, i)
		p, err := cl.Send(string(in.who), text)
		if err != nil {
			select {
			case <-cl.Done(): // its node died
			default:
				t.Errorf("send: %v", err)
			}
			<-slots
			pend.Wait()
			return
		}
		pend.Add(1)
		go func() {
			defer pend.Done()
			defer func() { <-slots }()
			select {
			case <-p.Done():
			case <-time.After(60 * time.Second):
				t.Errorf("no SendResult for %s", text)
				return
			}
			if r, err := p.Wait(t.Context()); err == nil {
				l.note(text, in, r)
			}
		}()
	}
}

func TestNodeKilledUnderLoadLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	c := newCluster(t)
	a, b, x := c.start("a"), c.start("b"), c.start("c")
	const pairs = 20
	l := &ledger{acked: map[string]*inbox{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	inboxes := make([]*inbox, pairs)
	for i := range pairs {
		inboxes[i] = newInbox(t, c.user(1000+i), b, x) // on b; to c when b dies
	}
	for i := range pairs {
		waitFor(t, "a to see the recipients on b", func() bool { return locatedOn(a, inboxes[i].who, "b") })
	}
	for i := range pairs {
		cl := dial(t, a, c.user(i), client.Options{})
		wg.Add(1)
		go sendLoop(t, cl, inboxes[i], l, 8, stop, &wg)
	}
	// And the other way: senders on b, whose SendResults depend on acks
	// from a, until b dies under them.
	for i := range pairs / 2 {
		in := newInbox(t, c.user(2000+i), a, x)
		waitFor(t, "b to see the recipient on a", func() bool { return locatedOn(b, in.who, "a") })
		cl := dial(t, b, c.user(3000+i), client.Options{})
		wg.Add(1)
		go sendLoop(t, cl, in, l, 8, stop, &wg)
	}
	waitFor(t, "traffic before the kill", func() bool { return l.total() >= 500 })
	b.kill()
	before := l.total()
	// The recipients log in again on c and routing follows them.
	for _, in := range inboxes {
		waitFor(t, "recipient on c", func() bool { return in.node.Load() == "c" && locatedOn(a, in.who, "c") })
	}
	waitFor(t, "traffic after the kill", func() bool { return l.total() >= before+500 })
	close(stop)
	wg.Wait()

	l.mu.Lock()
	acked := l.acked
	t.Logf("acknowledged to senders: %d (%d delivered, %d stored), %d failed", len(acked), l.delivered, l.stored, l.failed)
	l.mu.Unlock()
	missing := func() (n int, example string) {
		for text, in := range acked {
			if !in.has(text) {
				n++
				example = text
			}
		}
		return n, example
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, ex := missing()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			var in *inbox
			for text, i := range acked {
				if text == ex {
					in = i
				}
			}
			t.Fatalf("%d acknowledged messages never reached their recipient, e.g. %q (recipient logins %d, on %v, located on a: %v)",
				n, ex, in.logins.Load(), in.node.Load(), a.router.Locate(in.who))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNATSRestartRoutingRecovers(t *testing.T) {
	// "kept": nats-server restarts on its JetStream directory, the buckets
	// survive. "lost": it comes back empty, and the nodes rebuild the
	// registry from their own sessions.
	for _, store := range []string{"kept", "lost"} {
		t.Run(store, func(t *testing.T) { testNATSRestart(t, store == "lost") })
	}
}

func testNATSRestart(t *testing.T, lose bool) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b")
	alice, bob, carol := c.user(1), c.user(2), c.user(3)
	ca := dial(t, a, alice, client.Options{})
	bobIn := newInbox(t, bob, b)
	waitFor(t, "a to see bob", func() bool { return locatedOn(a, bob, "b") })
	p, _ := ca.Send(string(bob), "before")
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("before the restart: %s", state)
	}

	c.nats.Kill()
	// Nothing acknowledged is lost while NATS is down: messages for bob
	// are stored, and reach him once the cluster recovers.
	var during []string
	for i := range 5 {
		text := fmt.Sprintf("during %d", i)
		p, _ := ca.Send(string(bob), text)
		if _, state := result(t, p); state != "STORED" && state != "DELIVERED" {
			t.Fatalf("during the outage: %s", state)
		}
		during = append(during, text)
	}
	// A login during the outage is registered once NATS is back.
	cc := dial(t, b, carol, client.Options{AutoAck: true})

	if lose {
		c.nats.Dir = t.TempDir()
	}
	c.nats.Start()
	waitFor(t, "a to route to carol on b", func() bool { return locatedOn(a, carol, "b") && locatedOn(a, bob, "b") })
	for _, text := range during {
		waitFor(t, "bob to get "+text, func() bool { return bobIn.has(text) })
	}
	if bobIn.logins.Load() != 1 {
		t.Fatalf("bob logged in %d times; the stored messages should reach his open session", bobIn.logins.Load())
	}
	p, _ = ca.Send(string(carol), "after")
	if d := next(t, cc.Deliveries(), "delivery to carol"); d.Text != "after" {
		t.Fatalf("carol got %q", d.Text)
	}
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("after the restart: %s", state)
	}
	p, _ = ca.Send(string(bob), "after")
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("after the restart, to bob: %s", state)
	}
}

func TestDeadNodeEntriesAreOffline(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b")
	alice, bob := c.user(1), c.user(2)
	ca := dial(t, a, alice, client.Options{})
	dial(t, b, bob, client.Options{})
	waitFor(t, "a to see bob on b", func() bool { return locatedOn(a, bob, "b") })
	b.kill()
	// b's entry is still in the registry, but b stopped heartbeating.
	waitFor(t, "bob offline on a", func() bool { return locatedOn(a, bob, "") })
	if nodes := a.router.Nodes(); len(nodes) != 1 || nodes[0] != "a" {
		t.Fatalf("live nodes = %v", nodes)
	}
	p, _ := ca.Send(string(bob), "to a dead node")
	id, state := result(t, p)
	if state != "STORED" {
		t.Fatalf("state %s", state)
	}
	// After PurgeAfter the survivors delete the dead node's entries.
	nc, err := nats.Connect(c.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), "pb_sessions")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's entries purged", func() bool {
		keys, err := kv.Keys(t.Context())
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			return false
		}
		for _, k := range keys {
			if e, err := kv.Get(t.Context(), k); err == nil && strings.Contains(string(e.Value()), `"node":"b"`) {
				return false
			}
		}
		return true
	})
	// bob's next login, on any node, delivers it.
	cb := dial(t, a, bob, client.Options{AutoAck: true})
	if d := next(t, cb.Deliveries(), "stored message"); d.ServerMsgId != id {
		t.Fatalf("got %v", d)
	}
}

// When a crashed node's sessions are purged, the survivors report each
// user who is not connected anywhere else (so that they can be marked
// offline); a user who came back elsewhere is not reported.
func TestDeadNodeUsersAreReportedGone(t *testing.T) {
	c := newCluster(t)
	a, b, d := c.start("a"), c.start("b"), c.start("d")
	alice, bob, carol := c.user(1), c.user(2), c.user(3)
	var mu sync.Mutex
	reported := map[phonebook.MSISDN]int{}
	for _, n := range []*node{a, d} {
		n.router.OnGone(func(ctx context.Context, num phonebook.MSISDN) {
			mu.Lock()
			reported[num]++
			mu.Unlock()
		})
	}
	count := func(n phonebook.MSISDN) int {
		mu.Lock()
		defer mu.Unlock()
		return reported[n]
	}
	dial(t, a, alice, client.Options{})
	dial(t, b, bob, client.Options{})
	dial(t, b, carol, client.Options{})
	for _, n := range []*node{a, d} {
		waitFor(t, "bob and carol on b", func() bool { return locatedOn(n, bob, "b") && locatedOn(n, carol, "b") })
	}
	b.kill()
	dial(t, d, carol, client.Options{}) // carol reconnects to d before the purge
	waitFor(t, "bob reported gone", func() bool { return count(bob) >= 1 })
	// The purge is over once the stale entries are gone from every
	// survivor's replica; carol is on d, and the survivors know it.
	for _, n := range []*node{a, d} {
		waitFor(t, "no entry left on b", func() bool {
			for _, ci := range n.router.Connections() {
				if ci.Node == "b" {
					return false
				}
			}
			return true
		})
		waitFor(t, "carol on d", func() bool { return locatedOn(n, carol, "d") })
	}
	if count(bob) == 0 || count(bob) > 2 || count(carol) != 0 || count(alice) != 0 {
		t.Fatalf("reported %v; want bob (by one or both survivors), nobody else", reported)
	}
}

// A crashed node that comes back (same node id, new process) removes its
// previous process's sessions at once and reports their users, even those
// found before the relay was ready to hear of them.
func TestRestartedNodeReportsItsOldUsers(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b")
	bob, carol := c.user(2), c.user(3)
	dial(t, b, bob, client.Options{})
	dial(t, b, carol, client.Options{})
	waitFor(t, "a to see bob and carol on b", func() bool { return locatedOn(a, bob, "b") && locatedOn(a, carol, "b") })
	b.kill()
	dial(t, a, carol, client.Options{}) // carol is back, on a
	waitFor(t, "carol on a", func() bool { return locatedOn(a, carol, "a") })
	b2 := c.start("b")
	var mu sync.Mutex
	var reported []phonebook.MSISDN
	b2.router.OnGone(func(ctx context.Context, n phonebook.MSISDN) {
		mu.Lock()
		reported = append(reported, n)
		mu.Unlock()
	})
	has := func(n phonebook.MSISDN) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(reported, n)
	}
	waitFor(t, "bob reported by b's new process", func() bool { return has(bob) })
	// b's new process has read the registry (bob's entry was its own
	// previous process's), and sees carol's entry as a's: not its orphan.
	waitFor(t, "b's new process to see carol on a", func() bool { return locatedOn(b2, carol, "a") })
	waitFor(t, "bob's entry gone from a's replica", func() bool { return !locatedOn(a, bob, "b") })
	if has(carol) {
		t.Fatalf("carol, connected on a, was reported gone: %v", reported)
	}
}
