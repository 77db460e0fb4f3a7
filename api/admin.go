package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/phonebook/phonebook"
)

// RequireToken guards the operators' listener (admin.addr): with a token,
// every request needs Authorization: Bearer <token>, else it is answered
// 401 unauthorized. Paths under the prefixes in ownAuth (each ending in
// "/") pass unchecked: their handlers check the token themselves (the
// console, which a browser reaches with a session cookie after signing in
// with the token). Both sides are hashed first, so that the comparison
// takes the same time whatever the lengths. An empty token guards nothing.
func RequireToken(token string, next http.Handler, ownAuth ...string) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range ownAuth {
			if strings.HasPrefix(r.URL.Path, p) {
				next.ServeHTTP(w, r)
				return
			}
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="phonebook-admin"`)
			writeError(w, phonebook.Errorf(phonebook.EUnauthorized, "the admin listener needs Authorization: Bearer <admin.token>"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
