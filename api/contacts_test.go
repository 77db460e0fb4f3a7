package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func newContactsEnv(t *testing.T, db *store.DB, cfg contacts.Config) *env {
	t.Helper()
	return newContactsEnvAccounts(t, db, cfg, accounts.Config{})
}

func newContactsEnvAccounts(t *testing.T, db *store.DB, cfg contacts.Config, accCfg accounts.Config) *env {
	t.Helper()
	reg := prometheus.NewRegistry()
	accCfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	acc := accounts.New(db, accCfg, nil, reg)
	svc, err := contacts.New(db, nil, cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(t.Context()) })
	a := api.New(api.Config{MaxBodyBytes: 4096}, acc, db, nil, reg, reg)
	a.SetContacts(svc)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, db: db}
}

// user registers number and logs in; it returns the session header.
func (e *env) user(number string) map[string]string {
	e.t.Helper()
	key := e.register(number, "imei-"+number[1:], "sim-"+number[1:])
	r := e.login(number, "imei-"+number[1:], "sim-"+number[1:], key, "")
	if r.Status != 200 {
		e.t.Fatalf("login %s: %d %v", number, r.Status, r.Body)
	}
	return auth(r.str("token"))
}

// path walks decoded JSON: path(m, "entries", 0, "phones", 0, "registered").
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func TestContactsEndpoints(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newContactsEnv(t, db, contacts.Config{LookupCapacity: 150})
		alice, bob := e.user("+8613800138001"), e.user("+8613800138002")

		// A book bigger than the API's default body limit.
		entries := []contacts.Entry{{ID: "bob", Name: "Bob", Phones: []contacts.Phone{{Number: "138 0013 8002", Label: "mobile"}}},
			{ID: "bad", Name: "Service", Phones: []contacts.Phone{{Number: "10086"}}}}
		for i := range 60 {
			entries = append(entries, contacts.Entry{ID: fmt.Sprintf("x%02d", i), Name: fmt.Sprintf("Someone %d", i),
				Phones: []contacts.Phone{{Number: fmt.Sprintf("139 0000 %04d", i)}}})
		}
		body := js(map[string]any{"full": true, "entries": entries})
		if len(body) <= 4096 {
			t.Fatalf("test body is only %d bytes", len(body))
		}
		r := e.do("POST", "/v1/contacts/sync", body, alice)
		if r.Status != 200 || path(r.Body, "entries", 0, "phones", 0, "registered") != true ||
			path(r.Body, "entries", 1, "error") != "invalid_number" || path(r.Body, "contacts") != float64(61) {
			t.Fatalf("alice's sync: %d %v", r.Status, r.Body)
		}
		r = e.do("POST", "/v1/contacts/sync", `{"added": [{"id": "1", "name": "Alice", "phones": [{"number": "+86 138 0013 8001"}]}]}`, bob)
		if r.Status != 200 || path(r.Body, "entries", 0, "phones", 0, "mutual") != true {
			t.Fatalf("bob's sync: %d %v", r.Status, r.Body)
		}

		r = e.do("PUT", "/v1/presence", `{"im_status": "busy", "status_text": "in a meeting", "activity": "in_call"}`, bob)
		if r.Status != 200 || r.str("im_status") != "busy" || r.str("visibility") != "mutual" {
			t.Fatalf("set presence: %d %v", r.Status, r.Body)
		}
		r = e.do("GET", "/v1/contacts/presence", "", alice)
		if r.Status != 200 || path(r.Body, "presence", 0, "number") != "+8613800138002" || path(r.Body, "presence", 0, "activity") != "in_call" {
			t.Fatalf("contacts' presence: %d %v", r.Status, r.Body)
		}
		r = e.do("GET", "/v1/contacts", "", alice)
		if r.Status != 200 || len(path(r.Body, "contacts").([]any)) != 61 {
			t.Fatalf("contacts: %d %v", r.Status, r.Body)
		}
		r = e.do("GET", "/v1/contacts/restore", "", alice)
		if r.Status != 200 || path(r.Body, "entries", 0, "id") != "bad" || path(r.Body, "entries", 0, "phones", 0, "number") != "10086" {
			t.Fatalf("restore: %d %v", r.Status, r.Body)
		}
		r = e.do("GET", "/v1/presence", "", bob)
		if r.Status != 200 || r.str("status_text") != "in a meeting" {
			t.Fatalf("own presence: %d %v", r.Status, r.Body)
		}

		// vCard import.
		vcf, err := os.ReadFile("../contacts/testdata/vcard-4.0.vcf")
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/contacts/import", strings.NewReader(string(vcf)))
		req.Header.Set("Content-Type", "text/vcard; charset=utf-8")
		for k, v := range bob {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var imp map[string]any
		json.Unmarshal(b, &imp)
		if res.StatusCode != 200 || path(imp, "book_entries") != float64(3) {
			t.Fatalf("import: %d %s", res.StatusCode, b)
		}

		// Errors.
		for _, c := range []struct {
			method, path, body string
			hdr                map[string]string
			status             int
			code               string
		}{
			{"GET", "/v1/contacts", "", nil, 401, "unauthorized"},
			{"POST", "/v1/contacts/sync", `{"full": true, "entries": [], "region": "china"}`, alice, 400, "invalid_request"},
			{"POST", "/v1/contacts/sync", `{"full": true, "entries": [{"id": "1"}, {"id": "1"}]}`, alice, 400, "invalid_request"},
			{"POST", "/v1/contacts/sync", `{"full": true, "bogus": 1}`, alice, 400, "invalid_json"},
			{"PUT", "/v1/presence", `{"im_status": "asleep"}`, alice, 400, "invalid_request"},
			{"POST", "/v1/contacts/import", `{}`, alice, 415, "unsupported_media_type"},
		} {
			r := e.do(c.method, c.path, c.body, c.hdr)
			if r.Status != c.status || r.code() != c.code {
				t.Errorf("%s %s %s: %d %v, want %d %s", c.method, c.path, c.body, r.Status, r.Body, c.status, c.code)
			}
		}
		// Over the lookup budget: 429 with Retry-After, nothing applied.
		var more []contacts.Entry
		for i := range 100 {
			more = append(more, contacts.Entry{ID: fmt.Sprintf("y%03d", i), Phones: []contacts.Phone{{Number: fmt.Sprintf("137 0000 %04d", i)}}})
		}
		r = e.do("POST", "/v1/contacts/sync", js(map[string]any{"added": more}), alice)
		if r.Status != 429 || r.code() != "rate_limited" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("over budget: %d %v", r.Status, r.Body)
		}
	})
}
