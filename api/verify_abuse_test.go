package api_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
	"github.com/phonebook/phonebook/verify"
)

// smsBox keeps the texts the verification service sends.
type smsBox struct {
	mu   sync.Mutex
	sent map[phonebook.MSISDN][]string
}

func (b *smsBox) SendSMS(_ context.Context, to phonebook.MSISDN, text string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sent == nil {
		b.sent = map[phonebook.MSISDN][]string{}
	}
	b.sent[to] = append(b.sent[to], text)
	return nil
}

func (b *smsBox) first(to phonebook.MSISDN) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.sent[to]) == 0 {
		return ""
	}
	return regexp.MustCompile(`\d{6}`).FindString(b.sent[to][0])
}

func newVerifyEnv(t *testing.T, db *store.DB, cfg verify.Config) (*env, *verify.Service, *smsBox) {
	t.Helper()
	reg := prometheus.NewRegistry()
	acc := accounts.New(db, accounts.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, nil, reg)
	box := &smsBox{}
	v, err := verify.New(context.Background(), db, acc, box, cfg, "CN", nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	a := api.New(api.Config{}, acc, db, nil, reg, nil)
	a.SetVerify(v)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, db: db, acc: acc, api: a}, v, box
}

// While the victim waits for its code, an attacker starts verification of
// the victim's number from 50 other phones at once and sends 200 checks,
// the victim's right code among them, from its own identity. None of it
// replaces or spends the victim's code: it still works afterwards. The
// starts stop at the per-number daily cap (the SMS-pumping guard).
func TestVerificationHijackInParallel(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e, _, box := newVerifyEnv(t, db, verify.Config{MaxPerIPHour: 10000})
		const number = "+8613800138000"
		victim := map[string]string{"number": number, "device_id": "imei-victim", "sim_id": "sim-victim"}
		if r := e.do("POST", "/v1/verify/sms/start", js(victim), nil); r.Status != 202 {
			t.Fatalf("victim's start: %d %v", r.Status, r.Body)
		}
		code := box.first(number)
		var starts, checks tally
		parallel(250, func(i int) {
			if i < 50 {
				r, err := e.post(nil, "/v1/verify/sms/start", js(map[string]string{"number": number,
					"device_id": fmt.Sprintf("imei-attacker-%d", i), "sim_id": "sim-attacker"}), nil)
				if err == nil {
					starts.add(r)
				}
				return
			}
			guess := fmt.Sprintf("%06d", i)
			if i%10 == 0 {
				guess = code // the right code, from the wrong phone
			}
			r, err := e.post(nil, "/v1/verify/sms/check", js(map[string]string{"number": number,
				"device_id": "imei-attacker-1", "sim_id": "sim-attacker", "code": guess}), nil)
			if err == nil {
				checks.add(r)
			}
		})
		t.Logf("attacker's starts %v, checks %v", starts.n, checks.n)
		if starts.get("202 ")+starts.get("429 rate_limited") != 50 || starts.get("202 ") > 9 {
			t.Fatalf("attacker's starts %v: want at most 9 (10 codes a day to the number, the victim's included)", starts.n)
		}
		if checks.get("200 ") != 0 {
			t.Fatalf("an attacker's check proved the number: %v", checks.n)
		}
		victim["code"] = code
		r := e.do("POST", "/v1/verify/sms/check", js(victim), nil)
		if r.Status != 200 || r.str("device_key") == "" {
			t.Fatalf("the victim's code after the attack: %d %v", r.Status, r.Body)
		}
		u, err := db.User(t.Context(), number)
		if err != nil || u.DeviceID != "imei-victim" {
			t.Fatalf("user after the attack: %+v %v", u, err)
		}
	})
}

