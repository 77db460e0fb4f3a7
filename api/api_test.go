package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

const header = "X-Up-Calling-Line-Id"

type env struct {
	t   *testing.T
	srv *httptest.Server
	db  *store.DB
	acc *accounts.Service
	api *api.Server
}

func newEnv(t *testing.T, db *store.DB, cfg accounts.Config) *env {
	t.Helper()
	return newEnvAPI(t, db, cfg, api.Config{MaxBodyBytes: 4096})
}

func newEnvAPI(t *testing.T, db *store.DB, cfg accounts.Config, apiCfg api.Config) *env {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.TrustedProxies == nil {
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	acc := accounts.New(db, cfg, nil, reg)
	a := api.New(apiCfg, acc, db, nil, reg, reg)
	a.AddCheck("database", db.Ping)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, db: db, acc: acc, api: a}
}

type resp struct {
	Status int
	Body   map[string]any
	Header http.Header
}

func (r resp) code() string {
	if e, ok := r.Body["error"].(map[string]any); ok {
		c, _ := e["code"].(string)
		return c
	}
	return ""
}

func (r resp) str(k string) string { s, _ := r.Body[k].(string); return s }

func (e *env) do(method, path, body string, hdr map[string]string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("%s %s: response is not JSON: %q", method, path, b)
	}
	return resp{Status: res.StatusCode, Body: m, Header: res.Header}
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

// register proves number by method D and returns the device key.
func (e *env) register(number, dev, sim string) string {
	e.t.Helper()
	r := e.do("POST", "/v1/register/header", js(map[string]string{"device_id": dev, "sim_id": sim}), map[string]string{header: number})
	if r.Status != 200 || r.str("device_key") == "" {
		e.t.Fatalf("register %s: %d %v", number, r.Status, r.Body)
	}
	return r.str("device_key")
}

func (e *env) login(number, dev, sim, key, rescue string) resp {
	e.t.Helper()
	body := map[string]string{"number": number, "device_id": dev, "sim_id": sim, "device_key": key}
	if rescue != "" {
		body["rescue_password"] = rescue
	}
	return e.do("POST", "/v1/login", js(body), nil)
}

