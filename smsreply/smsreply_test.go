package smsreply

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func TestNormalizeKeyword(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"TD", "TD"}, {"td", "TD"}, {" t d ", "TD"}, {"ＴＤ", "TD"}, {"ｔｄ。", "TD"}, {"Stop!", "STOP"},
		{"退订", "退订"}, {"退　订", "退订"}, {"UnSubscribe.", "UNSUBSCRIBE"}, {"START\n", "START"},
		{"TD please", "TDPLEASE"}, {"", ""}, {"👍", "👍"},
	} {
		if got := NormalizeKeyword(c.in); got != c.want {
			t.Errorf("NormalizeKeyword(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	good := Config{Mode: ModeExtension, ShortNumber: "10690", ExtensionDigits: 4, ExtensionIdle: 1, StickyRule: RuleAsk,
		OptOutKeywords: []string{"TD"}, OptInKeywords: []string{"START"}}
	if _, err := New(good, nil, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"mode":         func(c *Config) { c.Mode = "both" },
		"digits":       func(c *Config) { c.ExtensionDigits = 9 },
		"rule":         func(c *Config) { c.StickyRule = "first" },
		"short number": func(c *Config) { c.ShortNumber = "PHONEBOOK" },
		"too long":     func(c *Config) { c.ShortNumber = "1069012345678901234" },
		"same keyword": func(c *Config) { c.OptInKeywords = []string{"ｔｄ"} },
	} {
		c := good
		mod(&c)
		if _, err := New(c, nil, nil, nil, nil); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
	}
}

// recorder is an Outbox and a Relay that keep what they are given.
type recorder struct {
	mu      sync.Mutex
	sms     []smsc.SMS
	replies []string
}

func (r *recorder) Enqueue(_ context.Context, s smsc.SMS) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sms = append(r.sms, s)
	return int64(len(r.sms)), nil
}

func (r *recorder) Check(smsc.SMS) error { return nil }

func (r *recorder) InjectSMS(_ context.Context, from, to phonebook.MSISDN, text string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replies = append(r.replies, string(from)+">"+string(to)+":"+text)
	return "id", nil
}

func (r *recorder) last() smsc.SMS {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sms[len(r.sms)-1]
}

