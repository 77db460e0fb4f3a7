package relay_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store"
)

func TestUnregisteredRecipientFallsBackToSMS(t *testing.T) {
	e := start(t, testConfig(), nil) // policy: unregistered
	a := e.alice(client.Options{})
	p, _ := a.Send("137 0013 7000", "see you at 8")
	id, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("state %s, want STORED", state)
	}
	waitFor(t, "SMS handed to the outbox", func() bool { return len(e.fallback.all()) == 1 })
	sms := e.fallback.all()[0]
	want := relay.FallbackSMS{MessageID: id, From: alice, To: carol, Text: "[Phonebook] +8613800138000: see you at 8", Caption: "see you at 8"}
	if !reflect.DeepEqual(sms, want) {
		t.Fatalf("fallback got %+v, want %+v", sms, want)
	}
	if r := next(t, a.Receipts(), "SMS_QUEUED receipt"); r.ServerMsgId != id || r.State != relaypb.MessageState_SMS_QUEUED {
		t.Fatalf("receipt %v", r)
	}
	// The outbox reports progress; the sender hears of it and the record keeps it.
	if err := e.srv.SMSStateChanged(context.Background(), id, relaypb.MessageState_SMS_DELIVERED, nil); err != nil {
		t.Fatal(err)
	}
	if r := next(t, a.Receipts(), "SMS_DELIVERED receipt"); r.State != relaypb.MessageState_SMS_DELIVERED || r.ClientMsgId != p.ClientMsgID {
		t.Fatalf("receipt %v", r)
	}
	rec, err := e.db.ChatRecord(context.Background(), id)
	if err != nil || rec.State != store.MsgSMSDelivered || !rec.ViaSMS {
		t.Fatalf("record %+v %v", rec, err)
	}
	if err := e.srv.SMSStateChanged(context.Background(), "no-such-id", relaypb.MessageState_SMS_DELIVERED, nil); err == nil {
		t.Fatal("unknown message id accepted")
	}
	// A submit result told after the delivery report is old news: the
	// record keeps SMS_DELIVERED and the sender hears nothing of it.
	if err := e.srv.SMSStateChanged(context.Background(), id, relaypb.MessageState_SMS_SUBMITTED, nil); err != nil {
		t.Fatal(err)
	}
	if rec, err := e.db.ChatRecord(context.Background(), id); err != nil || rec.State != store.MsgSMSDelivered {
		t.Fatalf("record after a late SMS_SUBMITTED: %+v %v", rec, err)
	}
	// Carol installs the client later: the message is in her history,
	// flagged as already sent by SMS, and no second SMS goes out.
	e.auth.add("tok-carol", carol, "dev-carol")
	c := e.dial("tok-carol", "dev-carol", client.Options{AutoAck: true})
	d := next(t, c.Deliveries(), "history delivery")
	if d.ServerMsgId != id || !d.ViaSms || !d.Offline || d.Text != "see you at 8" {
		t.Fatalf("delivery %v", d)
	}
	if n := len(e.fallback.all()); n != 1 {
		t.Fatalf("%d SMS sent, want 1", n)
	}
	// The next receipt the sender gets is her reading it, not the late
	// SMS_SUBMITTED.
	if r := next(t, a.Receipts(), "DELIVERED receipt"); r.ServerMsgId != id || r.State != relaypb.MessageState_DELIVERED {
		t.Fatalf("receipt after the late submit result: %v, want DELIVERED", r)
	}
}

