package verify_test

import (
	"context"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
	"github.com/phonebook/phonebook/verify"
)

// outbox records the texts handed to it, as the SMS outbox would take them.
type outbox struct {
	mu   sync.Mutex
	sent map[phonebook.MSISDN][]string
}

func (o *outbox) SendSMS(_ context.Context, to phonebook.MSISDN, text string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sent == nil {
		o.sent = map[phonebook.MSISDN][]string{}
	}
	o.sent[to] = append(o.sent[to], text)
	return nil
}

var codeRE = regexp.MustCompile(`\d{6}`)

func (o *outbox) lastCode(t *testing.T, to phonebook.MSISDN) string {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	texts := o.sent[to]
	if len(texts) == 0 {
		t.Fatalf("no SMS to %s", to)
	}
	return codeRE.FindString(texts[len(texts)-1])
}

func newService(t *testing.T, db *store.DB, cfg verify.Config) (*verify.Service, *outbox, *accounts.Service) {
	t.Helper()
	acc := accounts.New(db, accounts.Config{}, nil, nil)
	ob := &outbox{}
	v, err := verify.New(context.Background(), db, acc, ob, cfg, "CN", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v, ob, acc
}

var id1 = phonebook.Identity{DeviceID: "imei-1", SIMID: "sim-1"}

func TestSMSCode(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		v, ob, acc := newService(t, db, verify.Config{Template: "您的验证码是 {code}", ResendWaits: []time.Duration{time.Hour}})
		st, err := v.StartSMS(ctx, "138 0013 8000", id1, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if st.Number != "+8613800138000" || st.ChecksLeft != 5 || !st.NextResendAt.After(time.Now()) {
			t.Fatalf("start = %+v", st)
		}
		code := ob.lastCode(t, st.Number)
		if got := ob.sent[st.Number][0]; got != "您的验证码是 "+code {
			t.Fatalf("template not applied: %q", got)
		}
		t.Run("resend too early is refused with the next allowed time", func(t *testing.T) {
			_, err := v.StartSMS(ctx, "+8613800138000", id1, "127.0.0.1")
			var pe *phonebook.Error
			if phonebook.ErrorCode(err) != phonebook.ERateLimited || !asErr(err, &pe) || pe.RetryAfter.IsZero() {
				t.Fatalf("resend: %v", err)
			}
		})
		t.Run("wrong identity fails, and spends nothing of the code", func(t *testing.T) {
			for range 10 {
				_, err := v.CheckSMS(ctx, "+8613800138000", phonebook.Identity{DeviceID: "other", SIMID: "sim-1"}, code)
				if phonebook.ErrorCode(err) != phonebook.ENotFound {
					t.Fatalf("got %v", err)
				}
			}
		})
		t.Run("another identity's start leaves the code working", func(t *testing.T) {
			if _, err := v.StartSMS(ctx, "+8613800138000", phonebook.Identity{DeviceID: "other", SIMID: "sim-1"}, "127.0.0.1"); err != nil {
				t.Fatal(err)
			}
		})
		t.Run("right code proves the number once", func(t *testing.T) {
			creds, err := v.CheckSMS(ctx, "+8613800138000", id1, code)
			if err != nil || creds.DeviceKey == "" || !creds.Created {
				t.Fatalf("check: %+v %v", creds, err)
			}
			if _, err := acc.Login(ctx, accounts.LoginRequest{Number: "+8613800138000", Identity: id1, DeviceKey: creds.DeviceKey}); err != nil {
				t.Fatalf("login with new key: %v", err)
			}
			if _, err := v.CheckSMS(ctx, "+8613800138000", id1, code); phonebook.ErrorCode(err) != phonebook.ENotFound {
				t.Fatalf("reused code: %v", err)
			}
		})
	})
}

func asErr(err error, target **phonebook.Error) bool {
	e, ok := err.(*phonebook.Error)
	if ok {
		*target = e
	}
	return ok
}

func TestSixthCheckFailsEvenWithTheRightCode(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	v, ob, _ := newService(t, db, verify.Config{})
	st, err := v.StartSMS(ctx, "+8613800138000", id1, "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	code := ob.lastCode(t, st.Number)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	for i := 0; i < 5; i++ {
		if _, err := v.CheckSMS(ctx, "+8613800138000", id1, wrong); phonebook.ErrorCode(err) != phonebook.ECredentials {
			t.Fatalf("check %d: %v", i+1, err)
		}
	}
	if _, err := v.CheckSMS(ctx, "+8613800138000", id1, code); phonebook.ErrorCode(err) != phonebook.ERateLimited {
		t.Fatalf("6th check with the right code: %v", err)
	}
}

func TestExpiredCode(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	v, ob, _ := newService(t, db, verify.Config{CodeTTL: time.Millisecond})
	st, _ := v.StartSMS(ctx, "+8613800138000", id1, "10.0.0.1")
	code := ob.lastCode(t, st.Number)
	time.Sleep(5 * time.Millisecond)
	if _, err := v.CheckSMS(ctx, "+8613800138000", id1, code); phonebook.ErrorCode(err) != phonebook.EExpired {
		t.Fatalf("expired code: %v", err)
	}
}

