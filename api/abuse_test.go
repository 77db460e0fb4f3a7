package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// post is a goroutine-safe request through client (nil: a fresh one).
func (e *env) post(client *http.Client, path, body string, hdr map[string]string) (resp, error) {
	return e.postWith(context.Background(), client, path, body, hdr)
}

// postCtx is post with a context: cancelling it hangs up.
func (e *env) postCtx(ctx context.Context, path, body string) (resp, error) {
	return e.postWith(ctx, nil, path, body, nil)
}

func (e *env) postWith(ctx context.Context, client *http.Client, path, body string, hdr map[string]string) (resp, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, "POST", e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return resp{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return resp{}, fmt.Errorf("response is not JSON: %q", b)
	}
	return resp{Status: res.StatusCode, Body: m, Header: res.Header}, nil
}

// serveFrom runs one request through the handler as if it came from addr
// (no socket can come from 500 addresses of one IPv6 /64 on a test host).
func (e *env) serveFrom(addr, path, body string) resp {
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.RemoteAddr = addr
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	e.api.ServeHTTP(w, req)
	var m map[string]any
	json.Unmarshal(w.Body.Bytes(), &m)
	return resp{Status: w.Code, Body: m, Header: w.Header()}
}

// tally counts answers by status and code.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tally) add(r resp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	t.n[fmt.Sprintf("%d %s", r.Status, r.code())]++
}

func (t *tally) get(k string) int { t.mu.Lock(); defer t.mu.Unlock(); return t.n[k] }

// parallel runs fn(i) for i in [0, n) on n goroutines started together.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	close(start)
	wg.Wait()
}

// secureOwner registers number on imei-1/sim-1 with a rescue password and
// secure login mode on; it returns the device key.
func (e *env) secureOwner(number, password string) string {
	e.t.Helper()
	key := e.register(number, "imei-1", "sim-1")
	tok := e.login(number, "imei-1", "sim-1", key, "").str("token")
	if r := e.do("PUT", "/v1/me/rescue", js(map[string]any{"password": password, "secure_mode": true}), auth(tok)); r.Status != 200 {
		e.t.Fatalf("set rescue: %d %v", r.Status, r.Body)
	}
	return key
}

// 200 wrong rescue passwords at once, from another phone: no more are
// hashed than the daily limit, never more than the hash slots at once, each
// attempt is refused with invalid_credentials or rate_limited (with
// Retry-After), and afterwards the owner still logs in from the registered
// phone with its device key and the right password: its guesses have their
// own budget.
func TestRescueGuessesInParallel(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		const limit, attackers = 10, 200
		e := newEnvAPI(t, db, accounts.Config{RescueFailuresPerDay: limit, RescueHashSlots: 2, RescueHashQueue: 8},
			api.Config{MaxRescueFailuresPerAddressDay: 1000})
		key := e.secureOwner("+8613800138000", "correct horse")
		before, _ := e.acc.HashStats()
		var answers tally
		var failed atomic.Int64
		parallel(attackers, func(i int) {
			r, err := e.post(nil, "/v1/login/rescue", js(map[string]string{"number": "+8613800138000",
				"device_id": "imei-x", "sim_id": "sim-x", "rescue_password": fmt.Sprintf("guess %d", i)}), nil)
			if err != nil {
				failed.Add(1)
				return
			}
			answers.add(r)
			if r.code() == "rate_limited" && r.Header.Get("Retry-After") == "" {
				failed.Add(1)
			}
		})
		if failed.Load() > 0 {
			t.Fatalf("%d attempts failed or were refused without Retry-After", failed.Load())
		}
		after, peak := e.acc.HashStats()
		checked := int(after - before)
		t.Logf("answers %v; %d hashed, at most %d at once", answers.n, checked, peak)
		if checked > limit {
			t.Fatalf("%d rescue passwords hashed; the limit is %d a day", checked, limit)
		}
		if peak > 2 {
			t.Fatalf("%d hashes ran at once with 2 slots", peak)
		}
		if got := answers.get("401 invalid_credentials") + answers.get("429 rate_limited"); got != attackers {
			t.Fatalf("answers %v: want only invalid_credentials and rate_limited", answers.n)
		}
		if answers.get("401 invalid_credentials") > limit {
			t.Fatalf("%d guesses were answered as checked; the limit is %d", answers.get("401 invalid_credentials"), limit)
		}
		// The thief is locked out for the day, even with the right password...
		r := e.do("POST", "/v1/login/rescue", js(map[string]string{"number": "+8613800138000",
			"device_id": "imei-x", "sim_id": "sim-x", "rescue_password": "correct horse"}), nil)
		if r.code() != "rate_limited" {
			t.Fatalf("rescue after the attack: %d %v", r.Status, r.Body)
		}
		// ...the owner is not.
		if r := e.login("+8613800138000", "imei-1", "sim-1", key, "correct horse"); r.Status != 200 || r.str("token") == "" {
			t.Fatalf("owner's secure login after the attack: %d %v", r.Status, r.Body)
		}
		// The owner's own budget is limited too.
		for i := 0; i < limit; i++ {
			e.login("+8613800138000", "imei-1", "sim-1", key, "owner typo")
		}
		if r := e.login("+8613800138000", "imei-1", "sim-1", key, "correct horse"); r.code() != "rate_limited" {
			t.Fatalf("owner after %d wrong passwords: %d %v", limit, r.Status, r.Body)
		}
	})
}