func TestOfflineAfterGraceFallsBackToSMS(t *testing.T) {
	cfg := testConfig()
	cfg.Fallback = relay.FallbackOfflineAfter
	cfg.FallbackGrace = 200 * time.Millisecond
	cfg.SweepInterval = 20 * time.Millisecond
	e := start(t, cfg, nil)
	a := e.alice(client.Options{})
	p, _ := a.Send(string(bob), "are you there?")
	id, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("state %s", state)
	}
	waitFor(t, "SMS after the grace period", func() bool { return len(e.fallback.all()) == 1 })
	if sms := e.fallback.all()[0]; sms.MessageID != id || sms.To != bob {
		t.Fatalf("sms %+v", sms)
	}
	if r := next(t, a.Receipts(), "SMS_QUEUED receipt"); r.ServerMsgId != id || r.State != relaypb.MessageState_SMS_QUEUED {
		t.Fatalf("receipt %v", r)
	}
	b := e.bob(client.Options{AutoAck: true})
	if d := next(t, b.Deliveries(), "delivery"); d.ServerMsgId != id || !d.ViaSms {
		t.Fatalf("delivery %v", d)
	}
	// A message for an online member is never sent as SMS, however long
	// it stays unacknowledged.
	p, _ = a.Send(string(bob), "online now")
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("state %s", state)
	}
	if n := len(e.fallback.all()); n != 1 {
		t.Fatalf("%d SMS, want 1", n)
	}
}

func TestFallbackNeverStoresOnly(t *testing.T) {
	cfg := testConfig()
	cfg.Fallback = relay.FallbackNever
	e := start(t, cfg, nil)
	a := e.alice(client.Options{})
	p, _ := a.Send(string(carol), "no sms")
	if _, state := wait(t, p); state != "STORED" {
		t.Fatalf("state %s", state)
	}
	p, _ = a.Send(string(carol), "second")
	wait(t, p)
	// Shutdown waits for SMS hand-offs in progress: after it, none can come.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.fallback.all()); n != 0 {
		t.Fatalf("%d SMS under policy never", n)
	}
}

func TestSMSStateMapping(t *testing.T) {
	for in, want := range map[string]relaypb.MessageState{
		"submitted": relaypb.MessageState_SMS_SUBMITTED, "delivered": relaypb.MessageState_SMS_DELIVERED,
		"undeliverable": relaypb.MessageState_FAILED, "expired": relaypb.MessageState_FAILED, "failed": relaypb.MessageState_FAILED,
	} {
		if got, ok := relay.SMSState(in); !ok || got != want {
			t.Errorf("SMSState(%q) = %v %v, want %v", in, got, ok, want)
		}
	}
	if _, ok := relay.SMSState("queued"); ok {
		t.Error("unknown outbox state mapped")
	}
	for state, want := range map[string]phonebook.Code{
		"expired": phonebook.EExpired, "undeliverable": phonebook.EUndeliverable, "failed": phonebook.EUnavailable,
	} {
		err := relay.SMSFailure(state, "why")
		if phonebook.ErrorCode(err) != want || phonebook.ErrorMessage(err) != state+": why" {
			t.Errorf("SMSFailure(%q) = %v, want code %s", state, err, want)
		}
	}
}