// Method C polling under attack: 300 long polls at once, each for its own
// verification, are bounded by verify.max_pollers (the rest get
// rate_limited at once); ten polls of one verification at once hold one
// place; a proof that fails (the account is blocked) does not use up the
// token, so the user polls again once it is unblocked instead of starting
// over; and of 20 parallel polls after the MO exactly one gets the
// credentials.
func TestMOPollsBounded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		const pollers = 20
		e, v, _ := newVerifyEnv(t, db, verify.Config{ShortNumber: "10690", MaxTokensPerIPHour: 10000, MaxPollers: pollers})
		start := func(dev string) (id, secret, token string) {
			r := e.do("POST", "/v1/verify/mo/start", js(map[string]string{"device_id": dev, "sim_id": "sim-" + dev}), nil)
			if r.Status != 201 {
				t.Fatalf("mo start: %d %v", r.Status, r.Body)
			}
			return r.str("id"), r.str("poll_secret"), r.str("token")
		}
		type tok struct{ id, secret string }
		toks := make([]tok, 300)
		for i := range toks {
			toks[i].id, toks[i].secret, _ = start(fmt.Sprintf("imei-%d", i))
		}
		// Every poll asks to wait 30 s, so no place frees up while the burst
		// lasts, however slowly the machine schedules it: exactly MaxPollers
		// polls hold a place and every other one is answered rate_limited at
		// once. Then the holders hang up, which frees their places.
		holdAll := func(n int, tokOf func(i int) tok) (limited *tally, held func() int, release func()) {
			ctx, cancel := context.WithCancel(t.Context())
			limited = &tally{}
			var mu sync.Mutex
			answered := 0
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tk := tokOf(i)
					r, err := e.postCtx(ctx, "/v1/verify/mo/poll", js(map[string]any{"id": tk.id, "poll_secret": tk.secret, "wait_seconds": 30}))
					if err != nil {
						return // a holder that hung up
					}
					if r.code() == "rate_limited" && r.Header.Get("Retry-After") == "" {
						t.Errorf("rate_limited without Retry-After")
					}
					limited.add(r)
					mu.Lock()
					answered++
					mu.Unlock()
				}()
			}
			return limited, func() int { mu.Lock(); defer mu.Unlock(); return answered }, func() { cancel(); wg.Wait() }
		}
		polls, answered, release := holdAll(len(toks), func(i int) tok { return toks[i] })
		poll.Until(t, "the 280 polls without a place to be answered", func() bool { return answered() >= len(toks)-pollers })
		if polls.get("429 rate_limited") != len(toks)-pollers || answered() != len(toks)-pollers {
			t.Fatalf("300 polls with %d places: %v answered at once; want %d rate_limited and the rest waiting", pollers, polls.n, len(toks)-pollers)
		}
		release()
		t.Logf("300 polls: %v answered at once, %d waited", polls.n, pollers)

		id, secret, token := start("imei-owner")
		same, sameAnswered, releaseSame := holdAll(10, func(int) tok { return tok{id, secret} })
		poll.Until(t, "9 of 10 polls of one verification to be answered", func() bool { return sameAnswered() >= 9 })
		if same.get("429 rate_limited") != 9 || sameAnswered() != 9 {
			t.Fatalf("10 simultaneous polls of one verification: %v answered at once; want 9 rate_limited, one waiting", same.n)
		}
		releaseSame()
		// The places are free again once the server sees the hang-up: a poll
		// of its own is answered.
		poll.Until(t, "a poll to be answered after the holders hung up", func() bool {
			r, err := e.post(nil, "/v1/verify/mo/poll", js(map[string]any{"id": id, "poll_secret": secret, "wait_seconds": 0}), nil)
			return err == nil && r.Status == 200
		})

		// The number is taken, and blocked: the proof fails.
		const number = "+8613800138000"
		e.register(number, "imei-old", "sim-old")
		if err := db.SetValid(t.Context(), number, false); err != nil {
			t.Fatal(err)
		}
		if handled, err := v.HandleMO(t.Context(), number, "10690", token); err != nil || !handled {
			t.Fatalf("MO: %v %v", handled, err)
		}
		if r := e.do("POST", "/v1/verify/mo/poll", js(map[string]any{"id": id, "poll_secret": secret}), nil); r.code() != "account_blocked" {
			t.Fatalf("poll of a blocked number: %d %v", r.Status, r.Body)
		}
		if err := db.SetValid(t.Context(), number, true); err != nil {
			t.Fatal(err)
		}
		var after tally
		var creds sync.Map
		parallel(20, func(i int) {
			r, err := e.post(nil, "/v1/verify/mo/poll", js(map[string]any{"id": id, "poll_secret": secret}), nil)
			if err == nil {
				after.add(r)
				if r.str("device_key") != "" {
					creds.Store(i, r.str("device_key"))
				}
			}
		})
		n := 0
		creds.Range(func(any, any) bool { n++; return true })
		t.Logf("20 polls after the MO: %v", after.n)
		if n > 1 {
			t.Fatalf("%d polls got credentials", n)
		}
		if n == 0 {
			// Every poll met another one waiting or the claim: one more gets them.
			r := e.do("POST", "/v1/verify/mo/poll", js(map[string]any{"id": id, "poll_secret": secret}), nil)
			if r.str("device_key") == "" {
				t.Fatalf("no poll ever got the credentials: %v, then %d %v", after.n, r.Status, r.Body)
			}
		}
	})
}