// With a daily limit high enough to let every guess through, 200 guesses at
// once still run at most the hash slots' argon2id at a time; those that
// find the queue full are refused with rate_limited and Retry-After; the
// heap stays far below what 200 hashes at once would take (200 x 19 MiB).
func TestRescueHashesBounded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		const attackers = 200
		e := newEnvAPI(t, db, accounts.Config{RescueFailuresPerDay: 10000, RescueHashSlots: 2, RescueHashQueue: 4},
			api.Config{MaxRescueFailuresPerAddressDay: 10000})
		e.secureOwner("+8613800138000", "correct horse")
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		var peakHeap atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peakHeap.Load() {
					peakHeap.Store(ms.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
		var answers tally
		parallel(attackers, func(i int) {
			r, err := e.post(nil, "/v1/login/rescue", js(map[string]string{"number": "+8613800138000",
				"device_id": "imei-x", "sim_id": "sim-x", "rescue_password": fmt.Sprintf("guess %d", i)}), nil)
			if err != nil {
				t.Error(err)
				return
			}
			answers.add(r)
			if r.code() == "rate_limited" && r.Header.Get("Retry-After") == "" {
				t.Errorf("rate_limited without Retry-After: %v", r.Body)
			}
		})
		close(stop)
		<-sampled
		checked, peak := e.acc.HashStats()
		grew := int64(peakHeap.Load()) - int64(base)
		t.Logf("answers %v; %d hashed, at most %d at once; heap grew by %d MiB at most", answers.n, checked, peak, grew>>20)
		if peak > 2 {
			t.Fatalf("%d hashes ran at once with 2 slots", peak)
		}
		if answers.get("429 rate_limited") == 0 {
			t.Fatalf("no guess was refused for a full queue: %v", answers.n)
		}
		if answers.get("401 invalid_credentials")+answers.get("429 rate_limited") != attackers {
			t.Fatalf("answers %v", answers.n)
		}
		if grew > 1<<30 {
			t.Fatalf("heap grew by %d MiB during the attack", grew>>20)
		}
	})
}

// 1,000 logins for unknown numbers from one address: at most the
// per-address limit of failures get their answer (not_registered), the
// rest rate_limited (with Retry-After), so the limit also bounds how fast
// the endpoint tells registered numbers from unregistered ones.
func TestLoginEnumerationLimited(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		const limit, attempts = 100, 1000
		e := newEnvAPI(t, db, accounts.Config{}, api.Config{MaxLoginFailuresPerAddressHour: limit})
		key := e.register("+8613800138000", "imei-1", "sim-1")
		// A successful login is not a failure: it spends nothing.
		for range 3 {
			if r := e.login("+8613800138000", "imei-1", "sim-1", key, ""); r.Status != 200 {
				t.Fatalf("login: %d %v", r.Status, r.Body)
			}
		}
		var answers tally
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		var next atomic.Int64
		parallel(64, func(int) {
			for {
				i := next.Add(1)
				if i > attempts {
					return
				}
				r, err := e.post(client, "/v1/login", js(map[string]string{"number": fmt.Sprintf("+86139%08d", i),
					"device_id": "imei-1", "sim_id": "sim-1", "device_key": key}), nil)
				if err != nil {
					t.Error(err)
					return
				}
				answers.add(r)
			}
		})
		t.Logf("answers %v", answers.n)
		if n := answers.get("404 not_registered"); n > limit {
			t.Fatalf("%d unknown numbers were looked up; the limit is %d an hour", n, limit)
		}
		if answers.get("404 not_registered")+answers.get("429 rate_limited") != attempts {
			t.Fatalf("answers %v", answers.n)
		}
		// The address is now refused, whatever it asks.
		r := e.login("+8613800138000", "imei-1", "sim-1", key, "")
		if r.code() != "rate_limited" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("after the limit: %d %v", r.Status, r.Body)
		}
	})
}

