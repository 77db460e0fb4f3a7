package cluster_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/cluster/clustertest"
	"github.com/phonebook/phonebook/relay"
)

// healBound is how soon after a partition heals a message stored during it
// reaches its connected recipient, as docs/operations.md states it:
// cluster.dead_after plus 5 s.
func healBound(cfg cluster.Config) time.Duration { return cfg.DeadAfter + 5*time.Second }

// One node's link to NATS is cut through a proxy and healed. Messages
// stored meanwhile, in both directions, reach recipients who stayed
// connected all along, without a re-login, within healBound; afterwards
// every node routes to every session again. "15s": the others count the
// node dead but do not purge it; "longer than purge_after": they purge its
// sessions and report its users gone, and after the heal the node writes
// its entries again and reports them for their presence to be re-asserted.
// "silent": the link drops everything without closing, so the node learns
// of the cut from unanswered heartbeats and pings.
func TestPartitionHeals(t *testing.T) {
	if testing.Short() {
		t.Skip("cuts a link for several seconds")
	}
	for _, tc := range []struct {
		name       string
		cut        time.Duration
		purgeAfter time.Duration
		purged     bool
		silent     bool
	}{
		{"15s", 15 * time.Second, time.Minute, false, false},
		{"longer than purge_after", 5 * time.Second, 2 * time.Second, true, false},
		{"silent", 8 * time.Second, time.Minute, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testPartition(t, tc.cut, tc.purgeAfter, tc.purged, tc.silent) })
	}
}

func testPartition(t *testing.T, cut, purgeAfter time.Duration, purged, silent bool) {
	c := newCluster(t)
	var cfg cluster.Config
	timings := func(cc *cluster.Config) {
		cc.PurgeAfter, cc.EntryTTL = purgeAfter, time.Minute
		cfg = *cc
	}
	a, b := c.startWith("a", timings), c.startWith("b", timings)
	u, _ := url.Parse(c.nats.URL())
	proxy := clustertest.NewProxy(t, u.Host)
	x := c.startWith("c", func(cc *cluster.Config) { timings(cc); cc.URL = proxy.URL() })

	var mu sync.Mutex
	gone := map[phonebook.MSISDN]int{}
	lost := map[phonebook.MSISDN]bool{}
	resynced := map[phonebook.MSISDN]int{}
	for _, n := range []*node{a, b} {
		n.router.OnGone(func(_ context.Context, num phonebook.MSISDN) {
			mu.Lock()
			gone[num]++
			mu.Unlock()
		})
	}
	x.router.OnResync(func(ep relay.Endpoint, wasLost bool) {
		mu.Lock()
		resynced[ep.Info().Number]++
		lost[ep.Info().Number] = lost[ep.Info().Number] || wasLost
		mu.Unlock()
	})
	// The cut-off node must not take the others for dead: no purge of
	// their sessions, so no users of theirs reported gone, and no entry
	// of theirs re-published.
	var wrong []string
	x.router.OnGone(func(_ context.Context, num phonebook.MSISDN) {
		mu.Lock()
		wrong = append(wrong, "c reported "+string(num)+" gone")
		mu.Unlock()
	})
	for _, n := range []*node{a, b} {
		n.router.OnResync(func(ep relay.Endpoint, _ bool) {
			mu.Lock()
			wrong = append(wrong, n.id+" had to re-publish "+string(ep.Info().Number))
			mu.Unlock()
		})
	}

	gina, ivy, bob := c.user(1), c.user(2), c.user(3)
	ginaIn, ivyIn, bobIn := newInbox(t, gina, x), newInbox(t, ivy, a), newInbox(t, bob, b)
	cg := dial(t, x, c.user(11), client.Options{}) // senders, each on a recipient's node
	ci := dial(t, a, c.user(12), client.Options{})
	cb := dial(t, b, c.user(13), client.Options{})
	everywhere := func(what string) {
		t.Helper()
		for _, n := range []*node{a, b, x} {
			waitFor(t, what+" on "+n.id, func() bool {
				return locatedOn(n, gina, "c") && locatedOn(n, ivy, "a") && locatedOn(n, bob, "b")
			})
		}
	}
	everywhere("every session")
	p, _ := cg.Send(string(ivy), "before the cut")
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("before the cut: %s", state)
	}

	if silent {
		proxy.Silence()
	} else {
		proxy.Cut()
	}
	cutAt := time.Now()
	waitFor(t, "c to notice the cut", func() bool { return x.router.Outage() > 0 })
	waitFor(t, "a to count c dead", func() bool { return locatedOn(a, gina, "") })
	waitFor(t, "c to count a and b dead", func() bool { return locatedOn(x, ivy, "") && locatedOn(x, bob, "") })
	var sent []struct {
		to   *inbox
		text string
	}
	send := func(from *client.Client, to *inbox, text string) {
		t.Helper()
		p, err := from.Send(string(to.who), text)
		if err != nil {
			t.Fatal(err)
		}
		if _, state := result(t, p); state != "STORED" {
			t.Fatalf("%q during the cut: %s, want STORED", text, state)
		}
		sent = append(sent, struct {
			to   *inbox
			text string
		}{to, text})
	}
	for i := range 3 {
		send(cg, ivyIn, fmt.Sprintf("c to ivy on a #%d", i))
		send(cg, bobIn, fmt.Sprintf("c to bob on b #%d", i))
		send(ci, ginaIn, fmt.Sprintf("a to gina on c #%d", i))
		send(cb, ginaIn, fmt.Sprintf("b to gina on c #%d", i))
	}
	if purged {
		waitFor(t, "the others to purge c's sessions and report gina gone", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return gone[gina] > 0
		})
	}
	time.Sleep(time.Until(cutAt.Add(cut))) // the partition lasts this long
	if d := time.Since(cutAt); purged && d <= purgeAfter {
		t.Fatalf("cut of %s is not longer than purge_after %s", d, purgeAfter)
	}

	proxy.Heal()
	deadline := time.Now().Add(healBound(cfg))
	for _, s := range sent {
		for !s.to.has(s.text) {
			if time.Now().After(deadline) {
				t.Fatalf("%q did not reach %s within %s of the heal", s.text, s.to.who, healBound(cfg))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("every stored message delivered %s after the heal", time.Since(deadline.Add(-healBound(cfg))).Round(time.Millisecond))
	for _, in := range []*inbox{ginaIn, ivyIn, bobIn} {
		if n := in.logins.Load(); n != 1 {
			t.Fatalf("%s logged in %d times; stored messages must reach the open session", in.who, n)
		}
	}
	everywhere("every session after the heal")
	waitFor(t, "c's sessions re-announced", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return resynced[gina] > 0 && resynced[c.user(11)] > 0
	})
	mu.Lock()
	if lost[gina] != purged {
		t.Errorf("gina's entry lost = %v, want %v (purged by the others)", lost[gina], purged)
	}
	if !purged && (gone[gina] > 0) {
		t.Errorf("gina reported gone though the cut was shorter than purge_after")
	}
	mu.Unlock()
	waitFor(t, "c healthy", func() bool { return x.router.Outage() == 0 })
	// Routing works both ways again.
	p, _ = ci.Send(string(gina), "after the heal")
	if _, state := result(t, p); state != "DELIVERED" {
		t.Fatalf("after the heal: %s", state)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(wrong) > 0 {
		t.Fatalf("the healthy side was disturbed: %v", wrong)
	}
}
