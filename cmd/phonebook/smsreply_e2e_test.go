package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

const bobNumber = "+8613700137000" // has no account in these tests

// longReply is Chinese and emoji, longer than one UCS-2 SMS (70
// characters): the simulator sends it in parts with a concatenation UDH.
var longReply = strings.Repeat("好的，我晚上七点到。", 6) + " 👍🎉 see you"

// loginPhone is loginAt for m.
func loginPhone(t *testing.T, m *Main, number string) func() *client.Client {
	t.Helper()
	return loginAt(t, m.HTTPAddr(), m.RelayAddr(), number)
}

// waitSubmit waits for an SMS at the simulator to dest whose text contains
// want, after the first skip submits.
func waitSubmit(t *testing.T, ctx context.Context, sim *smscsim.Sim, skip int, dest, want string) smscsim.Submit {
	t.Helper()
	for {
		subs := sim.Submits()
		for _, s := range subs[min(skip, len(subs)):] {
			if "+"+strings.TrimPrefix(s.Dest, "+") == dest && strings.Contains(s.Text, want) {
				return s
			}
		}
		if _, err := sim.WaitSubmits(ctx, len(subs)+1); err != nil {
			t.Fatalf("no SMS to %s containing %q (got %d SMS)", dest, want, len(subs))
		}
	}
}

// sendText sends text to to and waits for its SendResult.
func sendText(t *testing.T, ctx context.Context, c *client.Client, to, text string) *relaypb.SendResult {
	t.Helper()
	p, err := c.Send(to, text)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("SendResult: %v", err)
	}
	return res
}

func nextDelivery(t *testing.T, ctx context.Context, c *client.Client) *relaypb.Deliver {
	t.Helper()
	select {
	case d := <-c.Deliveries():
		return d
	case <-ctx.Done():
		t.Fatal("no message arrived")
		return nil
	}
}

// receiptFor waits for the receipt of message id in state.
func receiptFor(t *testing.T, ctx context.Context, c *client.Client, id string, state relaypb.MessageState) *relaypb.Receipt {
	t.Helper()
	for {
		select {
		case r := <-c.Receipts():
			if r.ServerMsgId == id && r.State == state {
				return r
			}
		case <-ctx.Done():
			t.Fatalf("no %s receipt for %s", state, id)
			return nil
		}
	}
}

func inject(t *testing.T, ctx context.Context, sim *smscsim.Sim, from, to, text string) {
	t.Helper()
	if err := sim.InjectMO(ctx, from, to, text); err != nil {
		t.Fatalf("MO %s -> %s: %v", from, to, err)
	}
}

func extensionConfig(t *testing.T) config.Config {
	cfg := testConfig(t)
	cfg.SMSReply.Mode = "extension"
	return cfg
}

