package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/phonebook/phonebook/api"
)

// The admin listener's guard: the token, and only it, opens every path but
// those whose handlers check it themselves; without a token nothing is
// guarded.
func TestRequireToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := api.RequireToken("s3cret-token", ok, "/console/")
	for _, c := range []struct {
		name, path, auth string
		want             int
	}{
		{"no header", "/admin/connections", "", http.StatusUnauthorized},
		{"wrong token", "/metrics", "Bearer s3cret-tokeN", http.StatusUnauthorized},
		{"prefix of the token", "/metrics", "Bearer s3cret", http.StatusUnauthorized},
		{"token longer", "/metrics", "Bearer s3cret-token-and-more", http.StatusUnauthorized},
		{"not a bearer", "/metrics", "Basic s3cret-token", http.StatusUnauthorized},
		{"the token", "/admin/connections", "Bearer s3cret-token", http.StatusNoContent},
		{"the token, spaces around", "/metrics", "Bearer  s3cret-token ", http.StatusNoContent},
		{"own auth, no header", "/console/", "", http.StatusNoContent},
		{"own auth, deeper", "/console/number/+86138", "", http.StatusNoContent},
		{"not under the prefix", "/consolex", "", http.StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", c.path, nil)
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Fatalf("status %d, want %d", w.Code, c.want)
			}
			if c.want != http.StatusUnauthorized {
				return
			}
			if got := w.Header().Get("WWW-Authenticate"); got != `Bearer realm="phonebook-admin"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
			var body struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Code != "unauthorized" || body.Error.Message == "" {
				t.Errorf("body %s (%v)", w.Body, err)
			}
		})
	}
	r := httptest.NewRequest("GET", "/metrics", nil)
	w := httptest.NewRecorder()
	api.RequireToken("", ok).ServeHTTP(w, r)
	if w.Code != http.StatusNoContent {
		t.Fatalf("no token: status %d", w.Code)
	}
}
