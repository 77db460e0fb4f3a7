package smsc

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestParseReceipt(t *testing.T) {
	tests := []struct {
		name  string
		d     Deliver
		id    string
		stat  string
		state string
		err   string
		done  time.Time
		text  string
		fail  bool
	}{
		{
			name: "standard text",
			d:    Deliver{ESMClass: 0x04, Payload: []byte("id:0A1B2C sub:001 dlvrd:001 submit date:2611251830 done date:2611251831 stat:DELIVRD err:000 text:Your code is 1")},
			id:   "0A1B2C", stat: "DELIVRD", state: StateDelivered, err: "000",
			done: time.Date(2026, 11, 25, 18, 31, 0, 0, time.UTC), text: "Your code is 1",
		},
		{
			name: "lower case, fields shuffled, seconds in dates",
			d:    Deliver{ESMClass: 0x04, Payload: []byte("stat:undeliv err:042 id:123456 done date:261125183159 sub:1 dlvrd:0 submit date:261125183000 text:")},
			id:   "123456", stat: "UNDELIV", state: StateUndeliverable, err: "042",
			done: time.Date(2026, 11, 25, 18, 31, 59, 0, time.UTC),
		},
		{
			name: "text containing field names",
			d:    Deliver{ESMClass: 0x04, Payload: []byte("id:77 sub:001 dlvrd:001 submit date:2611251830 done date:2611251831 stat:EXPIRED err:000 Text:id:99 stat:DELIVRD")},
			id:   "77", stat: "EXPIRED", state: StateExpired, err: "000", text: "id:99 stat:DELIVRD",
		},
		{
			name: "TLVs only",
			d:    Deliver{ESMClass: 0x04, ReceiptedMessageID: "abc", MessageState: 2},
			id:   "abc", stat: "DELIVRD", state: StateDelivered,
		},
		{
			name: "TLVs win over text",
			d:    Deliver{ESMClass: 0x04, ReceiptedMessageID: "tlv-id", MessageState: 5, NetworkErrorCode: []byte{3, 0, 0x0B}, Payload: []byte("id:text-id stat:DELIVRD")},
			id:   "tlv-id", stat: "UNDELIV", state: StateUndeliverable, err: "03000B",
		},
		{
			name: "network error code when no err field",
			d:    Deliver{ESMClass: 0x04, ReceiptedMessageID: "1", MessageState: 8, NetworkErrorCode: []byte{3, 0, 0x0B}},
			id:   "1", stat: "REJECTD", state: StateUndeliverable, err: "03000B",
		},
		{name: "enroute is not final", d: Deliver{ESMClass: 0x04, Payload: []byte("id:1 stat:ENROUTE")}, id: "1", stat: "ENROUTE"},
		{name: "acceptd is not final", d: Deliver{ESMClass: 0x04, Payload: []byte("id:1 stat:ACCEPTD")}, id: "1", stat: "ACCEPTD"},
		{name: "deleted", d: Deliver{ESMClass: 0x04, Payload: []byte("id:1 stat:DELETED")}, id: "1", stat: "DELETED", state: StateUndeliverable},
		{name: "unknown", d: Deliver{ESMClass: 0x04, Payload: []byte("id:1 stat:UNKNOWN")}, id: "1", stat: "UNKNOWN", state: StateUndeliverable},
		{name: "spelled out", d: Deliver{ESMClass: 0x04, Payload: []byte("id:1 stat:DELIVERED")}, id: "1", stat: "DELIVRD", state: StateDelivered},
		{name: "not a receipt", d: Deliver{ESMClass: 0, Payload: []byte("id:1 stat:DELIVRD")}, fail: true},
		{name: "no id", d: Deliver{ESMClass: 0x04, Payload: []byte("stat:DELIVRD")}, fail: true},
		{name: "bad stat", d: Deliver{ESMClass: 0x04, Payload: []byte("id:1 stat:WHATEVER")}, fail: true},
		{name: "bad message_state", d: Deliver{ESMClass: 0x04, ReceiptedMessageID: "1", MessageState: 9}, fail: true},
		{name: "garbage", d: Deliver{ESMClass: 0x04, Payload: []byte("\x00\xff:::")}, fail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseReceipt(tt.d)
			if (err != nil) != tt.fail {
				t.Fatalf("err %v", err)
			}
			if tt.fail {
				return
			}
			if r.MessageID != tt.id || r.Stat != tt.stat || r.State != tt.state || r.Err != tt.err || r.Text != tt.text {
				t.Fatalf("got %+v", r)
			}
			if !tt.done.IsZero() && !r.Done.Equal(tt.done) {
				t.Fatalf("done %v want %v", r.Done, tt.done)
			}
		})
	}
}

