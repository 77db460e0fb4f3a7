package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// A message's state only moves forward: a state change that comes late (a
// delivery report applied before the submit it follows was told, on this
// node or another) leaves the newer state in place.
func TestMessageStateOnlyMovesForward(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		alice, bob := phonebook.MSISDN("+8613800138000"), phonebook.MSISDN("+8613900139000")
		at := time.Now().UTC().Truncate(time.Microsecond)
		stored := func(id string) {
			t.Helper()
			if _, err := db.StoreMessages(ctx, []store.Message{{ID: id, Sender: alice, ClientMsgID: "c-" + id, Recipient: bob, Type: 1, Text: "x", SentAt: at}}); err != nil {
				t.Fatal(err)
			}
		}
		// steps: each a state to set and the state the record has after it.
		cases := map[string][][2]int{
			"sms in order": {{store.MsgSMSQueued, store.MsgSMSQueued}, {store.MsgSMSSubmitted, store.MsgSMSSubmitted},
				{store.MsgSMSDelivered, store.MsgSMSDelivered}, {store.MsgDelivered, store.MsgDelivered}},
			"report before submit": {{store.MsgSMSQueued, store.MsgSMSQueued}, {store.MsgSMSDelivered, store.MsgSMSDelivered},
				{store.MsgSMSSubmitted, store.MsgSMSDelivered}, {store.MsgFailed, store.MsgSMSDelivered}},
			"failed, then read over IM": {{store.MsgSMSSubmitted, store.MsgSMSSubmitted}, {store.MsgFailed, store.MsgFailed},
				{store.MsgSMSSubmitted, store.MsgFailed}, {store.MsgDelivered, store.MsgDelivered}, {store.MsgSMSDelivered, store.MsgDelivered}},
			"mms then its sms": {{store.MsgMMSQueued, store.MsgMMSQueued}, {store.MsgMMSSubmitted, store.MsgMMSSubmitted},
				{store.MsgSMSQueued, store.MsgSMSQueued}, {store.MsgMMSSubmitted, store.MsgSMSQueued}, {store.MsgMMSQueued, store.MsgSMSQueued},
				{store.MsgSMSSubmitted, store.MsgSMSSubmitted}},
			"mms report first": {{store.MsgMMSDelivered, store.MsgMMSDelivered}, {store.MsgMMSSubmitted, store.MsgMMSDelivered},
				{store.MsgMMSQueued, store.MsgMMSDelivered}},
		}
		for name, steps := range cases {
			stored(name)
			for i, st := range steps {
				rec, err := db.SetMessageState(ctx, name, st[0])
				if err != nil || rec.State != st[1] {
					t.Fatalf("%s, step %d: set %d gave %+v, %v; want state %d", name, i, st[0], rec, err, st[1])
				}
			}
		}
		// The queued mark writes only over STORED.
		stored("late mark")
		if _, err := db.SetMessageState(ctx, "late mark", store.MsgMMSSubmitted); err != nil {
			t.Fatal(err)
		}
		if rec, err := db.MarkFallbackQueued(ctx, "late mark", store.MsgMMSQueued); err != nil || rec.State != store.MsgMMSSubmitted || !rec.ViaSMS {
			t.Fatalf("MarkFallbackQueued after the submit = %+v, %v", rec, err)
		}
		if _, err := db.SetMessageState(ctx, "late mark", 42); phonebook.ErrorCode(err) != phonebook.EInvalid {
			t.Fatalf("state 42: %v, want invalid", err)
		}
		if _, err := db.MarkFallbackQueued(ctx, "late mark", store.MsgSMSSubmitted); phonebook.ErrorCode(err) != phonebook.EInvalid {
			t.Fatalf("mark queued with a submitted state: %v, want invalid", err)
		}
		if _, err := db.SetMessageState(ctx, "no such message", store.MsgSMSSubmitted); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("unknown id: %v, want not_found", err)
		}
	})
}

// Many writers apply each message's states at once, in every order: each
// record ends in its newest state, whichever write came last.
func TestMessageStateConcurrentWriters(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		alice, bob := phonebook.MSISDN("+8613800138000"), phonebook.MSISDN("+8613900139000")
		at := time.Now().UTC().Truncate(time.Microsecond)
		const n = 100
		var msgs []store.Message
		for i := range n {
			msgs = append(msgs, store.Message{ID: fmt.Sprintf("m%d", i), Sender: alice, ClientMsgID: fmt.Sprintf("c%d", i), Recipient: bob, Type: 1, Text: "x", SentAt: at})
		}
		if _, err := db.StoreMessages(ctx, msgs); err != nil {
			t.Fatal(err)
		}
		// Half end delivered by the handset, half failed.
		final := func(i int) int {
			if i%2 == 0 {
				return store.MsgSMSDelivered
			}
			return store.MsgFailed
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4*n)
		for i := range n {
			states := []int{store.MsgSMSQueued, store.MsgSMSSubmitted, final(i)}
			rand.Shuffle(len(states), func(a, b int) { states[a], states[b] = states[b], states[a] })
			for _, st := range states {
				wg.Go(func() {
					if _, err := db.SetMessageState(ctx, msgs[i].ID, st); err != nil {
						errs <- err
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for i := range n {
			rec, err := db.ChatRecord(ctx, msgs[i].ID)
			if err != nil || rec.State != final(i) {
				t.Fatalf("%s = %+v, %v; want state %d", msgs[i].ID, rec, err, final(i))
			}
		}
	})
}

// docs/protocol.md states the order a client relies on; it must be the
// order SetMessageState keeps.
func TestMessageStateOrderIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.Lines(string(b)) {
		if strings.HasPrefix(l, "`STORED` <") {
			line = strings.TrimSpace(l)
		}
	}
	if line == "" {
		t.Fatal("docs/protocol.md has no line giving the order of states (starting \"`STORED` <\")")
	}
	documented := map[int]bool{}
	for rank, group := range strings.Split(line, " < ") {
		for name := range strings.SplitSeq(group, " = ") {
			v, ok := relaypb.MessageState_value[strings.Trim(name, "`")]
			if !ok {
				t.Fatalf("docs/protocol.md orders %s, which is not a MessageState", name)
			}
			got, ok := store.StateRank(int(v))
			if !ok || got != rank {
				t.Errorf("docs/protocol.md ranks %s %d, the store %d (known %v)", name, rank, got, ok)
			}
			documented[int(v)] = true
		}
	}
	for name, v := range relaypb.MessageState_value {
		if _, ok := store.StateRank(int(v)); ok && !documented[int(v)] {
			t.Errorf("the store orders %s; docs/protocol.md does not", name)
		}
	}
}