// 500 addresses of one IPv6 /64 share one budget; another /64 has its own.
// And over real sockets, with limits.ipv4_prefix 24, 60 loopback addresses
// of 127.0.0.0/24 share one budget.
func TestAddressesOfOneNetworkShareABudget(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		const limit = 50
		e := newEnvAPI(t, db, accounts.Config{}, api.Config{MaxLoginFailuresPerAddressHour: limit,
			AddrPrefixes: phonebook.AddrPrefixes{V4: 24}})
		var answers tally
		parallel(500, func(i int) {
			r := e.serveFrom(fmt.Sprintf("[2001:db8:1:2:%x:%x::1]:4000", i/256, i%256), "/v1/login",
				js(map[string]string{"number": fmt.Sprintf("+86139%08d", i), "device_id": "imei-1", "sim_id": "sim-1", "device_key": "k"}))
			answers.add(r)
		})
		t.Logf("one /64: %v", answers.n)
		if n := answers.get("404 not_registered"); n > limit || answers.get("429 rate_limited") < 500-limit {
			t.Fatalf("500 addresses of one /64: %v; want at most %d looked up", answers.n, limit)
		}
		if r := e.serveFrom("[2001:db8:1:3::1]:4000", "/v1/login", js(map[string]string{"number": "+8613900000001",
			"device_id": "imei-1", "sim_id": "sim-1", "device_key": "k"})); r.code() != "not_registered" {
			t.Fatalf("another /64 was refused: %d %v", r.Status, r.Body)
		}

		var v4 tally
		parallel(60, func(i int) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+2))}}
			client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
			r, err := e.post(client, "/v1/login", js(map[string]string{"number": fmt.Sprintf("+86137%08d", i),
				"device_id": "imei-1", "sim_id": "sim-1", "device_key": "k"}), nil)
			if err != nil {
				t.Error(err)
				return
			}
			v4.add(r)
		})
		t.Logf("127.0.0.0/24: %v", v4.n)
		if n := v4.get("404 not_registered"); n > limit || v4.get("429 rate_limited") < 60-limit {
			t.Fatalf("60 addresses of one /24: %v; want at most %d looked up", v4.n, limit)
		}
	})
}

// Method D from the trusted gateway: the gateway's one address carries
// every subscriber, so it is not limited per address (far more
// registrations than max_registrations_per_ip_day go through); each number
// and each identity is limited per day instead.
func TestHeaderRegistrationBehindGateway(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnvAPI(t, db, accounts.Config{}, api.Config{MaxRegistrationsPerIP: 5, MaxHeaderPerNumberDay: 3, MaxHeaderPerIdentityDay: 3})
		reg := func(number, dev string) (resp, error) {
			return e.post(nil, "/v1/register/header", js(map[string]string{"device_id": dev, "sim_id": "sim-" + dev}),
				map[string]string{header: number})
		}
		var subscribers tally
		parallel(40, func(i int) {
			r, err := reg(fmt.Sprintf("+86138%08d", i), fmt.Sprintf("imei-%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			subscribers.add(r)
		})
		if subscribers.get("200 ") != 40 {
			t.Fatalf("40 subscribers behind one gateway: %v", subscribers.n)
		}
		var oneNumber, oneIdentity tally
		parallel(20, func(i int) {
			r, err := reg("+8613700000001", fmt.Sprintf("imei-n%d", i))
			if err == nil {
				oneNumber.add(r)
			}
			r, err = reg(fmt.Sprintf("+86136%08d", i), "imei-same")
			if err == nil {
				oneIdentity.add(r)
			}
		})
		if oneNumber.get("200 ") > 3 || oneNumber.get("429 rate_limited") < 17 {
			t.Fatalf("one number 20 times: %v; want at most 3", oneNumber.n)
		}
		if oneIdentity.get("200 ") > 3 || oneIdentity.get("429 rate_limited") < 17 {
			t.Fatalf("one identity 20 times: %v; want at most 3", oneIdentity.n)
		}
	})
}
