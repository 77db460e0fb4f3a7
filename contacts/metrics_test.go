package contacts_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// metric returns the value of the series of name whose labels include
// want, or -1 when there is none.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func TestMetricsAndPendingBound(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		reg := prometheus.NewRegistry()
		rec := &recorder{entered: make(chan struct{}, 1), block: make(chan struct{})}
		svc, err := contacts.New(db, rec, contacts.Config{LookupCapacity: 1, PushWorkers: 1, MaxPendingPushes: 1}, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Close(ctx)
		mustSync(t, svc, alice, book(card("1", "Bob", "13800138002")))
		if _, err := svc.Sync(ctx, alice, "", contacts.SyncRequest{Added: []contacts.Entry{card("2", "Carol", "13800138003")}}); phonebook.ErrorCode(err) != phonebook.ERateLimited {
			t.Fatalf("second new number: %v", err)
		}
		if v := metric(t, reg, "phonebook_contacts_syncs_total", map[string]string{"mode": "full", "result": "ok"}); v != 1 {
			t.Fatalf("full ok syncs %v", v)
		}
		if v := metric(t, reg, "phonebook_contacts_syncs_total", map[string]string{"mode": "delta", "result": "rate_limited"}); v != 1 {
			t.Fatalf("limited delta syncs %v", v)
		}
		if v := metric(t, reg, "phonebook_contacts_lookup_limited_total", nil); v != 1 {
			t.Fatalf("lookup_limited %v", v)
		}

		// One worker busy delivering, room for one pending user: a third
		// user's event is dropped and counted, a repeat coalesces.
		mustSync(t, svc, bob, book(card("1", "Alice", "13800138001")))
		on := contacts.StatusOnline
		db.UpdateStatus(ctx, bob, store.StatusUpdate{IMStatus: &on})
		svc.Online(ctx, alice) // delivered to bob, held by the notifier
		select {
		case <-rec.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("alice's online event never reached the notifier")
		}
		text := "x"
		svc.SetPresence(ctx, carol, contacts.PresenceUpdate{StatusText: &text}) // pending
		text = "y"
		svc.SetPresence(ctx, carol, contacts.PresenceUpdate{StatusText: &text}) // coalesced
		svc.SetPresence(ctx, dave, contacts.PresenceUpdate{StatusText: &text})  // dropped
		if v := metric(t, reg, "phonebook_contacts_push_dropped_total", nil); v != 1 {
			t.Fatalf("dropped %v", v)
		}
		if v := metric(t, reg, "phonebook_contacts_push_coalesced_total", nil); v != 1 {
			t.Fatalf("coalesced %v", v)
		}
		if v := metric(t, reg, "phonebook_contacts_push_pending", nil); v != 1 {
			t.Fatalf("pending %v", v)
		}
		close(rec.block)
		svc.Close(ctx)
		if v := metric(t, reg, "phonebook_contacts_pushed_total", map[string]string{"kind": "presence_changed"}); v != 1 {
			t.Fatalf("pushed %v", v)
		}
	})
}