// The outbox's states, in its own words, reach the sender as receipts:
// "queued" means nothing to the relay and is ignored; "undeliverable"
// ends the message FAILED with code undeliverable and the outbox's reason.
func TestSMSOutboxStateChanged(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	p, _ := a.Send(string(carol), "by sms")
	id, _ := wait(t, p)
	next(t, a.Receipts(), "SMS_QUEUED receipt")
	ctx := context.Background()
	if err := e.srv.SMSOutboxStateChanged(ctx, id, "queued", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.SMSOutboxStateChanged(ctx, id, "submitted", ""); err != nil {
		t.Fatal(err)
	}
	if r := next(t, a.Receipts(), "SMS_SUBMITTED receipt"); r.State != relaypb.MessageState_SMS_SUBMITTED {
		t.Fatalf("after queued and submitted: %v", r)
	}
	if err := e.srv.SMSOutboxStateChanged(ctx, id, "undeliverable", "stat UNDELIV err 001"); err != nil {
		t.Fatal(err)
	}
	r := next(t, a.Receipts(), "FAILED receipt")
	if r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(phonebook.EUndeliverable) ||
		!strings.Contains(r.Error.GetMessage(), "undeliverable: stat UNDELIV err 001") {
		t.Fatalf("receipt %v", r)
	}
	if rec, err := e.db.ChatRecord(ctx, id); err != nil || rec.State != store.MsgFailed {
		t.Fatalf("record %+v %v", rec, err)
	}
	if err := e.srv.SMSOutboxStateChanged(ctx, "no-such-id", "delivered", ""); err == nil {
		t.Fatal("unknown message id accepted")
	}
}

// FallbackFuncs hands the SMS's fields to its functions; without Check
// every SMS passes the check.
func TestFallbackFuncs(t *testing.T) {
	var got []string
	f := relay.FallbackFuncs{
		Send: func(_ context.Context, id string, from, to phonebook.MSISDN, text string) error {
			got = append(got, strings.Join([]string{"send", id, string(from), string(to), text}, " "))
			return nil
		},
		Check: func(id string, from, to phonebook.MSISDN, text string) error {
			got = append(got, strings.Join([]string{"check", id, string(from), string(to), text}, " "))
			return phonebook.Errorf(phonebook.ETooLarge, "too long")
		},
	}
	sms := relay.FallbackSMS{MessageID: "m1", From: alice, To: carol, Text: "hi"}
	if err := f.CheckSMS(sms); phonebook.ErrorCode(err) != phonebook.ETooLarge {
		t.Fatalf("check: %v", err)
	}
	if err := f.SendSMS(context.Background(), sms); err != nil {
		t.Fatal(err)
	}
	want := []string{"check m1 +8613800138000 +8613700137000 hi", "send m1 +8613800138000 +8613700137000 hi"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := (relay.FallbackFuncs{Send: f.Send}).CheckSMS(sms); err != nil {
		t.Fatalf("no Check: %v", err)
	}
}

func TestSMSFallbackQuotaPerSender(t *testing.T) {
	cfg := testConfig()
	cfg.FallbackPerHour = 1
	e := start(t, cfg, nil)
	a := e.alice(client.Options{})
	for i := range 3 {
		p, _ := a.Send(string(carol), fmt.Sprint("msg ", i))
		if _, state := wait(t, p); state != "STORED" {
			t.Fatalf("message %d: %s", i, state)
		}
	}
	// The allowed SMS and the two refusals happen on their own schedules:
	// wait for all three outcomes before counting.
	waitFor(t, "one fallback sent and two refused", func() bool {
		return e.counter("phonebook_relay_sms_fallback_refused_total") == 2 && len(e.fallback.all()) >= 1
	})
	if n := len(e.fallback.all()); n != 1 {
		t.Fatalf("%d SMS sent, want 1 (quota)", n)
	}
	// Refused ones are still stored for carol.
	if k, _ := e.db.CountOfflineMessages(context.Background(), carol); k != 3 {
		t.Fatalf("%d stored, want 3", k)
	}
}

// An SMS fallback that keeps failing for a reason that may pass is retried
// until FallbackExpiry, then ends FAILED with reason expired; one refused
// for good (invalid destination) ends at once with its reason. Neither
// takes the sender's quota.
func TestSMSFallbackFailures(t *testing.T) {
	cfg := testConfig()
	cfg.FallbackExpiry = 1500 * time.Millisecond
	cfg.SweepInterval = 20 * time.Millisecond
	e := start(t, cfg, nil)
	e.fallback.setFail(func(s relay.FallbackSMS) error {
		if s.Text == "[Phonebook] +8613800138000: bad number" {
			return phonebook.Errorf(phonebook.EInvalidNumber, "sms destination is not an E.164 number")
		}
		return phonebook.Errorf(phonebook.EUnavailable, "the SMS outbox is not available; try again later")
	})
	a := e.alice(client.Options{})
	p, _ := a.Send(string(carol), "outbox down")
	id, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("state %s", state)
	}
	r := next(t, a.Receipts(), "FAILED receipt")
	if r.ServerMsgId != id || r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(phonebook.EExpired) {
		t.Fatalf("receipt %v", r)
	}
	if n := e.fallback.tries(); n > 1 {
		t.Fatalf("%d attempts; the first retry (a minute later) is past the expiry", n)
	}
	rec, err := e.db.ChatRecord(context.Background(), id)
	if err != nil || rec.State != store.MsgFailed {
		t.Fatalf("record %+v %v", rec, err)
	}

	// A permanent failure, with an expiry far away (the time the immediate
	// attempt takes on a loaded machine does not matter).
	cfg.FallbackExpiry = time.Hour
	e2 := start(t, cfg, e.db)
	e2.fallback.setFail(e.fallback.fail)
	a = e2.alice(client.Options{})
	p, _ = a.Send(string(carol), "bad number")
	id, _ = wait(t, p)
	r = next(t, a.Receipts(), "FAILED receipt")
	if r.ServerMsgId != id || r.Error.GetCode() != string(phonebook.EInvalidNumber) || !strings.Contains(r.Error.GetMessage(), "E.164") {
		t.Fatalf("receipt %v", r)
	}
	if n, _, err := e.db.Count(context.Background(), "relay_sms:"+string(alice), time.Hour); err != nil || n != 0 {
		t.Fatalf("failed fallbacks took %d of the quota (%v)", n, err)
	}
	// Both stay stored for carol, should she join.
	if k, _ := e.db.CountOfflineMessages(context.Background(), carol); k != 2 {
		t.Fatalf("%d stored, want 2", k)
	}
}

// The outbox reports the SMS submitted while the relay is still handing it
// over (an outbox that submits at once): the sender still hears
// SMS_QUEUED first, then SMS_SUBMITTED, and the record ends submitted.
func TestQueuedReceiptComesBeforeTheOutboxStates(t *testing.T) {
	e := start(t, testConfig(), nil) // policy: unregistered
	reported := make(chan error, 1)
	e.fallback.setFail(func(sms relay.FallbackSMS) error {
		go func() {
			reported <- e.srv.SMSStateChanged(context.Background(), sms.MessageID, relaypb.MessageState_SMS_SUBMITTED, nil)
		}()
		time.Sleep(200 * time.Millisecond) // room for the report to overtake, were it not held
		return nil
	})
	a := e.alice(client.Options{})
	p, _ := a.Send("137 0013 7000", "quick outbox")
	id, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("state %s, want STORED", state)
	}
	for _, want := range []relaypb.MessageState{relaypb.MessageState_SMS_QUEUED, relaypb.MessageState_SMS_SUBMITTED} {
		if r := next(t, a.Receipts(), want.String()+" receipt"); r.ServerMsgId != id || r.State != want {
			t.Fatalf("receipt %v, want %s", r, want)
		}
	}
	if err := next(t, reported, "the outbox's report"); err != nil {
		t.Fatal(err)
	}
	if rec, err := e.db.ChatRecord(context.Background(), id); err != nil || rec.State != store.MsgSMSSubmitted {
		t.Fatalf("record %+v %v", rec, err)
	}
}

