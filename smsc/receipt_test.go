package smsc

import (
	"slices"
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

func TestMessageIDMatching(t *testing.T) {
	// stored: what the outbox keeps from submit_sm_resp; receipt: what the
	// receipt says. Every pair must match.
	tests := []struct{ stored, receipt string }{
		{"0A1B2C", "0a1b2c"},
		{"0A1B2C", "662316"}, // hex in resp, decimal in receipt
		{"662316", "A1B2C"},  // decimal in resp, hex in receipt
		{"000123", "123"},
		{"123", "0000123"},
		{"7B", "123"},
		{"123", "7b"},
		{"291", "123"}, // resp decimal 291, receipt hex "123" with no letters
		{"0", "0000"},
		{"msg-XYZ", "MSG-xyz"},
		{"ffffffffffffffffffff", "1208925819614629174706175"}, // beyond 64 bits
	}
	for _, tt := range tests {
		stored := NormalizeMessageID(tt.stored)
		if !slices.Contains(MessageIDCandidates(tt.receipt), stored) {
			t.Errorf("receipt %q candidates %v miss stored %q", tt.receipt, MessageIDCandidates(tt.receipt), stored)
		}
	}
	if c := MessageIDCandidates("7b"); c[0] != "7b" || len(c) != 2 {
		t.Fatalf("candidates %v: the id itself first", c)
	}
	if c := MessageIDCandidates("msg-1"); len(c) != 1 {
		t.Fatalf("non-numeric id has candidates %v", c)
	}
	if c := MessageIDCandidates("  "); c != nil {
		t.Fatalf("blank id has candidates %v", c)
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
		MessageIDCandidates(string(b))
	})
}