func TestLimitsAndCountryLists(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	v, _, _ := newService(t, db, verify.Config{AllowCountries: []string{"cn", "us"}, DenyCountries: []string{"US"},
		MaxPerIPHour: 3, ResendWaits: []time.Duration{time.Nanosecond}})
	if _, err := v.StartSMS(ctx, "+12025550143", id1, "10.0.0.2"); phonebook.ErrorCode(err) != phonebook.ENumberNotAllowed {
		t.Fatalf("denied country: %v", err)
	}
	if _, err := v.StartSMS(ctx, "+447911123456", id1, "10.0.0.2"); phonebook.ErrorCode(err) != phonebook.ENumberNotAllowed {
		t.Fatalf("country outside allow list: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := v.StartSMS(ctx, "+8613800138000", id1, "10.0.0.3"); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
	if _, err := v.StartSMS(ctx, "+8613800138001", id1, "10.0.0.3"); phonebook.ErrorCode(err) != phonebook.ERateLimited {
		t.Fatalf("4th start from one IP: %v", err)
	}
	if _, err := v.CheckSMS(ctx, "+8613800138000", id1, "12ab56"); phonebook.ErrorCode(err) != phonebook.EInvalid {
		t.Fatalf("malformed code: %v", err)
	}
}

func TestMOToken(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		v, _, acc := newService(t, db, verify.Config{ShortNumber: "10690"})
		st, err := v.StartMO(ctx, id1, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^PB [2-9A-Z]{6}$`).MatchString(st.Token) || st.ShortNumber != "10690" {
			t.Fatalf("start = %+v", st)
		}
		if r, err := v.Poll(ctx, st.ID, st.PollSecret, 0); err != nil || r.State != "pending" {
			t.Fatalf("poll before MO: %+v %v", r, err)
		}
		if _, err := v.Poll(ctx, st.ID, "wrong", 0); phonebook.ErrorCode(err) != phonebook.EUnauthorized {
			t.Fatalf("wrong poll secret: %v", err)
		}
		// Case and spacing do not matter; the number comes from the SMS.
		mangled := "  pb-" + st.Token[3:6] + " " + lower(st.Token[6:]) + " thanks"
		handled, err := v.HandleMO(ctx, "+8613800138000", "10690", mangled)
		if err != nil || !handled {
			t.Fatalf("MO: %v %v", handled, err)
		}
		// A long poll started now returns at once with the credentials.
		r, err := v.Poll(ctx, st.ID, st.PollSecret, 10*time.Second)
		if err != nil || r.State != "proven" || r.Number != "+8613800138000" || r.DeviceKey == "" {
			t.Fatalf("poll after MO: %+v %v", r, err)
		}
		if _, err := acc.Login(ctx, accounts.LoginRequest{Number: "+8613800138000", Identity: id1, DeviceKey: r.DeviceKey}); err != nil {
			t.Fatalf("login: %v", err)
		}
		if _, err := v.Poll(ctx, st.ID, st.PollSecret, 0); phonebook.ErrorCode(err) != phonebook.EExpired {
			t.Fatalf("second claim: %v", err)
		}
		// The token is single-use: a replayed MO proves nothing.
		if handled, err := v.HandleMO(ctx, "+8613900139000", "10690", st.Token); err != nil || !handled {
			t.Fatalf("replayed MO: %v %v", handled, err)
		}
		if ok, _ := db.UserExists(ctx, "+8613900139000"); ok {
			t.Fatal("replayed token registered another number")
		}
		// Unknown MO is not a token and not an error.
		if handled, err := v.HandleMO(ctx, "+8613900139000", "10690", "hello there"); err != nil || handled {
			t.Fatalf("unknown MO: %v %v", handled, err)
		}
	})
}

func TestMOTokenExpires(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	v, _, _ := newService(t, db, verify.Config{ShortNumber: "10690", TokenTTL: time.Millisecond})
	st, err := v.StartMO(ctx, id1, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	v.HandleMO(ctx, "+8613800138000", "10690", st.Token)
	if _, err := v.Poll(ctx, st.ID, st.PollSecret, 0); phonebook.ErrorCode(err) != phonebook.EExpired {
		t.Fatalf("expired token: %v", err)
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// A configured secret key is the HMAC key: two services with the same key
// accept each other's codes, with different keys they do not.
func TestConfiguredSecretKey(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	acc := accounts.New(db, accounts.Config{}, nil, nil)
	ob := &outbox{}
	a, err := verify.New(ctx, db, acc, ob, verify.Config{SecretKey: "0123456789abcdef-one"}, "CN", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.New(ctx, db, acc, ob, verify.Config{SecretKey: "short"}, "CN", nil, nil); err == nil {
		t.Fatal("a short secret key was accepted")
	}
	other, _ := verify.New(ctx, db, acc, ob, verify.Config{SecretKey: "0123456789abcdef-two"}, "CN", nil, nil)
	same, _ := verify.New(ctx, db, acc, ob, verify.Config{SecretKey: "0123456789abcdef-one"}, "CN", nil, nil)
	if _, err := a.StartSMS(ctx, "+8613800138000", id1, "10.0.0.9"); err != nil {
		t.Fatal(err)
	}
	code := ob.lastCode(t, "+8613800138000")
	if _, err := other.CheckSMS(ctx, "+8613800138000", id1, code); phonebook.ErrorCode(err) != phonebook.ECredentials {
		t.Fatalf("another key accepted the code: %v", err)
	}
	if _, err := same.CheckSMS(ctx, "+8613800138000", id1, code); err != nil {
		t.Fatalf("the same key refused the code: %v", err)
	}
}