func auth(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestLoginCases(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, accounts.Config{DefaultRegion: "CN", RescueFailuresPerDay: 3})
		key := e.register("+8613800138000", "imei-1", "sim-1")

		t.Run("new number is created once", func(t *testing.T) {
			u, err := db.User(t.Context(), "+8613800138000")
			if err != nil || u.DeviceID != "imei-1" || u.SIMID != "sim-1" || !u.Valid || u.ProvenBy != "header" {
				t.Fatalf("user record = %+v, %v", u, err)
			}
		})
		t.Run("same identity, national format", func(t *testing.T) {
			r := e.login("138 0013 8000", "imei-1", "sim-1", key, "")
			if r.Status != 200 || r.str("token") == "" || r.str("number") != "+8613800138000" {
				t.Fatalf("login: %d %v", r.Status, r.Body)
			}
			me := e.do("GET", "/v1/me", "", auth(r.str("token")))
			if me.Status != 200 || me.Body["login_count"].(float64) != 1 || me.Body["last_login"] == nil {
				t.Fatalf("me: %d %v", me.Status, me.Body)
			}
		})
		t.Run("wrong device key", func(t *testing.T) {
			r := e.login("+8613800138000", "imei-1", "sim-1", key+"x", "")
			if r.Status != 401 || r.code() != "invalid_credentials" {
				t.Fatalf("got %d %v", r.Status, r.Body)
			}
		})
		t.Run("new SIM", func(t *testing.T) {
			r := e.login("+8613800138000", "imei-1", "sim-2", key, "")
			if r.Status != 409 || r.code() != "identity_changed" {
				t.Fatalf("got %d %v", r.Status, r.Body)
			}
		})
		t.Run("new phone", func(t *testing.T) {
			r := e.login("+8613800138000", "imei-2", "sim-1", key, "")
			if r.Status != 409 || r.code() != "identity_changed" {
				t.Fatalf("got %d %v", r.Status, r.Body)
			}
		})
		t.Run("unknown number", func(t *testing.T) {
			r := e.login("+8613900139000", "imei-1", "sim-1", key, "")
			if r.Status != 404 || r.code() != "not_registered" {
				t.Fatalf("got %d %v", r.Status, r.Body)
			}
		})

		// Set a rescue password, then move to a new phone with it.
		tok := e.login("+8613800138000", "imei-1", "sim-1", key, "").str("token")
		if r := e.do("PUT", "/v1/me/rescue", `{"password":"correct horse"}`, auth(tok)); r.Status != 200 {
			t.Fatalf("set rescue: %d %v", r.Status, r.Body)
		}
		t.Run("wrong rescue password up to the limit", func(t *testing.T) {
			for i := 1; i <= 3; i++ {
				r := e.do("POST", "/v1/login/rescue", js(map[string]string{"number": "+8613800138000", "device_id": "imei-2", "sim_id": "sim-2", "rescue_password": "guess"}), nil)
				want, code := 401, "invalid_credentials"
				if i == 3 {
					want, code = 429, "rate_limited"
				}
				if r.Status != want || r.code() != code {
					t.Fatalf("attempt %d: got %d %v", i, r.Status, r.Body)
				}
			}
			// Even the right password is refused until the window ends.
			r := e.do("POST", "/v1/login/rescue", js(map[string]string{"number": "+8613800138000", "device_id": "imei-2", "sim_id": "sim-2", "rescue_password": "correct horse"}), nil)
			if r.Status != 429 || r.Header.Get("Retry-After") == "" || r.Body["error"].(map[string]any)["retry_after"] == nil {
				t.Fatalf("after limit: %d %v %v", r.Status, r.Body, r.Header)
			}
			db.ResetCounter(t.Context(), "rescue_fail:+8613800138000")
		})
		t.Run("rescue on a new phone replaces the identity and revokes old sessions", func(t *testing.T) {
			r := e.do("POST", "/v1/login/rescue", js(map[string]string{"number": "+8613800138000", "device_id": "imei-2", "sim_id": "sim-2", "rescue_password": "correct horse"}), nil)
			if r.Status != 200 || r.str("device_key") == "" || r.str("token") == "" {
				t.Fatalf("rescue: %d %v", r.Status, r.Body)
			}
			if old := e.do("GET", "/v1/me", "", auth(tok)); old.Status != 401 {
				t.Fatalf("old session still valid: %d", old.Status)
			}
			if l := e.login("+8613800138000", "imei-1", "sim-1", key, ""); l.code() != "invalid_credentials" {
				t.Fatalf("old phone can still log in: %v", l.Body)
			}
			key = r.str("device_key")
			if l := e.login("+8613800138000", "imei-2", "sim-2", key, ""); l.Status != 200 {
				t.Fatalf("new phone login: %d %v", l.Status, l.Body)
			}
		})
		t.Run("secure mode asks for the rescue password every time", func(t *testing.T) {
			tok := e.login("+8613800138000", "imei-2", "sim-2", key, "").str("token")
			if r := e.do("PUT", "/v1/me/rescue", `{"secure_mode":true,"current_password":"correct horse"}`, auth(tok)); r.Status != 200 {
				t.Fatalf("secure on: %d %v", r.Status, r.Body)
			}
			if r := e.login("+8613800138000", "imei-2", "sim-2", key, ""); r.Status != 401 || r.code() != "rescue_password_required" {
				t.Fatalf("without password: %d %v", r.Status, r.Body)
			}
			if r := e.login("+8613800138000", "imei-2", "sim-2", key, "nope nope"); r.Status != 401 || r.code() != "invalid_credentials" {
				t.Fatalf("wrong password: %d %v", r.Status, r.Body)
			}
			if r := e.login("+8613800138000", "imei-2", "sim-2", key, "correct horse"); r.Status != 200 {
				t.Fatalf("right password: %d %v", r.Status, r.Body)
			}
		})
		t.Run("re-proving the number replaces the identity", func(t *testing.T) {
			k3 := e.register("+8613800138000", "imei-3", "sim-3")
			// The old phone's key was replaced with the identity: without
			// the number's current key nothing is revealed.
			if r := e.login("+8613800138000", "imei-2", "sim-2", key, "correct horse"); r.code() != "invalid_credentials" {
				t.Fatalf("old identity: %v", r.Body)
			}
			if r := e.login("+8613800138000", "imei-3", "sim-3", k3, "correct horse"); r.Status != 200 {
				t.Fatalf("new identity: %d %v", r.Status, r.Body)
			}
		})
		t.Run("blocked account", func(t *testing.T) {
			k := e.register("+8613700137000", "imei-9", "sim-9")
			tok := e.login("+8613700137000", "imei-9", "sim-9", k, "").str("token")
			if err := db.SetValid(t.Context(), "+8613700137000", false); err != nil {
				t.Fatal(err)
			}
			if r := e.login("+8613700137000", "imei-9", "sim-9", k, ""); r.Status != 403 || r.code() != "account_blocked" {
				t.Fatalf("login: %d %v", r.Status, r.Body)
			}
			if r := e.do("GET", "/v1/me", "", auth(tok)); r.Status != 403 || r.code() != "account_blocked" {
				t.Fatalf("session of blocked user: %d %v", r.Status, r.Body)
			}
			if r := e.do("POST", "/v1/register/header", `{"device_id":"a","sim_id":"b"}`, map[string]string{header: "+8613700137000"}); r.code() != "account_blocked" {
				t.Fatalf("re-register blocked: %v", r.Body)
			}
		})
		t.Run("logout revokes the token", func(t *testing.T) {
			k := e.register("+8613600136000", "imei-8", "sim-8")
			tok := e.login("+8613600136000", "imei-8", "sim-8", k, "").str("token")
			if r := e.do("POST", "/v1/logout", "", auth(tok)); r.Status != 200 {
				t.Fatalf("logout: %d %v", r.Status, r.Body)
			}
			if r := e.do("GET", "/v1/me", "", auth(tok)); r.Status != 401 {
				t.Fatalf("after logout: %d", r.Status)
			}
		})
	})
}

