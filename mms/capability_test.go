package mms

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// The sources in order: the operator's word wins; otherwise the newest of
// the handset's and the MMSC's; otherwise the prefix default.
func TestCapabilityPrecedence(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		c := NewCapabilities(db, []string{"+86138"})
		check := func(n phonebook.MSISDN, capable bool, source string) {
			t.Helper()
			v, err := c.Capable(ctx, n)
			if err != nil || v.Capable != capable || v.Source != source {
				t.Fatalf("%s: %+v %v, want capable=%v from %s", n, v, err, capable, source)
			}
		}
		check("+8613800000001", true, "prefix")
		check("+8615000000001", false, "none")
		// The handset says no; later the MMSC... the newer wins.
		old := time.Now().Add(-time.Hour)
		if err := db.SetMMSCapability(ctx, store.MMSCapability{Number: "+8613800000001", Source: store.CapabilityClient, Capable: false, UpdatedAt: old}); err != nil {
			t.Fatal(err)
		}
		check("+8613800000001", false, store.CapabilityClient)
		if err := c.ClientReport(ctx, "+8615000000001", true); err != nil {
			t.Fatal(err)
		}
		check("+8615000000001", true, store.CapabilityClient)
		if err := c.Report(ctx, "+8615000000001", store.CapabilityMMSC, false); err != nil {
			t.Fatal(err)
		}
		check("+8615000000001", false, store.CapabilityMMSC)
		// The operator overrides both.
		if err := c.Provision(ctx, []phonebook.MSISDN{"+8615000000001"}, true); err != nil {
			t.Fatal(err)
		}
		check("+8615000000001", true, store.CapabilityOperator)
		if gone, err := c.Forget(ctx, "+8615000000001", ""); err != nil || !gone {
			t.Fatal(gone, err)
		}
		check("+8615000000001", false, "none")
	})
}

func TestParseCapabilityList(t *testing.T) {
	list, err := ParseCapabilityList(strings.NewReader("# provisioning 2026-11\n138 0013 8000\n+8613900139000, no\n\n13700137000\tyes\n+447911123456;0\n"), "CN")
	if err != nil {
		t.Fatal(err)
	}
	want := []Provisioning{{"+8613800138000", true}, {"+8613900139000", false}, {"+8613700137000", true}, {"+447911123456", false}}
	if len(list) != len(want) {
		t.Fatalf("got %+v", list)
	}
	for i := range want {
		if list[i] != want[i] {
			t.Fatalf("line %d: %+v, want %+v", i, list[i], want[i])
		}
	}
	for _, bad := range []struct{ in, why string }{
		{"13800138000\nnot-a-number\n", "line 2"},
		{"13800138000,maybe\n", `"maybe" is not yes or no`},
		{strings.Repeat("1", 5000), "at most 4096 bytes"},
	} {
		if _, err := ParseCapabilityList(strings.NewReader(bad.in), "CN"); phonebook.ErrorCode(err) != phonebook.EInvalid || !strings.Contains(err.Error(), bad.why) {
			t.Errorf("%.20q: %v, want invalid with %q", bad.in, err, bad.why)
		}
	}
}

func TestAdminEndpoint(t *testing.T) {
	db := storetest.SQLite(t)
	c := NewCapabilities(db, nil)
	srv := httptest.NewServer(c.AdminHandler("CN"))
	defer srv.Close()
	do := func(method, path, ct, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var m map[string]any
		json.Unmarshal(b, &m)
		return res.StatusCode, m
	}
	if st, m := do("GET", "/admin/mms-capable/13800138000", "", ""); st != 200 || m["capable"] != false || m["source"] != "none" {
		t.Fatalf("show: %d %v", st, m)
	}
	if st, m := do("PUT", "/admin/mms-capable/13800138000", "application/json", `{"capable":true}`); st != 200 || m["capable"] != true || m["source"] != "operator" {
		t.Fatalf("set: %d %v", st, m)
	}
	if st, m := do("POST", "/admin/mms-capable/import", "text/csv", "13900139000,yes\n13700137000,no\n"); st != 200 || m["capable"] != 1.0 || m["not_capable"] != 1.0 {
		t.Fatalf("import: %d %v", st, m)
	}
	if st, m := do("GET", "/admin/mms-capable/+8613900139000", "", ""); st != 200 || m["capable"] != true {
		t.Fatalf("imported: %d %v", st, m)
	}
	if st, _ := do("DELETE", "/admin/mms-capable/13800138000", "", ""); st != 204 {
		t.Fatalf("clear: %d", st)
	}
	// Bad input: clear errors, never a 500.
	for _, tc := range []struct {
		method, path, ct, body string
		status                 int
		code                   string
	}{
		{"GET", "/admin/mms-capable/abc", "", "", 400, "invalid_number"},
		{"PUT", "/admin/mms-capable/13800138000", "application/json", `{}`, 400, "invalid_request"},
		{"PUT", "/admin/mms-capable/13800138000", "application/json", `{"capable":"yes"}`, 400, "invalid_json"},
		{"POST", "/admin/mms-capable/import", "text/csv", "13800138000,perhaps\n", 400, "invalid_request"},
		{"POST", "/admin/mms-capable/import", "application/pdf", "x", 415, "unsupported_media_type"},
		{"DELETE", "/admin/mms-capable/13800138000", "", "", 404, "not_found"},
		{"DELETE", "/admin/mms-capable/13800138000?source=guess", "", "", 400, "invalid_request"},
	} {
		st, m := do(tc.method, tc.path, tc.ct, tc.body)
		e, _ := m["error"].(map[string]any)
		if st != tc.status || e["code"] != tc.code {
			t.Errorf("%s %s %q: %d %v, want %d %s", tc.method, tc.path, tc.body, st, m, tc.status, tc.code)
		}
	}
}
