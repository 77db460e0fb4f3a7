package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func TestMessagesOfflineLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		alice, bob := phonebook.MSISDN("+8613800138000"), phonebook.MSISDN("+8613900139000")
		at := time.Now().UTC().Truncate(time.Microsecond)
		var msgs []store.Message
		for i := range 5 {
			msgs = append(msgs, store.Message{ID: fmt.Sprintf("m%d", i), Sender: alice, ClientMsgID: fmt.Sprintf("c%d", i),
				Recipient: bob, Type: 1, Text: fmt.Sprintf("hello %d 你好 😀", i), SentAt: at})
		}
		res, err := db.StoreMessages(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Duplicate || r.ID != msgs[i].ID || r.State != store.MsgStored {
				t.Fatalf("result %d = %+v", i, r)
			}
		}
		// A retry of c2 under a new server id is a duplicate of m2.
		dup := msgs[2]
		dup.ID = "m-retry"
		res, err = db.StoreMessages(ctx, []store.Message{dup})
		if err != nil {
			t.Fatal(err)
		}
		if !res[0].Duplicate || res[0].ID != "m2" {
			t.Fatalf("duplicate result = %+v, want duplicate of m2", res[0])
		}
		got, err := db.OfflineMessages(ctx, bob, 0, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].ID != "m0" || got[2].ID != "m2" || got[1].Text != msgs[1].Text || !got[0].SentAt.Equal(at) {
			t.Fatalf("first page = %+v", got)
		}
		rest, err := db.OfflineMessages(ctx, bob, got[2].Seq, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(rest) != 2 || rest[0].ID != "m3" {
			t.Fatalf("second page = %+v", rest)
		}
		// Only the recipient's ack deletes.
		if acked, err := db.AckMessages(ctx, alice, []string{"m0"}, at); err != nil || len(acked) != 0 {
			t.Fatalf("ack by non-recipient = %v, %v", acked, err)
		}
		acked, err := db.AckMessages(ctx, bob, []string{"m0", "m1", "m0", "nope"}, at.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if len(acked) != 2 || acked[0].Sender != alice || acked[1].ClientMsgID != "c1" {
			t.Fatalf("acked = %+v", acked)
		}
		if n, _ := db.CountOfflineMessages(ctx, bob); n != 3 {
			t.Fatalf("offline count = %d, want 3", n)
		}
		rec, err := db.ChatRecord(ctx, "m0")
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != store.MsgDelivered || !rec.Offline || !rec.ReceivedAt.Equal(at.Add(time.Second)) || rec.Receiver != bob {
			t.Fatalf("record = %+v", rec)
		}
		if _, err := db.ChatRecord(ctx, "zzz"); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("missing record err = %v", err)
		}
	})
}

func TestMessagesSMSFallbackAndRecords(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		alice, bob := phonebook.MSISDN("+8613800138000"), phonebook.MSISDN("+8613900139000")
		at := time.Now().UTC().Truncate(time.Microsecond)
		_, err := db.StoreMessages(ctx, []store.Message{
			{ID: "due", Sender: alice, ClientMsgID: "c1", Recipient: bob, Type: 1, Text: "x", SentAt: at, SMSDueAt: at.Add(time.Minute)},
			{ID: "never", Sender: alice, ClientMsgID: "c2", Recipient: bob, Type: 1, Text: "y", SentAt: at},
		})
		if err != nil {
			t.Fatal(err)
		}
		if due, err := db.DueSMS(ctx, at, 10, 10); err != nil || len(due) != 0 {
			t.Fatalf("due before grace = %v, %v", due, err)
		}
		due, err := db.DueSMS(ctx, at.Add(time.Minute), 10, 10)
		if err != nil || len(due) != 1 || due[0].ID != "due" {
			t.Fatalf("due after grace = %+v, %v", due, err)
		}
		// Only one of two sweepers gets it.
		ok1, err1 := db.ClaimFallback(ctx, "due", due[0].SMSDueAt, at.Add(2*time.Minute))
		ok2, err2 := db.ClaimFallback(ctx, "due", due[0].SMSDueAt, at.Add(2*time.Minute))
		if err1 != nil || err2 != nil || !ok1 || ok2 {
			t.Fatalf("claims = %v %v, %v %v; want exactly the first", ok1, err1, ok2, err2)
		}
		if rec, err := db.MarkFallbackQueued(ctx, "due", store.MsgSMSQueued); err != nil || rec.State != store.MsgSMSQueued {
			t.Fatalf("MarkFallbackQueued = %+v, %v", rec, err)
		}
		if due, _ := db.DueSMS(ctx, at.Add(time.Hour), 10, 10); len(due) != 0 {
			t.Fatalf("still due after MarkFallbackQueued: %+v", due)
		}
		msgs, _ := db.OfflineMessages(ctx, bob, 0, 10)
		if len(msgs) != 2 || !msgs[0].ViaSMS || msgs[1].ViaSMS {
			t.Fatalf("offline after SMS = %+v", msgs)
		}
		rec, err := db.SetMessageState(ctx, "due", store.MsgSMSDelivered)
		if err != nil || rec.State != store.MsgSMSDelivered || !rec.ViaSMS || rec.ClientMsgID != "c1" {
			t.Fatalf("SetMessageState = %+v, %v", rec, err)
		}
		// Online deliveries are recorded once, even if the batch is retried.
		r := store.ChatRecord{ID: "live", Sender: bob, ClientMsgID: "b1", Receiver: alice, Content: "hi", Type: 1,
			SentAt: at, ReceivedAt: at, State: store.MsgDelivered}
		for range 2 {
			if err := db.RecordMessages(ctx, []store.ChatRecord{r}); err != nil {
				t.Fatal(err)
			}
		}
		hist, err := db.ChatHistory(ctx, alice, time.Time{}, 10)
		if err != nil || len(hist) != 3 {
			t.Fatalf("history = %+v, %v", hist, err)
		}
		got, err := db.ChatRecordByClientID(ctx, bob, "b1")
		if err != nil || got.ID != "live" || !got.ReceivedAt.Equal(at) {
			t.Fatalf("by client id = %+v, %v", got, err)
		}
	})
}

// DueSMS takes at most perSender of one sender's due fallbacks, so a
// sender with a long backlog does not hold up the others.
func TestDueSMSFairAcrossSenders(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		at := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
		var msgs []store.Message
		for i := range 50 {
			msgs = append(msgs, store.Message{ID: fmt.Sprint("flood-", i), Sender: "+8613800000001", ClientMsgID: fmt.Sprint("f", i),
				Recipient: "+8613700000001", Text: "x", SentAt: at, SMSDueAt: at.Add(time.Duration(i) * time.Millisecond)})
		}
		msgs = append(msgs, store.Message{ID: "other", Sender: "+8613800000002", ClientMsgID: "o", Recipient: "+8613700000002",
			Text: "y", SentAt: at, SMSDueAt: at.Add(time.Second)})
		if _, err := db.StoreMessages(ctx, msgs); err != nil {
			t.Fatal(err)
		}
		due, err := db.DueSMS(ctx, time.Now(), 5, 10)
		if err != nil {
			t.Fatal(err)
		}
		var flood, other int
		for _, m := range due {
			if m.Sender == "+8613800000002" {
				other++
			} else {
				flood++
			}
		}
		if flood != 5 || other != 1 {
			t.Fatalf("due: %d of the flooding sender, %d of the other; want 5 and 1", flood, other)
		}
		if due[0].ID != "flood-0" || due[len(due)-1].ID != "other" {
			t.Fatalf("not in due order: first %s, last %s", due[0].ID, due[len(due)-1].ID)
		}
	})
}