func TestWrongDeviceKeyIsLimited(t *testing.T) {
	db := storetest.SQLite(t)
	e := newEnv(t, db, accounts.Config{LoginFailuresPerHour: 3})
	key := e.register("+8613800138000", "imei-1", "sim-1")
	for i := 0; i < 3; i++ {
		if r := e.login("+8613800138000", "imei-1", "sim-1", "wrong", ""); r.code() != "invalid_credentials" {
			t.Fatalf("attempt %d: %v", i, r.Body)
		}
	}
	if r := e.login("+8613800138000", "imei-1", "sim-1", "wrong", ""); r.Status != 429 || r.code() != "rate_limited" {
		t.Fatalf("4th wrong key: %d %v", r.Status, r.Body)
	}
	// Wrong keys cannot lock the owner out.
	if r := e.login("+8613800138000", "imei-1", "sim-1", key, ""); r.Status != 200 {
		t.Fatalf("right key after the limit: %d %v", r.Status, r.Body)
	}
}

func TestSessionExpires(t *testing.T) {
	db := storetest.SQLite(t)
	e := newEnv(t, db, accounts.Config{SessionTTL: time.Millisecond})
	key := e.register("+8613800138000", "imei-1", "sim-1")
	tok := e.login("+8613800138000", "imei-1", "sim-1", key, "").str("token")
	time.Sleep(5 * time.Millisecond)
	if r := e.do("GET", "/v1/me", "", auth(tok)); r.Status != 401 {
		t.Fatalf("expired token accepted: %d", r.Status)
	}
}