func newService(t *testing.T, cfg Config) (*Service, *recorder, *store.DB) {
	t.Helper()
	db := storetest.SQLite(t)
	rec := &recorder{}
	s, err := New(cfg, db, rec, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.SetRelay(rec)
	return s, rec, db
}

const bob = phonebook.MSISDN("+8613700137000")

func sender(i int) phonebook.MSISDN { return phonebook.MSISDN(fmt.Sprintf("+86136%08d", i)) }

// With every code of a recipient live, the SMS still goes, from the bare
// short number, and is counted; a reply to the bare number then reaches
// the last sender.
func TestExtensionsExhaustedSendsFromShortNumber(t *testing.T) {
	s, rec, _ := newService(t, Config{Mode: ModeExtension, ExtensionDigits: 1, ExtensionIdle: time.Hour})
	ctx := context.Background()
	seen := map[string]bool{}
	for i := range 10 {
		if err := s.SendFallback(ctx, fmt.Sprint("m", i), sender(i), bob, "hi"); err != nil {
			t.Fatal(err)
		}
		src := rec.last().From
		if len(src) != len("10690")+1 || seen[src] {
			t.Fatalf("sender %d: source %q (seen %v)", i, src, seen)
		}
		seen[src] = true
	}
	if err := s.SendFallback(ctx, "m10", sender(10), bob, "hi"); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got.From != "10690" || got.Ref != "m10" || got.Kind != "fallback" {
		t.Fatalf("11th SMS: %+v, want it from the bare short number", got)
	}
	if n := testutil.ToFloat64(s.noCode); n != 1 {
		t.Fatalf("exhaustion counted %v times", n)
	}
	if err := s.MOHandler(nil)(ctx, smsc.MO{From: bob, To: "10690", Text: "who?"}); err != nil {
		t.Fatal(err)
	}
	if len(rec.replies) != 1 || rec.replies[0] != string(bob)+">"+string(sender(10))+":who?" {
		t.Fatalf("replies %v", rec.replies)
	}
}

// START to a conversation's extension lifts that sender's opt-out and the
// one from everyone; other senders' opt-outs stay.
func TestOptInAtExtension(t *testing.T) {
	s, rec, db := newService(t, Config{Mode: ModeExtension})
	ctx := context.Background()
	for i := range 3 {
		if err := s.SendFallback(ctx, "m", sender(i), bob, "hi"); err != nil {
			t.Fatal(err)
		}
	}
	alice := rec.sms[0].From
	h := s.MOHandler(nil)
	for _, mo := range []smsc.MO{{From: bob, To: "10690", Text: "退订"}, {From: bob, To: alice, Text: "td"}, {From: bob, To: rec.sms[1].From, Text: "Stop"}} {
		if err := h(ctx, mo); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SendFallback(ctx, "m", sender(2), bob, "hi"); phonebook.ErrorCode(err) != phonebook.EOptedOut {
		t.Fatalf("sender 2 while opted out from everyone: %v", err)
	}
	if err := h(ctx, smsc.MO{From: bob, To: alice, Text: "ＳＴＡＲＴ"}); err != nil {
		t.Fatal(err)
	}
	if c := rec.last(); c.To != bob || c.From != alice || !strings.Contains(c.Text, string(sender(0))) {
		t.Fatalf("confirmation %+v", c)
	}
	for i, want := range []phonebook.Code{"", phonebook.EOptedOut, ""} {
		if err := s.SendFallback(ctx, "m", sender(i), bob, "hi"); phonebook.ErrorCode(err) != want {
			t.Fatalf("sender %d after START at sender 0's extension: %v, want %q", i, err, want)
		}
	}
	if l, _ := db.SMSOptOuts(ctx, bob, 10); len(l) != 1 || l[0].Sender != sender(1) {
		t.Fatalf("opt-outs left: %+v", l)
	}
}

// Normalising is idempotent and never panics, whatever the bytes.
func FuzzNormalizeKeyword(f *testing.F) {
	for _, s := range []string{"TD", "ｔｄ。", "退 订", "\xff\xfe", "👍"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := NormalizeKeyword(s)
		if NormalizeKeyword(n) != n {
			t.Fatalf("NormalizeKeyword(%q) = %q, then %q", s, n, NormalizeKeyword(n))
		}
	})
}

// RouteReply routes a message that cannot be answered with a question (an
// MMS) as SMS replies are routed: by extension, by a leading number, to
// the most recent writer even under the ask rule; nothing for strangers.
func TestRouteReply(t *testing.T) {
	ctx := context.Background()
	t.Run("extension", func(t *testing.T) {
		s, rec, _ := newService(t, Config{Mode: ModeExtension})
		for i := range 2 {
			if err := s.SendFallback(ctx, "m", sender(i), bob, "hi"); err != nil {
				t.Fatal(err)
			}
		}
		src := rec.last().From // sender(1)'s conversation
		if to, rest, ok, err := s.RouteReply(ctx, bob, src, "photo"); err != nil || !ok || to != sender(1) || rest != "photo" {
			t.Fatalf("by extension: %s %q %v %v", to, rest, ok, err)
		}
		if _, _, ok, err := s.RouteReply(ctx, bob, "106909999", "x"); err != nil || ok {
			t.Fatalf("unknown extension: %v %v", ok, err)
		}
		if _, _, ok, err := s.RouteReply(ctx, bob, "95555", "x"); err != nil || ok {
			t.Fatalf("another short number: %v %v", ok, err)
		}
	})
	t.Run("sticky ask", func(t *testing.T) {
		s, _, _ := newService(t, Config{Mode: ModeSticky, StickyRule: RuleAsk})
		for i := range 2 {
			if err := s.SendFallback(ctx, "m", sender(i), bob, "hi"); err != nil {
				t.Fatal(err)
			}
		}
		if to, _, ok, err := s.RouteReply(ctx, bob, "10690", "look"); err != nil || !ok || (to != sender(1) && to != sender(0)) {
			t.Fatalf("most recent: %s %v %v", to, ok, err)
		}
		if to, rest, ok, err := s.RouteReply(ctx, bob, "10690", string(sender(0))+" for you"); err != nil || !ok || to != sender(0) || rest != "for you" {
			t.Fatalf("addressed: %s %q %v %v", to, rest, ok, err)
		}
		if _, _, ok, err := s.RouteReply(ctx, "+8613900000000", "10690", "hello?"); err != nil || ok {
			t.Fatalf("nobody wrote to this number: %v %v", ok, err)
		}
	})
}