// Alice writes to Bob, who has no app: the SMS leaves from the short number
// plus an extension code. Bob's concatenated Chinese-and-emoji reply to it
// reaches Alice as an IM message of type SMS from his number, at once while
// she is online, and from the offline store at her next login.
func TestSMSReplyExtensionEndToEnd(t *testing.T) {
	m := startMain(t, extensionConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := loginPhone(t, m, "13600136000")
	alice := dial()

	if res := sendText(t, ctx, alice, "13700137000", "dinner tonight?"); res.State == relaypb.MessageState_FAILED {
		t.Fatalf("send: %v", res)
	}
	sms := waitSubmit(t, ctx, m.Sim, 0, bobNumber, "dinner tonight?")
	if !strings.HasPrefix(sms.Source, "10690") || len(sms.Source) != len("10690")+4 {
		t.Fatalf("fallback SMS source %q: want 10690 and a 4-digit code", sms.Source)
	}

	inject(t, ctx, m.Sim, bobNumber, sms.Source, longReply)
	d := nextDelivery(t, ctx, alice)
	if d.From != bobNumber || d.Text != longReply || d.Type != relaypb.MessageType_SMS || d.Offline {
		t.Fatalf("alice got %+v", d)
	}

	// Offline: stored, delivered at login, in order.
	alice.Close()
	<-alice.Done()
	inject(t, ctx, m.Sim, bobNumber, sms.Source, "第二条 ✌️")
	inject(t, ctx, m.Sim, bobNumber, sms.Source, "third")
	alice = dial()
	for _, want := range []string{"第二条 ✌️", "third"} {
		d := nextDelivery(t, ctx, alice)
		if d.From != bobNumber || d.Text != want || d.Type != relaypb.MessageType_SMS || !d.Offline {
			t.Fatalf("alice got %+v, want %q stored", d, want)
		}
	}
	// A second sender to Bob gets another code; Bob's reply to each
	// reaches its own sender.
	carol := loginPhone(t, m, "13500135000")()
	sendText(t, ctx, carol, "13700137000", "hi from carol")
	csms := waitSubmit(t, ctx, m.Sim, 0, bobNumber, "hi from carol")
	if csms.Source == sms.Source {
		t.Fatalf("alice and carol share the source %s", sms.Source)
	}
	inject(t, ctx, m.Sim, bobNumber, csms.Source, "for carol")
	inject(t, ctx, m.Sim, bobNumber, sms.Source, "for alice")
	if d := nextDelivery(t, ctx, carol); d.Text != "for carol" {
		t.Fatalf("carol got %+v", d)
	}
	if d := nextDelivery(t, ctx, alice); d.Text != "for alice" {
		t.Fatalf("alice got %+v", d)
	}
}

// The same across two nodes: Alice is connected to node B; Bob's reply
// comes in through node A's SMSC.
func TestSMSReplyAcrossNodesEndToEnd(t *testing.T) {
	a, b := twoNodes(t, func(c *config.Config) { c.SMSReply.Mode = "extension" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := loginPhone(t, b, "13600136000")()
	sendText(t, ctx, alice, "13700137000", "from node b")
	// The nodes share the outbox: either one's SMSC may carry the SMS.
	var source string
	for source == "" {
		for _, sim := range []*smscsim.Sim{a.Sim, b.Sim} {
			for _, s := range sim.Submits() {
				if strings.Contains(s.Text, "from node b") {
					source = s.Source
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the fallback SMS reached neither node's SMSC")
		case <-time.After(20 * time.Millisecond):
		}
	}
	inject(t, ctx, a.Sim, bobNumber, source, longReply)
	d := nextDelivery(t, ctx, alice)
	if d.From != bobNumber || d.Text != longReply || d.Type != relaypb.MessageType_SMS {
		t.Fatalf("alice got %+v", d)
	}
}

// Sticky mode: one source address; a reply goes to whoever wrote last, or
// to the sender whose number starts it; with rule ask and several recent
// senders, an SMS back explains how to address the reply.
func TestSMSReplyStickyTwoSendersEndToEnd(t *testing.T) {
	for _, rule := range []string{"most_recent", "ask"} {
		t.Run(rule, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.SMSReply.Mode, cfg.SMSReply.StickyRule = "sticky", rule
			m := startMain(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			alice := loginPhone(t, m, "13600136000")()
			carol := loginPhone(t, m, "13500135000")()
			sendText(t, ctx, alice, "13700137000", "from alice")
			first := waitSubmit(t, ctx, m.Sim, 0, bobNumber, "from alice")
			sendText(t, ctx, carol, "13700137000", "from carol")
			second := waitSubmit(t, ctx, m.Sim, 0, bobNumber, "from carol")
			if first.Source != "10690" || second.Source != "10690" {
				t.Fatalf("sticky sources %q %q: want the short number", first.Source, second.Source)
			}
			n := len(m.Sim.Submits())
			inject(t, ctx, m.Sim, bobNumber, "10690", "who is this?")
			if rule == "most_recent" {
				if d := nextDelivery(t, ctx, carol); d.From != bobNumber || d.Text != "who is this?" {
					t.Fatalf("carol got %+v", d)
				}
			} else {
				ask := waitSubmit(t, ctx, m.Sim, n, bobNumber, "+8613600136000")
				if !strings.Contains(ask.Text, "+8613500135000") {
					t.Fatalf("ask SMS %q names not both senders", ask.Text)
				}
			}
			// Addressed by number: to Alice, even though Carol wrote last.
			inject(t, ctx, m.Sim, bobNumber, "10690", "13600136000 yes, tonight")
			if d := nextDelivery(t, ctx, alice); d.From != bobNumber || d.Text != "yes, tonight" {
				t.Fatalf("alice got %+v", d)
			}
			select {
			case d := <-carol.Deliveries():
				t.Fatalf("carol got %+v", d)
			case <-alice.Deliveries():
				t.Fatal("alice got a second message")
			default:
			}
		})
	}
}

// Every keyword form opts out (confirmed by SMS): then a sender's message
// gets FAILED with reason opted_out and no SMS leaves; every opt-in form
// turns SMS on again.
func TestSMSOptOutKeywordsEndToEnd(t *testing.T) {
	m := startMain(t, testConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	optOuts := []string{"TD", "td", " T D ", "ＴＤ", "STOP", "Stop!", "退订", "UNSUBSCRIBE", "unsubscribe.", "ＳＴＯＰ", "退 订"}
	optIns := []string{"START", "start", "恢复", "ｓｔａｒｔ", " Start "}
	for i, kw := range optOuts {
		t.Run(fmt.Sprintf("%q", kw), func(t *testing.T) {
			// A sender each: the relay's per-sender SMS quota is not
			// what this tests.
			alice := loginPhone(t, m, fmt.Sprintf("136%08d", i))()
			n := len(m.Sim.Submits())
			inject(t, ctx, m.Sim, bobNumber, "10690", kw)
			waitSubmit(t, ctx, m.Sim, n, bobNumber, "no more SMS from anyone")

			res := sendText(t, ctx, alice, "13700137000", "blocked "+kw)
			r := receiptFor(t, ctx, alice, res.ServerMsgId, relaypb.MessageState_FAILED)
			if r.Error == nil || r.Error.Code != "opted_out" {
				t.Fatalf("FAILED receipt without reason opted_out: %+v", r)
			}
			in := optIns[i%len(optIns)]
			n = len(m.Sim.Submits())
			inject(t, ctx, m.Sim, bobNumber, "10690", in)
			waitSubmit(t, ctx, m.Sim, n, bobNumber, "are on again")
			// No SMS left for the refused message.
			for _, s := range m.Sim.Submits() {
				if strings.Contains(s.Text, "blocked "+kw) {
					t.Fatalf("an SMS left for a message to an opted-out number: %+v", s)
				}
			}
			res = sendText(t, ctx, alice, "13700137000", "welcome back "+kw)
			receiptFor(t, ctx, alice, res.ServerMsgId, relaypb.MessageState_SMS_DELIVERED)
		})
	}
}

// In extension mode an opt-out sent to a conversation's extension stops
// only that sender.
func TestSMSOptOutPerSenderEndToEnd(t *testing.T) {
	m := startMain(t, extensionConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := loginPhone(t, m, "13600136000")()
	carol := loginPhone(t, m, "13500135000")()
	sendText(t, ctx, alice, "13700137000", "hello from alice")
	sms := waitSubmit(t, ctx, m.Sim, 0, bobNumber, "hello from alice")
	n := len(m.Sim.Submits())
	inject(t, ctx, m.Sim, bobNumber, sms.Source, "退订")
	conf := waitSubmit(t, ctx, m.Sim, n, bobNumber, "no more SMS from +8613600136000")
	if conf.Source != sms.Source {
		t.Fatalf("confirmation from %q, want the conversation's address %q", conf.Source, sms.Source)
	}
	res := sendText(t, ctx, alice, "13700137000", "again")
	if r := receiptFor(t, ctx, alice, res.ServerMsgId, relaypb.MessageState_FAILED); r.Error.GetCode() != "opted_out" {
		t.Fatalf("receipt %+v", r)
	}
	res = sendText(t, ctx, carol, "13700137000", "carol still gets through")
	receiptFor(t, ctx, carol, res.ServerMsgId, relaypb.MessageState_SMS_DELIVERED)
}

// The per-recipient daily cap holds across senders.
func TestSMSRecipientDailyCapEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.SMSReply.MaxPerRecipientDay = 3
	m := startMain(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := loginPhone(t, m, "13600136000")()
	carol := loginPhone(t, m, "13500135000")()
	for i, c := range []*client.Client{alice, carol, alice} {
		res := sendText(t, ctx, c, "13700137000", fmt.Sprint("within the cap ", i))
		receiptFor(t, ctx, c, res.ServerMsgId, relaypb.MessageState_SMS_DELIVERED)
	}
	res := sendText(t, ctx, carol, "13700137000", "over the cap")
	if r := receiptFor(t, ctx, carol, res.ServerMsgId, relaypb.MessageState_FAILED); r.Error.GetCode() != "recipient_daily_limit" {
		t.Fatalf("receipt %+v", r)
	}
	// Another recipient is not affected.
	res = sendText(t, ctx, carol, "13900139000", "someone else")
	receiptFor(t, ctx, carol, res.ServerMsgId, relaypb.MessageState_SMS_DELIVERED)
}

// Bad inbound SMS are acknowledged to the SMSC (InjectMO returns once the
// server answered ESME_ROK), counted and dropped; the server goes on.
func TestSMSReplyBadInputEndToEnd(t *testing.T) {
	m := startMain(t, extensionConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := loginPhone(t, m, "13600136000")()
	sendText(t, ctx, alice, "13700137000", "hello")
	sms := waitSubmit(t, ctx, m.Sim, 0, bobNumber, "hello")

	inject(t, ctx, m.Sim, bobNumber, "106909999", "to nobody's extension") // unknown extension
	inject(t, ctx, m.Sim, "+8613900139000", sms.Source, "not bob's code")  // another number's conversation
	inject(t, ctx, m.Sim, bobNumber, sms.Source, "")                       // empty
	inject(t, ctx, m.Sim, bobNumber, sms.Source, "   ")                    // blank
	inject(t, ctx, m.Sim, "Phonebook", sms.Source, "alphanumeric sender")  // non-numeric
	want := map[string]float64{"unknown_extension": 2, "empty": 2, "non_numeric_sender": 1}
	got := inboundCounts(t, m)
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("phonebook_sms_reply_inbound_total: %v, want %v", got, want)
		}
	}
	// Nothing reached Alice, and a good reply still does.
	inject(t, ctx, m.Sim, bobNumber, sms.Source, "ok")
	if d := nextDelivery(t, ctx, alice); d.Text != "ok" {
		t.Fatalf("alice got %+v", d)
	}
}

func inboundCounts(t *testing.T, m *Main) map[string]float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "phonebook_sms_reply_inbound_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = mt.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// The README tour "Bob answers by SMS", through the commands: Alice's
// `phone send` to Bob (no app) leaves from an extension; `smsc-sim mo
// --reply` on the built-in simulator's HTTP control (smsc.simulator_http)
// answers it; Alice's `phone listen` shows the reply; `admin optout`
// lists, adds and removes opt-outs, and Alice's next message then fails
// with opted_out.
func TestSMSReplyTourEndToEnd(t *testing.T) {
	cfg := extensionConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.SMSC.SimulatorHTTP = ln.Addr().String()
	ln.Close()
	m := startMain(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := filepath.Join(t.TempDir(), "alice.json")
	run := func(args ...string) string {
		t.Helper()
		var out lockedBuffer
		if err := runPhone(t, ctx, m, alice, &out, args...); err != nil {
			t.Fatalf("phone %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	cli := func(args ...string) (string, error) {
		c := newRootCmd()
		var out lockedBuffer
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs(args)
		err := c.ExecuteContext(ctx)
		return out.String(), err
	}
	run("register", "13600136000", "--method", "header")
	if out := run("send", "13700137000", "dinner tonight?", "--wait", "3s"); !strings.Contains(out, "sms_delivered") {
		t.Fatalf("send:\n%s", out)
	}

	var listen lockedBuffer
	lctx, stopListen := context.WithCancel(ctx)
	listenDone := make(chan error, 1)
	go func() { listenDone <- runPhone(t, lctx, m, alice, &listen, "listen", "--wait", "1m") }()
	waitOutput(t, ctx, &listen, "contact(s) visible")

	out, err := cli("smsc-sim", "mo", "--http", cfg.SMSC.SimulatorHTTP, "--from", bobNumber, "--reply", "好的", "七点见", "👍")
	if err != nil || !strings.Contains(out, "MO +8613700137000 -> 10690") || !strings.Contains(out, "delivered") {
		t.Fatalf("smsc-sim mo: %q %v", out, err)
	}
	waitOutput(t, ctx, &listen, "+8613700137000: 好的 七点见 👍 [SMS reply]")
	stopListen()
	<-listenDone

	if out, err := cli("smsc-sim", "mo", "--http", cfg.SMSC.SimulatorHTTP, "--from", "+8613900139000", "--reply", "hi"); err == nil || !strings.Contains(err.Error(), "no SMS to reply to") {
		t.Fatalf("reply from a phone that got nothing: %q %v", out, err)
	}

	db := []string{"--database-dsn", cfg.Database.DSN}
	if out, err := cli(append([]string{"admin", "optout", "add", "137 0013 7000", "--from", "13600136000"}, db...)...); err != nil || !strings.Contains(out, "+8613700137000 takes no SMS from +8613600136000") {
		t.Fatalf("optout add: %q %v", out, err)
	}
	if out, err := cli(append([]string{"admin", "optout", "list"}, db...)...); err != nil || !strings.Contains(out, "+8613700137000  +8613600136000") {
		t.Fatalf("optout list: %q %v", out, err)
	}
	if out := run("send", "13700137000", "still there?", "--wait", "2s"); !strings.Contains(out, "failed (opted_out: ") {
		t.Fatalf("send to an opted-out number:\n%s", out)
	}
	if out, err := cli(append([]string{"admin", "optout", "remove", "13700137000"}, db...)...); err == nil || !strings.Contains(err.Error(), "no such opt-out") {
		t.Fatalf("remove the (absent) opt-out from anyone: %q %v", out, err)
	}
	if out, err := cli(append([]string{"admin", "optout", "remove", "13700137000", "--all"}, db...)...); err != nil || !strings.Contains(out, "1 opt-out(s) removed") {
		t.Fatalf("optout remove --all: %q %v", out, err)
	}
	if out := run("send", "13700137000", "back again", "--wait", "3s"); !strings.Contains(out, "sms_delivered") {
		t.Fatalf("send after the opt-out went:\n%s", out)
	}
}