func TestMalformedRequests(t *testing.T) {
	db := storetest.SQLite(t)
	e := newEnv(t, db, accounts.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	big := `{"device_id":"` + strings.Repeat("a", 5000) + `","sim_id":"x"}`
	tests := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		code                     string
	}{
		{"empty body", "POST", "/v1/login", "", nil, 400, "invalid_json"},
		{"not json", "POST", "/v1/login", "number=1", nil, 400, "invalid_json"},
		{"truncated json", "POST", "/v1/login", `{"number":"1`, nil, 400, "invalid_json"},
		{"array body", "POST", "/v1/login", `[1,2]`, nil, 400, "invalid_json"},
		{"string body", "POST", "/v1/login", `"x"`, nil, 400, "invalid_json"},
		{"null body", "POST", "/v1/login", `null`, nil, 400, "invalid_json"},
		{"number as int", "POST", "/v1/login", `{"number":13800138000,"device_id":"a","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_json"},
		{"device_id as bool", "POST", "/v1/login", `{"number":"13800138000","device_id":true,"sim_id":"b","device_key":"k"}`, nil, 400, "invalid_json"},
		{"unknown field", "POST", "/v1/login", `{"number":"13800138000","device_id":"a","sim_id":"b","device_key":"k","admin":true}`, nil, 400, "invalid_json"},
		{"two objects", "POST", "/v1/login", `{"number":"1"}{"number":"2"}`, nil, 400, "invalid_json"},
		{"missing number", "POST", "/v1/login", `{"device_id":"a","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_number"},
		{"missing device_id", "POST", "/v1/login", `{"number":"13800138000","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_request"},
		{"missing sim_id", "POST", "/v1/login", `{"number":"13800138000","device_id":"a","device_key":"k"}`, nil, 400, "invalid_request"},
		{"missing device_key", "POST", "/v1/login", `{"number":"13800138000","device_id":"a","sim_id":"b"}`, nil, 400, "invalid_request"},
		{"invalid number", "POST", "/v1/login", `{"number":"12345","device_id":"a","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_number"},
		{"letters as number", "POST", "/v1/login", `{"number":"call me","device_id":"a","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_number"},
		{"device id with spaces", "POST", "/v1/login", `{"number":"13800138000","device_id":"a b","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_request"},
		{"device id too long", "POST", "/v1/login", `{"number":"13800138000","device_id":"` + strings.Repeat("a", 65) + `","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_request"},
		{"oversized body", "POST", "/v1/register/header", big, nil, 413, "request_too_large"},
		{"xml media type", "POST", "/v1/login", `{}`, map[string]string{"Content-Type": "application/xml"}, 415, "unsupported_media_type"},
		{"wrong method on login", "GET", "/v1/login", "", nil, 405, "method_not_allowed"},
		{"wrong method on healthz", "POST", "/healthz", "", nil, 405, "method_not_allowed"},
		{"wrong method on me", "DELETE", "/v1/me", "", nil, 405, "method_not_allowed"},
		{"unknown path", "GET", "/v1/nothing", "", nil, 404, "not_found"},
		{"header method from untrusted address", "POST", "/v1/register/header", `{"device_id":"a","sim_id":"b"}`, map[string]string{header: "13800138000"}, 403, "untrusted_source"},
		{"client number method disabled", "POST", "/v1/register/client", `{"number":"13800138000","device_id":"a","sim_id":"b"}`, nil, 403, "method_disabled"},
		{"me without token", "GET", "/v1/me", "", nil, 401, "unauthorized"},
		{"me with bad token", "GET", "/v1/me", "", map[string]string{"Authorization": "Bearer nope"}, 401, "unauthorized"},
		{"me with basic auth", "GET", "/v1/me", "", map[string]string{"Authorization": "Basic YTpi"}, 401, "unauthorized"},
		{"huge token", "GET", "/v1/me", "", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", 4000)}, 401, "unauthorized"},
		{"rescue without password", "POST", "/v1/login/rescue", `{"number":"13800138000","device_id":"a","sim_id":"b"}`, nil, 400, "invalid_request"},
		{"rescue unknown number", "POST", "/v1/login/rescue", `{"number":"13800138000","device_id":"a","sim_id":"b","rescue_password":"x"}`, nil, 404, "not_registered"},
		{"rescue bad number", "POST", "/v1/login/rescue", `{"number":"+0","device_id":"a","sim_id":"b","rescue_password":"x"}`, nil, 400, "invalid_number"},
		{"logout without token", "POST", "/v1/logout", "", nil, 401, "unauthorized"},
		{"nested object for number", "POST", "/v1/login", `{"number":{"n":"1"},"device_id":"a","sim_id":"b","device_key":"k"}`, nil, 400, "invalid_json"},
		{"invalid utf8 json", "POST", "/v1/login", "{\"number\":\"\xff\"}", nil, 400, "invalid_number"},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, tt.body, tt.hdr)
			if r.Status >= 500 {
				t.Fatalf("5xx: %d %v", r.Status, r.Body)
			}
			if r.Status != tt.status || r.code() != tt.code {
				t.Fatalf("got %d %s (%v), want %d %s", r.Status, r.code(), r.Body, tt.status, tt.code)
			}
			if msg, _ := r.Body["error"].(map[string]any)["message"].(string); msg == "" {
				t.Fatal("error without a message")
			}
		})
	}
}

func TestReadyzReportsDatabase(t *testing.T) {
	db := storetest.SQLite(t)
	e := newEnv(t, db, accounts.Config{})
	if r := e.do("GET", "/readyz", "", nil); r.Status != 200 || r.Body["ready"] != true {
		t.Fatalf("readyz: %d %v", r.Status, r.Body)
	}
	db.Close()
	if r := e.do("GET", "/readyz", "", nil); r.Status != 503 || r.Body["ready"] != false {
		t.Fatalf("readyz with closed db: %d %v", r.Status, r.Body)
	}
}

func TestMetricsCountRequests(t *testing.T) {
	db := storetest.SQLite(t)
	e := newEnv(t, db, accounts.Config{})
	e.do("POST", "/v1/login", "{}", nil)
	res, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`phonebook_http_requests_total{route="/v1/login",status="400"} 1`, `phonebook_logins_total{outcome="invalid_number"} 1`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A handset's MMS capability report at login reaches the reporter; a
// login without the field reports nothing, and a failing reporter does
// not fail the login.
func TestLoginReportsMMSCapability(t *testing.T) {
	e := newEnv(t, storetest.SQLite(t), accounts.Config{DefaultRegion: "CN"})
	key := e.register("+8613800138000", "imei-1", "sim-1")
	var mu sync.Mutex
	got := map[phonebook.MSISDN]bool{}
	calls := 0
	fail := false
	e.api.SetMMSCapabilityReporter(func(ctx context.Context, n phonebook.MSISDN, capable bool) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		got[n] = capable
		if fail {
			return errors.New("database down")
		}
		return nil
	})
	body := func(capable string) string {
		return `{"number":"13800138000","device_id":"imei-1","sim_id":"sim-1","device_key":"` + key + `"` + capable + `}`
	}
	if r := e.do("POST", "/v1/login", body(""), nil); r.Status != 200 || calls != 0 {
		t.Fatalf("login without a report: %d, %d reports", r.Status, calls)
	}
	if r := e.do("POST", "/v1/login", body(`,"mms_capable":true`), nil); r.Status != 200 || !got["+8613800138000"] {
		t.Fatalf("login with mms_capable true: %d %v", r.Status, got)
	}
	fail = true
	if r := e.do("POST", "/v1/login", body(`,"mms_capable":false`), nil); r.Status != 200 || got["+8613800138000"] || calls != 2 {
		t.Fatalf("login with mms_capable false: %d %v", r.Status, got)
	}
	if r := e.do("POST", "/v1/login", body(`,"mms_capable":"yes"`), nil); r.Status != 400 || r.code() != "invalid_json" {
		t.Fatalf("mms_capable as a string: %d %v", r.Status, r.Body)
	}
}