// A fallback still being handed over when a shutdown runs out of time
// (its context canceled under it) gives the sender's quota back all the
// same: a canceled attempt sent nothing.
func TestSMSFallbackCanceledGivesTheQuotaBack(t *testing.T) {
	e := start(t, testConfig(), nil) // policy: unregistered
	entered, release := make(chan struct{}, 1), make(chan struct{})
	e.fallback.setFail(func(relay.FallbackSMS) error {
		entered <- struct{}{}
		<-release
		return phonebook.Errorf(phonebook.EUnavailable, "the SMS outbox is not available; try again later")
	})
	a := e.alice(client.Options{})
	p, _ := a.Send(string(carol), "cut short")
	if _, state := wait(t, p); state != "STORED" {
		t.Fatalf("state %s, want STORED", state)
	}
	next(t, entered, "the fallback attempt")
	quota := func() int64 {
		n, _, err := e.db.Count(context.Background(), "relay_sms:"+string(alice), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := quota(); n != 1 {
		t.Fatalf("quota %d while the fallback is in hand, want 1", n)
	}
	// The shutdown's patience ends while the fallback is in hand: the
	// relay cancels its work, then the outbox answers.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err == nil {
		t.Fatal("shutdown finished with a fallback still in hand")
	}
	close(release)
	poll.Until(t, "the canceled fallback's quota given back", func() bool { return quota() == 0 })
}
