package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// The relay's bounds end to end: the server, its SMS outbox and the
// built-in simulator over TCP, phones over the relay protocol.

const (
	aliceNum = phonebook.MSISDN("+8613800138000")
	bobNum   = phonebook.MSISDN("+8613900139000")
	carolNum = phonebook.MSISDN("+8613700137000") // no account
)

// account registers number by method D and logs in; it returns the session
// token and device id, for dialling the relay.
func account(t testing.TB, httpAddr, number string) (token, device string) {
	t.Helper()
	ctx := context.Background()
	api := &client.API{BaseURL: "http://" + httpAddr}
	id := client.Identity{DeviceID: "imei-" + number, SIMID: "sim-" + number}
	creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", number, id)
	if err != nil {
		t.Fatalf("register %s: %v", number, err)
	}
	sess, err := api.Login(ctx, number, id, creds.DeviceKey, "")
	if err != nil {
		t.Fatalf("login %s: %v", number, err)
	}
	return sess.Token, id.DeviceID
}

func dialRelay(t testing.TB, relayAddr, token, device string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, relayAddr, client.Options{Token: token, DeviceID: device, AutoAck: true})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func quotaUsed(t *testing.T, db *store.DB, sender phonebook.MSISDN) int64 {
	t.Helper()
	n, _, err := db.Count(context.Background(), "relay_sms:"+string(sender), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A 5,000-character message to a number without an account could only go
// by SMS, and is more than the outbox's 10 parts: it is refused at Send
// with the reason, no SMS is attempted and the sender's quota is
// untouched. For a member who stays offline (policy offline) the SMS is
// attempted at the grace's end: it fails for good with a FAILED receipt
// carrying the reason, and the message still reaches the member over IM.
func TestOverlongFallbackFailsWithReasonEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.Fallback = "offline"
	cfg.Relay.FallbackAfter = time.Second
	m := startMain(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	long := strings.Repeat("长", 5000)
	alice := phone(t, m, "13800138000")

	r := sendText(t, ctx, alice, "13700137000", long)
	if r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(phonebook.ETooLarge) ||
		!strings.Contains(r.Error.GetMessage(), "SMS") {
		t.Fatalf("over-long message to a number without an account: %v", r)
	}
	if n := quotaUsed(t, m.DB, aliceNum); n != 0 {
		t.Fatalf("refused fallback took %d of the quota", n)
	}

	bobToken, bobDevice := account(t, m.HTTPAddr(), "13900139000") // a member, offline
	r = sendText(t, ctx, alice, "13900139000", long)
	longID := r.ServerMsgId
	if r.State != relaypb.MessageState_STORED {
		t.Fatalf("over-long message to an offline member: %v", r)
	}
	rc := receiptFor(t, ctx, alice, r.ServerMsgId, relaypb.MessageState_FAILED)
	if rc.Error.GetCode() != string(phonebook.ETooLarge) || !strings.Contains(rc.Error.GetMessage(), "SMS fallback failed") {
		t.Fatalf("FAILED receipt without its reason: %v", rc)
	}
	if n := quotaUsed(t, m.DB, aliceNum); n != 0 {
		t.Fatalf("failed fallback took %d of the quota", n)
	}
	// A short one goes by SMS and counts: the quota is really counted.
	r = sendText(t, ctx, alice, "13700137000", "short")
	receiptFor(t, ctx, alice, r.ServerMsgId, relaypb.MessageState_SMS_QUEUED)
	if n := quotaUsed(t, m.DB, aliceNum); n != 1 {
		t.Fatalf("queued fallback counted %d, want 1", n)
	}
	for _, s := range m.Sim.Submits() {
		if len(s.Text) > 1000 {
			t.Fatalf("an over-long SMS reached the SMSC: %d bytes", len(s.Text))
		}
	}
	bob := dialRelay(t, m.RelayAddr(), bobToken, bobDevice)
	select {
	case d := <-bob.Deliveries():
		if d.ServerMsgId != longID || d.Text != long {
			t.Fatalf("bob got %.40s", d.Text)
		}
	case <-ctx.Done():
		t.Fatal("the member never got the message over IM")
	}
}

// The hourly SMS quota is counted in the store: a sender reconnecting 100
// times, alternately to two nodes that share the store, one of them
// restarted half way, gets no more SMS than the quota.
func TestSMSQuotaAcrossReconnectsNodesAndRestartEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("100 reconnections")
	}
	dsn := storetest.MySQLDSN(t)
	const quota = 3
	nodeCfg := func() config.Config {
		cfg := testConfig(t)
		cfg.Database.Driver, cfg.Database.DSN = "mysql", dsn
		cfg.Relay.FallbackPerHour = quota
		return cfg
	}
	nodes := []*Main{startMain(t, nodeCfg()), startMain(t, nodeCfg())}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	token, device := account(t, nodes[0].HTTPAddr(), "13800138000")
	startHour := time.Now().Truncate(time.Hour)
	var sims int
	for i := range 100 {
		if i == 50 {
			sims += len(nodes[0].Sim.Submits())
			nodes[0].Close()
			nodes[0] = startMain(t, nodeCfg())
		}
		n := nodes[i%2]
		c := dialRelay(t, n.RelayAddr(), token, device)
		r := sendText(t, ctx, c, "13700137000", "hello "+string(rune('a'+i%26)))
		if r.State != relaypb.MessageState_STORED {
			t.Fatalf("message %d: %v", i, r)
		}
		// Wait for its fallback's outcome: queued, or held for the next
		// quota window.
		for {
			rec, err := n.DB.ChatRecord(ctx, r.ServerMsgId)
			if err != nil {
				t.Fatal(err)
			}
			if rec.ViaSMS || heldForQuota(t, n.DB, r.ServerMsgId) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("message %d: no fallback outcome", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		c.Close()
	}
	recs, err := nodes[0].DB.ChatHistory(ctx, aliceNum, time.Time{}, 200)
	if err != nil {
		t.Fatal(err)
	}
	viaSMS := 0
	for _, rec := range recs {
		if rec.ViaSMS {
			viaSMS++
		}
	}
	// Every clock hour the test spans has its own quota.
	windows := int(time.Now().Truncate(time.Hour).Sub(startHour)/time.Hour) + 1
	if viaSMS == 0 || viaSMS > quota*windows {
		t.Fatalf("%d of 100 messages went by SMS; the quota is %d an hour (%d windows)", viaSMS, quota, windows)
	}
	sims += len(nodes[0].Sim.Submits()) + len(nodes[1].Sim.Submits())
	if sims > quota*windows {
		t.Fatalf("%d SMS reached the simulators; the quota is %d", sims, quota)
	}
}

// heldForQuota reports whether a stored message's fallback was put off to
// the next quota window: due in the future, exactly at the start of an
// hour (an immediate attempt's own retry is due a minute after storing).
func heldForQuota(t *testing.T, db *store.DB, id string) bool {
	t.Helper()
	msgs, err := db.OfflineMessages(context.Background(), carolNum, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.ID == id {
			due := m.SMSDueAt
			return due.After(time.Now()) && due.Equal(due.Truncate(time.Hour))
		}
	}
	return false
}

// The offline store's caps (per recipient, per sender) refuse with
// offline_full; a stored message not fetched within offline_ttl is
// deleted and its sender gets FAILED, expired; the caps free up.
func TestOfflineStoreBoundsEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.Fallback = "never"
	cfg.Relay.MaxOfflinePerRecipient = 3
	cfg.Relay.MaxOfflinePerSender = 5
	cfg.Relay.OfflineTTL = 3 * time.Second
	m := startMain(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := phone(t, m, "13800138000")
	bobToken, bobDevice := account(t, m.HTTPAddr(), "13900139000")
	account(t, m.HTTPAddr(), "13600136000")

	var stored []string
	for i := range 3 {
		r := sendText(t, ctx, alice, "13900139000", "for bob")
		if r.State != relaypb.MessageState_STORED {
			t.Fatalf("message %d to bob: %v", i, r)
		}
		stored = append(stored, r.ServerMsgId)
	}
	if r := sendText(t, ctx, alice, "13900139000", "one too many"); r.State != relaypb.MessageState_FAILED ||
		r.Error.GetCode() != string(phonebook.EOfflineFull) || !strings.Contains(r.Error.GetMessage(), string(bobNum)) {
		t.Fatalf("over the recipient's cap: %v", r)
	}
	for i := range 2 {
		r := sendText(t, ctx, alice, "13600136000", "for dave")
		if r.State != relaypb.MessageState_STORED {
			t.Fatalf("message %d to dave: %v", i, r)
		}
		stored = append(stored, r.ServerMsgId)
	}
	if r := sendText(t, ctx, alice, "13600136000", "one too many"); r.State != relaypb.MessageState_FAILED ||
		r.Error.GetCode() != string(phonebook.EOfflineFull) || !strings.Contains(r.Error.GetMessage(), "your messages") {
		t.Fatalf("over the sender's cap: %v", r)
	}
	// Nobody fetches them: each expires, and alice hears why.
	for _, id := range stored {
		rc := receiptFor(t, ctx, alice, id, relaypb.MessageState_FAILED)
		if rc.Error.GetCode() != string(phonebook.EExpired) {
			t.Fatalf("expiry receipt: %v", rc)
		}
		rec, err := m.DB.ChatRecord(ctx, id)
		if err != nil || rec.State != store.MsgFailed {
			t.Fatalf("expired message's record: %+v %v", rec, err)
		}
	}
	if n, _ := m.DB.CountOfflineMessages(ctx, bobNum); n != 0 {
		t.Fatalf("%d expired messages still stored for bob", n)
	}
	// Room again; bob gets only what was stored after the expiry.
	r := sendText(t, ctx, alice, "13900139000", "after expiry")
	if r.State != relaypb.MessageState_STORED {
		t.Fatalf("after expiry: %v", r)
	}
	bob := dialRelay(t, m.RelayAddr(), bobToken, bobDevice)
	select {
	case d := <-bob.Deliveries():
		if d.ServerMsgId != r.ServerMsgId {
			t.Fatalf("bob got %s %q, want only the message after the expiry", d.ServerMsgId, d.Text)
		}
	case <-ctx.Done():
		t.Fatal("bob got nothing")
	}
}

// A stored message too large for any frame (stored when
// relay.max_text_bytes was larger) is failed to its sender and deleted;
// the messages behind it are delivered.
func TestOversizedStoredMessageEndToEnd(t *testing.T) {
	m := startMain(t, testConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := phone(t, m, "13800138000")
	bobToken, bobDevice := account(t, m.HTTPAddr(), "13900139000")
	now := time.Now()
	msgs := []store.Message{
		{ID: "big-1", Sender: aliceNum, ClientMsgID: "c-big", Recipient: bobNum, Type: int(relaypb.MessageType_TEXT),
			Text: strings.Repeat("x", 70_000), SentAt: now},
		{ID: "small-2", Sender: aliceNum, ClientMsgID: "c-small", Recipient: bobNum, Type: int(relaypb.MessageType_TEXT),
			Text: "behind it", SentAt: now.Add(time.Millisecond)},
	}
	if _, err := m.DB.StoreMessages(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	bob := dialRelay(t, m.RelayAddr(), bobToken, bobDevice)
	select {
	case d := <-bob.Deliveries():
		if d.ServerMsgId != "small-2" {
			t.Fatalf("bob got %s first", d.ServerMsgId)
		}
	case <-ctx.Done():
		t.Fatal("the message behind the oversized one never came")
	}
	rc := receiptFor(t, ctx, alice, "big-1", relaypb.MessageState_FAILED)
	if rc.Error.GetCode() != string(phonebook.ETooLarge) || rc.ClientMsgId != "c-big" {
		t.Fatalf("receipt %v", rc)
	}
	for {
		if n, _ := m.DB.CountOfflineMessages(ctx, bobNum); n == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("messages still stored for bob")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if rec, err := m.DB.ChatRecord(ctx, "big-1"); err != nil || rec.State != store.MsgFailed {
		t.Fatalf("record %+v %v", rec, err)
	}
}

// A user who appears offline (im_status offline) is shown offline to
// contacts, and still gets messages over the connection; none goes by
// SMS, though the policy sends SMS to members who stay offline.
func TestAppearOfflineEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.Fallback = "offline"
	cfg.Relay.FallbackAfter = time.Second
	m := startMain(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := phone(t, m, "13800138000")
	bob := phone(t, m, "13900139000")
	account(t, m.HTTPAddr(), "13600136000") // dave: a member, really offline
	mutualContacts(t, ctx, alice, "13800138000", bob, "13900139000")

	off := "offline"
	if p, err := bob.SetPresence(ctx, &relaypb.PresenceSet{ImStatus: &off}); err != nil || p.ImStatus != "offline" {
		t.Fatalf("appear offline: %v %v", p, err)
	}
	list, err := alice.QueryPresence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.Number == string(bobNum) && p.ImStatus != "offline" {
			t.Fatalf("alice sees bob %s", p.ImStatus)
		}
	}
	r := sendText(t, ctx, alice, "13900139000", "you there?")
	if r.State != relaypb.MessageState_DELIVERED {
		t.Fatalf("to bob appearing offline: %v", r)
	}
	select {
	case d := <-bob.Deliveries():
		if d.Text != "you there?" {
			t.Fatalf("bob got %q", d.Text)
		}
	case <-ctx.Done():
		t.Fatal("bob got nothing")
	}
	// Dave is really offline: his message goes by SMS after the grace.
	// The sweeper takes due fallbacks in order, so once dave's SMS is at
	// the SMSC any SMS for bob's (earlier) message would be too.
	// A message for bob that is already due for SMS (as if stored while
	// he did not acknowledge it in time): he is connected, so the sweeper
	// leaves it to his connection, whatever his status says.
	if _, err := m.DB.StoreMessages(ctx, []store.Message{{ID: "for-bob", Sender: aliceNum, ClientMsgID: "c-for-bob",
		Recipient: bobNum, Type: int(relaypb.MessageType_TEXT), Text: "due", SentAt: time.Now(), SMSDueAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	r = sendText(t, ctx, alice, "13600136000", "and you?")
	receiptFor(t, ctx, alice, r.ServerMsgId, relaypb.MessageState_SMS_QUEUED)
	if _, err := m.Sim.WaitSubmits(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Sim.Submits() {
		if strings.HasSuffix(s.Dest, "8613900139000") {
			t.Fatalf("an SMS went to bob, who is connected: %+v", s)
		}
	}
}
