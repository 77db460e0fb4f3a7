package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/phonebook/phonebook/store"
)

const (
	cookieName  = "pb_console"
	maxSessions = 256
)

// operator is who is making a request: the name given at sign-in (or
// "bearer" for requests with the token itself), and the session's CSRF
// token (empty for bearer requests, which a browser cannot forge).
type operator struct {
	Name   string
	Remote string
	CSRF   string
	bearer bool
	sid    string
}

type consoleSession struct {
	name    string
	csrf    string
	expires time.Time
}

// authenticator checks the admin token and keeps the sign-in sessions of
// this node in memory (a restart signs everyone out).
type authenticator struct {
	token    [sha256.Size]byte
	hasToken bool
	ttl      time.Duration
	failures *rate.Limiter // failed token checks, for all clients together
	guard    sync.Mutex    // makes check-then-count on failures one step

	mu       sync.Mutex
	sessions map[string]*consoleSession // by sha256 of the cookie value
}

func newAuthenticator(token string, ttl time.Duration, failures *rate.Limiter) *authenticator {
	return &authenticator{
		token: sha256.Sum256([]byte(token)), hasToken: token != "", ttl: ttl, failures: failures,
		sessions: map[string]*consoleSession{},
	}
}

// check compares a presented token with the admin token, in constant time
// whatever the lengths. Failures are limited for all clients together:
// while the limiter is empty every attempt is refused without comparing
// (limited), so the token cannot be guessed faster than the limiter allows,
// however many connections try at once.
func (a *authenticator) check(got string) (ok, limited bool) {
	a.guard.Lock()
	defer a.guard.Unlock()
	if a.failures.Tokens() < 1 {
		return false, true
	}
	sum := sha256.Sum256([]byte(got))
	if a.hasToken && subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1 {
		return true, false
	}
	a.failures.Allow()
	return false, false
}

func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(cookie string) string {
	sum := sha256.Sum256([]byte(cookie))
	return string(sum[:])
}

// newSession signs name in and returns the cookie value.
func (a *authenticator) newSession(name string, now time.Time) string {
	id := randomString()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sessions) >= maxSessions {
		var oldestKey string
		var oldest time.Time
		for k, s := range a.sessions {
			if s.expires.Before(now) {
				delete(a.sessions, k)
				continue
			}
			if oldestKey == "" || s.expires.Before(oldest) {
				oldestKey, oldest = k, s.expires
			}
		}
		if len(a.sessions) >= maxSessions {
			delete(a.sessions, oldestKey)
		}
	}
	a.sessions[sessionKey(id)] = &consoleSession{name: name, csrf: randomString(), expires: now.Add(a.ttl)}
	return id
}

func (a *authenticator) endSession(sid string) {
	a.mu.Lock()
	delete(a.sessions, sessionKey(sid))
	a.mu.Unlock()
}

// identify returns the request's operator, or nil.
func (a *authenticator) identify(r *http.Request, now time.Time) *operator {
	if !a.hasToken {
		return nil
	}
	remote := remoteHost(r)
	if h := r.Header.Get("Authorization"); h != "" {
		got, found := strings.CutPrefix(h, "Bearer ")
		if ok, _ := a.check(strings.TrimSpace(got)); found && ok {
			return &operator{Name: "bearer", Remote: remote, bearer: true}
		}
		return nil
	}
	ck, err := r.Cookie(cookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[sessionKey(ck.Value)]
	if !ok {
		return nil
	}
	if now.After(s.expires) {
		delete(a.sessions, sessionKey(ck.Value))
		return nil
	}
	return &operator{Name: s.name, Remote: remote, CSRF: s.csrf, sid: ck.Value}
}

// csrfOK checks a form's CSRF token. Bearer requests need none: a browser
// never adds the Authorization header to a request another site makes it
// send. A browser that says the request is cross-site is refused anyway.
func (op *operator) csrfOK(r *http.Request) bool {
	if op.bearer {
		return true
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return false
	}
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(op.CSRF)) == 1
}

func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// validName accepts 1-64 printable characters: the name goes into the
// audit log.
func validName(s string) bool {
	if s == "" || utf8.RuneCountInString(s) > 64 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

type handlerWithOperator func(w http.ResponseWriter, r *http.Request, op *operator)

// authed answers 401 (with the sign-in form, for a browser) unless the
// request carries the admin token or a session cookie.
func (c *Console) authed(h handlerWithOperator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := c.auth.identify(r, time.Now())
		if op == nil {
			c.unauthorized(w, r, "")
			return
		}
		h(w, r, op)
	})
}

func (c *Console) unauthorized(w http.ResponseWriter, r *http.Request, problem string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="phonebook-console"`)
	if !c.auth.hasToken {
		problem = "The console is off: set admin.token in the configuration (at least 16 characters) and restart."
	}
	if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") || r.URL.Path == "/console/login" {
		c.render(w, r, http.StatusUnauthorized, "login", nil, map[string]any{"Problem": problem, "Enabled": c.auth.hasToken})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	msg := "unauthorized: the console needs the admin token (Authorization: Bearer <admin.token>, or sign in at /console/login)\n"
	if problem != "" {
		msg = "unauthorized: " + problem + "\n"
	}
	w.Write([]byte(msg))
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if op := c.auth.identify(r, time.Now()); op != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	c.unauthorized(w, r, "")
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if !c.auth.hasToken {
		c.unauthorized(w, r, "")
		return
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		c.unauthorized(w, r, "Sign in from the console's own page.")
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	ok, limited := c.auth.check(r.PostFormValue("token"))
	if limited {
		w.Header().Set("Retry-After", "10")
		c.render(w, r, http.StatusTooManyRequests, "login", nil, map[string]any{"Problem": "Too many failed sign-ins: wait a few seconds and try again.", "Enabled": true})
		return
	}
	if !ok {
		c.audit(r, &operator{Name: clipName(name), Remote: remoteHost(r)}, "sign_in_failed", "", "wrong token")
		c.unauthorized(w, r, "Wrong token.")
		return
	}
	if !validName(name) {
		c.unauthorized(w, r, "Give your name (1 to 64 characters): the audit log records who did what.")
		return
	}
	sid := c.auth.newSession(name, time.Now())
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: sid, Path: Prefix, MaxAge: int(c.cfg.SessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	c.audit(r, &operator{Name: name, Remote: remoteHost(r)}, "sign_in", "", "")
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, op *operator) {
	if !op.csrfOK(r) {
		c.fail(w, r, op, http.StatusForbidden, "csrf", "The form is stale or came from another site: reload the page and try again.")
		return
	}
	if op.sid != "" {
		c.auth.endSession(op.sid)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

func clipName(s string) string {
	if utf8.RuneCountInString(s) > 64 {
		s = string([]rune(s)[:64])
	}
	return strings.ToValidUTF8(s, "?")
}

// audit records an action; a failure to record is logged, not hidden.
func (c *Console) audit(r *http.Request, op *operator, action, target, detail string) {
	err := c.svc.Store.AddAudit(r.Context(), store.AuditEntry{Actor: op.Name, Remote: op.Remote, Action: action, Target: target, Detail: detail})
	if err != nil {
		c.log.Error("console: audit log not written", "action", action, "target", target, "actor", op.Name, "err", err)
	}
}
