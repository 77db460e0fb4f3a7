package api_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/store/storetest"
)

// The API routes with http.ServeMux; what the mux does not match is still
// answered as docs/api.md says: the JSON error body, an Allow header on
// method_not_allowed, and not_found (never a redirect) for paths that are
// not exactly a route.
func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, storetest.SQLite(t), accounts.Config{})
	e.api.Handle("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) error {
		return api.WriteJSON(w, http.StatusOK, map[string]string{"id": api.PathParam(r)})
	})
	tests := []struct {
		name, method, path string
		status             int
		code, allow, msg   string
	}{
		{"post-only route", "GET", "/v1/login", 405, "method_not_allowed", "POST", "/v1/login does not take GET; use POST"},
		{"get route", "POST", "/healthz", 405, "method_not_allowed", "GET, HEAD", "/healthz does not take POST; use GET or HEAD"},
		{"wildcard route", "DELETE", "/v1/things/abc", 405, "method_not_allowed", "GET, HEAD", "/v1/things/{id} does not take DELETE"},
		{"unknown path", "GET", "/v1/nothing", 404, "not_found", "", "no endpoint /v1/nothing"},
		{"trailing slash", "POST", "/v1/login/", 404, "not_found", "", "no endpoint /v1/login/"},
		{"double slash", "POST", "/v1//login", 404, "not_found", "", "no endpoint"},
		{"dot segments", "POST", "/v1/x/../login", 404, "not_found", "", "no endpoint"},
		{"empty wildcard", "GET", "/v1/things/", 404, "not_found", "", "no endpoint"},
		{"wildcard with more segments", "GET", "/v1/things/a/b", 404, "not_found", "", "no endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, "", nil)
			if r.Status != tt.status || r.code() != tt.code {
				t.Fatalf("got %d %s (%v), want %d %s", r.Status, r.code(), r.Body, tt.status, tt.code)
			}
			if got := r.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if msg, _ := r.Body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q, want it to contain %q", msg, tt.msg)
			}
		})
	}

	if r := e.do("GET", "/v1/things/a%2Fb", "", nil); r.Status != 200 || r.str("id") != "a/b" {
		t.Errorf("wildcard: %d %v, want 200 id a/b", r.Status, r.Body)
	}
	res, err := http.Head(e.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("HEAD /healthz: %d, want 200", res.StatusCode)
	}

	res, err = http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`phonebook_http_requests_total{route="/v1/things/{id}",status="200"} 1`,
		`phonebook_http_requests_total{route="/v1/things/{id}",status="405"} 1`,
		`phonebook_http_requests_total{route="unknown",status="404"} 6`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestSubtreeRouteRefused(t *testing.T) {
	e := newEnv(t, storetest.SQLite(t), accounts.Config{})
	defer func() {
		if recover() == nil {
			t.Fatal("a route ending in / was accepted; the mux would redirect to it")
		}
	}()
	e.api.Handle("GET /v1/things/", func(w http.ResponseWriter, r *http.Request) error { return nil })
}