func TestMessageIDRules(t *testing.T) {
	// stored: what submit_sm_resp gave; receipt: what the receipt says;
	// rule: the link's receipt_ids. Each pair must match both ways: the
	// receipt names the part, and the part knows its receipt's id.
	tests := []struct{ rule, stored, receipt string }{
		{ReceiptIDsExact, "0A1B2C", "0a1b2c"},
		{ReceiptIDsDecimal, "0A1B2C", "662316"}, // hex in resp, decimal in receipt
		{ReceiptIDsHex, "662316", "A1B2C"},      // decimal in resp, hex in receipt
		{ReceiptIDsExact, "000123", "123"},
		{ReceiptIDsExact, "123", "0000123"},
		{ReceiptIDsDecimal, "7B", "123"},
		{ReceiptIDsHex, "123", "7b"},
		{ReceiptIDsHex, "291", "123"}, // resp decimal 291, receipt hex "123" with no letters
		{ReceiptIDsExact, "0", "0000"},
		{ReceiptIDsExact, "msg-XYZ", "MSG-xyz"},
		{ReceiptIDsDecimal, "ffffffffffffffffffff", "1208925819614629174706175"}, // beyond 64 bits
		{ReceiptIDsDecimal, "10", "16"},
		{ReceiptIDsHex, "16", "10"},
	}
	for _, tt := range tests {
		ids := newReceiptIDs(ruleFor(tt.rule), time.Second, nil)
		stored, receipt := NormalizeMessageID(tt.stored), NormalizeMessageID(tt.receipt)
		if f := ids.forms("l", receipt, 0); f.Exact != stored || f.Wait || len(f.Others) != 0 {
			t.Errorf("%s: receipt %q: forms %+v, want exactly %q", tt.rule, tt.receipt, f, stored)
		}
		if got := ids.receiptID("l", stored); got != receipt {
			t.Errorf("%s: part %q expects receipt id %q, want %q", tt.rule, tt.stored, got, receipt)
		}
	}
}

// ruleFor is a Submitter whose every link has the receipt_ids rule.
type ruleFor string

func (ruleFor) Submit(context.Context, Part) (SubmitResult, error) { return SubmitResult{}, nil }
func (r ruleFor) ReceiptIDs(string) string                         { return string(r) }

// On auto, the rule is learned from the ids a link carries; until then a
// receipt waits, then gets only the other forms the ids seen allow.
func TestMessageIDRulesLearned(t *testing.T) {
	type seen struct{ resp, rcpt []string }
	seq := func(n, base int) []string {
		var out []string
		for i := 1; i <= n; i++ {
			out = append(out, strconv.FormatInt(int64(i), base))
		}
		return out
	}
	tests := []struct {
		name string
		seen seen
		want string
	}{
		{"nothing yet", seen{}, ""},
		{"hex both sides", seen{seq(10, 16), seq(10, 16)}, ReceiptIDsExact},
		{"decimal both sides", seen{seq(16, 10), seq(16, 10)}, ReceiptIDsExact},
		{"hex resp, decimal receipts", seen{seq(10, 16), seq(16, 10)}, ReceiptIDsDecimal},
		{"decimal resp, hex receipts", seen{seq(16, 10), seq(10, 16)}, ReceiptIDsHex},
		{"too few decimal receipts", seen{seq(10, 16), seq(15, 10)}, ""},
		{"not numbers", seen{[]string{"msg-1"}, nil}, ReceiptIDsExact},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := newReceiptIDs(ruleFor(ReceiptIDsAuto), time.Second, slog.New(slog.DiscardHandler))
			for _, id := range tt.seen.resp {
				ids.saw("l", id, true)
			}
			for _, id := range tt.seen.rcpt {
				ids.saw("l", id, false)
			}
			if got := ids.rule("l"); got != tt.want {
				t.Fatalf("learned %q, want %q", got, tt.want)
			}
			if tt.want == "" && !ids.forms("l", "10", 0).Wait {
				t.Fatal("a receipt was matched before the rule was known")
			}
		})
	}
	// Not learned yet, but the SMSC's submit_sm_resp ids showed hex: after
	// the wait "10" may be exact or the decimal of hex "a", not hex "16".
	ids := newReceiptIDs(ruleFor(ReceiptIDsAuto), time.Second, slog.New(slog.DiscardHandler))
	ids.saw("l", "a", true)
	if f := ids.forms("l", "10", time.Second); f.Wait || f.Exact != "10" || !slices.Equal(f.Others, []string{"a"}) {
		t.Fatalf("forms %+v", f)
	}
	if got := ids.receiptID("l", "10"); got != "" {
		t.Fatalf("a part knows its receipt id %q before the rule is known", got)
	}
}

func FuzzParseReceipt(f *testing.F) {
	f.Add([]byte("id:1 sub:001 dlvrd:001 submit date:2611251830 done date:2611251831 stat:DELIVRD err:000 text:x"))
	f.Add([]byte("stat:x id:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReceipt(Deliver{ESMClass: 4, Payload: b})
		if err == nil && (r.MessageID == "" || len(r.MessageID) > 65) {
			t.Fatalf("accepted id %q", r.MessageID)
		}
	})
}
