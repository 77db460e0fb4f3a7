// Package api is Phonebook's HTTP JSON API: registration, login, account
// settings, health, readiness and metrics. It maps phonebook error codes to
// HTTP statuses in one place (statusOf) and never answers bad input with a 5xx.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/store"
)

// Check is a readiness check: nil means ready.
type Check func(ctx context.Context) error

// Config configures the API. Zero values mean defaults.
type Config struct {
	MaxBodyBytes          int64  // default 64 KiB
	NumberHeader          string // method D header, default X-Up-Calling-Line-Id
	MaxRegistrationsPerIP int    // per address (network, see AddrPrefixes) per day; default 1000
	// Per-address limits count every client address in one network
	// (an IPv4 /32, an IPv6 /64 by default) as one.
	AddrPrefixes phonebook.AddrPrefixes
	// Failed /v1/login attempts (unknown number, wrong key, other phone...)
	// per address per hour; default 100.
	MaxLoginFailuresPerAddressHour int
	// Failed /v1/login/rescue attempts per address per day; default 30.
	MaxRescueFailuresPerAddressDay int
	// Method D from a trusted gateway, whose one address carries every
	// subscriber behind it: registrations per number and per identity
	// (device id + SIM id) per day instead; defaults 10 and 10.
	MaxHeaderPerNumberDay   int
	MaxHeaderPerIdentityDay int
}

// Server is the HTTP API.
type Server struct {
	cfg      Config
	accounts *accounts.Service
	counter  Counter
	log      *slog.Logger
	gatherer prometheus.Gatherer
	mux      *http.ServeMux
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	mu     sync.Mutex
	checks map[string]Check
	infos  map[string]func() any

	// bodyLimits raises MaxBodyBytes for routes that take large bodies
	// (address-book sync, vCard import); set before serving, nil = none.
	bodyLimits map[string]int64

	// mmsCapable receives handsets' MMS capability reports at login.
	mmsCapable func(ctx context.Context, number phonebook.MSISDN, capable bool) error

	// media serves /v1/media and the /m/ links (media.go); nil = off.
	media *media.Service
}

// Counter is a cluster-wide fixed-window counter (the store implements it).
type Counter interface {
	Hits(ctx context.Context, hits []store.CounterHit) ([]int64, []time.Time, error)
	Count(ctx context.Context, name string, window time.Duration) (int64, time.Time, error)
}

// DefaultConfig returns the values a zero Config stands for.
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

func (c *Config) fill() {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.NumberHeader == "" {
		c.NumberHeader = "X-Up-Calling-Line-Id"
	}
	if c.MaxRegistrationsPerIP <= 0 {
		c.MaxRegistrationsPerIP = 1000
	}
	if c.MaxLoginFailuresPerAddressHour <= 0 {
		c.MaxLoginFailuresPerAddressHour = 100
	}
	if c.MaxRescueFailuresPerAddressDay <= 0 {
		c.MaxRescueFailuresPerAddressDay = 30
	}
	if c.MaxHeaderPerNumberDay <= 0 {
		c.MaxHeaderPerNumberDay = 10
	}
	if c.MaxHeaderPerIdentityDay <= 0 {
		c.MaxHeaderPerIdentityDay = 10
	}
	c.AddrPrefixes = c.AddrPrefixes.WithDefaults()
}

// New builds the API. reg registers the API's own metrics; gatherer, when
// not nil, serves /metrics (usually the same *prometheus.Registry). The
// server passes nil and serves /metrics on its admin listener instead.
func New(cfg Config, acc *accounts.Service, counter Counter, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) *Server {
	cfg.fill()
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		cfg: cfg, accounts: acc, counter: counter, log: log, gatherer: gatherer,
		mux:    http.NewServeMux(),
		checks: map[string]Check{},
		infos:  map[string]func() any{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "phonebook_http_request_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(s.requests, s.latency)
	}
	s.routes()
	return s
}

// AddCheck adds a readiness check shown in /readyz under name.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// AddInfo adds detail shown in /readyz under name (e.g. each SMSC link's
// state) that does not by itself decide readiness.
func (s *Server) AddInfo(name string, f func() any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.infos[name] = f
}

// Handle registers an extra route (other packages' endpoints) for a
// pattern such as "GET /v1/things/{id}" (see handle).
func (s *Server) Handle(pattern string, h HandlerFunc) { s.handle(pattern, h) }

// HandleAuth registers an extra route that needs a session.
func (s *Server) HandleAuth(pattern string, h AuthHandlerFunc) { s.handle(pattern, s.authed(h)) }

func (s *Server) routes() {
	s.handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.handle("GET /readyz", s.readyz)
	if s.gatherer != nil {
		s.handle("GET /metrics", func(w http.ResponseWriter, r *http.Request) error {
			promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
			return nil
		})
	}
	s.handle("POST /v1/register/header", s.registerHeader)
	s.handle("POST /v1/register/client", s.registerClient)
	s.handle("POST /v1/login", s.login)
	s.handle("POST /v1/login/rescue", s.rescue)
	s.handle("POST /v1/logout", s.authed(s.logout))
	s.handle("GET /v1/me", s.authed(s.me))
	s.handle("PUT /v1/me/rescue", s.authed(s.setRescue))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: 200}
	route, h := s.match(r)
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in handler", "route", route, "panic", v)
			if !sw.wrote {
				writeError(sw, phonebook.Errorf(phonebook.EInternal, "internal error"))
			}
		}
		s.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}()
	limit := s.cfg.MaxBodyBytes
	if l, ok := s.bodyLimits[route]; ok {
		limit = l
	}
	r.Body = http.MaxBytesReader(sw, r.Body, limit)
	if err := h(sw, r); err != nil {
		writeError(sw, err)
	}
}

// HandlerFunc is an API handler: it writes a response or returns an error
// that is written as {"error": {...}}.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// AuthHandlerFunc is a handler that needs an authenticated session.
type AuthHandlerFunc func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error

func (s *Server) authed(h AuthHandlerFunc) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || token == "" {
			return phonebook.Errorf(phonebook.EUnauthorized, "send the session token as Authorization: Bearer <token>")
		}
		p, err := s.accounts.Authenticate(r.Context(), strings.TrimSpace(token))
		if err != nil {
			return err
		}
		return h(w, r, p)
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	out := map[string]string{}
	ready := true
	for name, c := range checks {
		if err := c(ctx); err != nil {
			out[name] = err.Error()
			ready = false
		} else {
			out[name] = "ok"
		}
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	body := map[string]any{"ready": ready, "checks": out}
	s.mu.Lock()
	for name, f := range s.infos {
		body[name] = f()
	}
	s.mu.Unlock()
	return writeJSON(w, status, body)
}

// statusOf maps error codes to HTTP statuses, once for the whole API.
func statusOf(c phonebook.Code) int {
	switch c {
	case phonebook.EInvalid, phonebook.EInvalidJSON, phonebook.EInvalidNumber:
		return http.StatusBadRequest
	case phonebook.ETooLarge:
		return http.StatusRequestEntityTooLarge
	case phonebook.EMediaType:
		return http.StatusUnsupportedMediaType
	case phonebook.ENotFound, phonebook.ENotRegistered:
		return http.StatusNotFound
	case phonebook.EMethod:
		return http.StatusMethodNotAllowed
	case phonebook.EConflict, phonebook.EIdentityChanged, phonebook.ENoRescue:
		return http.StatusConflict
	case phonebook.EUnauthorized, phonebook.ECredentials, phonebook.ERescueRequired:
		return http.StatusUnauthorized
	case phonebook.EBlocked, phonebook.EMethodDisabled, phonebook.EUntrustedSource, phonebook.ENumberNotAllowed:
		return http.StatusForbidden
	case phonebook.ERateLimited:
		return http.StatusTooManyRequests
	case phonebook.EExpired:
		return http.StatusGone
	case phonebook.EUnavailable:
		return http.StatusServiceUnavailable
	}
	if s, ok := extraStatus[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// extraStatus lets other packages' codes map to statuses (RegisterCode).
var extraStatus = map[phonebook.Code]int{}

// RegisterCode maps an error code defined elsewhere to an HTTP status. Call
// it from init.
func RegisterCode(c phonebook.Code, status int) { extraStatus[c] = status }

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code       phonebook.Code `json:"code"`
	Message    string         `json:"message"`
	RetryAfter *time.Time     `json:"retry_after,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	code := phonebook.ErrorCode(err)
	d := errorDetail{Code: code, Message: phonebook.ErrorMessage(err)}
	var pe *phonebook.Error
	if errors.As(err, &pe) && !pe.RetryAfter.IsZero() {
		t := pe.RetryAfter.UTC().Truncate(time.Second)
		d.RetryAfter = &t
		secs := int(time.Until(pe.RetryAfter).Seconds()) + 1
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	writeJSON(w, statusOf(code), errorBody{Error: d})
}

// WriteError writes err as the API's error body, with the status its code
// maps to (for handlers outside this package, e.g. on the admin listener).
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

// WriteJSON writes v with the status.
func WriteJSON(w http.ResponseWriter, status int, v any) error { return writeJSON(w, status, v) }

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// DecodeJSON reads exactly one JSON object into v, refusing unknown fields,
// wrong types, trailing data, other media types and oversized bodies, each
// with its own clear error.
func DecodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		// curl -d sends application/x-www-form-urlencoded; a JSON body under
		// that label is accepted so the documented curl examples stay short.
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json") && mt != "application/x-www-form-urlencoded") {
			return phonebook.Errorf(phonebook.EMediaType, "send the body as application/json, not %q", ct)
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return jsonError(err)
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] != '{' && json.Valid(trimmed) {
		return phonebook.Errorf(phonebook.EInvalidJSON, "the body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return phonebook.Errorf(phonebook.EInvalidJSON, "the body must hold a single JSON object and nothing after it")
	}
	return nil
}

func jsonError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return phonebook.Errorf(phonebook.ETooLarge, "the body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return phonebook.Errorf(phonebook.EInvalidJSON, "the body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return phonebook.Errorf(phonebook.EInvalidJSON, "the JSON body ends too early")
	case errors.As(err, &se):
		return phonebook.Errorf(phonebook.EInvalidJSON, "the body is not valid JSON (at byte %d)", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return phonebook.Errorf(phonebook.EInvalidJSON, "the body must be a JSON object, not %s", te.Value)
		}
		return phonebook.Errorf(phonebook.EInvalidJSON, "field %q must be %s, not %s", te.Field, kindOf(te.Type.Kind().String()), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return phonebook.Errorf(phonebook.EInvalidJSON, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return phonebook.Errorf(phonebook.EInvalidJSON, "the body is not the JSON this endpoint takes: %v", err)
}

func kindOf(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int64", "int32", "uint8", "float64":
		return "a number"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return k
}

// PeerAddr returns the address of the TCP peer (never a forwarded header).
func PeerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// handle registers h for an http.ServeMux pattern with a method and an
// exact path, e.g. "POST /v1/login" or "GET /v1/media/{id}"; the mux
// matches methods (GET also answers HEAD) and {wildcards}, and ServeHTTP
// answers what it does not match with the JSON error body.
func (s *Server) handle(pattern string, h HandlerFunc) {
	if strings.HasSuffix(pattern, "/") {
		// A trailing-slash pattern would make the mux redirect /x to /x/
		// instead of answering not_found; no API route is a subtree.
		panic("api: route " + pattern + " must not end in /")
	}
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			if phonebook.ErrorCode(err) == phonebook.EInternal {
				s.log.Error("request failed", "route", routeOf(r.Pattern), "err", err)
			}
			writeError(w, err)
		}
	}))
}

// match finds the route of r: its pattern's path ("/v1/login") and the
// handler. What the mux does not route it answers itself as plain text (and
// redirects unclean paths), so those answers are made here instead, as the
// API's JSON errors: not_found, or method_not_allowed with an Allow header.
func (s *Server) match(r *http.Request) (string, HandlerFunc) {
	p := r.URL.EscapedPath()
	if strings.HasPrefix(p, "/") && path.Clean(p) == p {
		h, pattern := s.mux.Handler(r)
		if pattern != "" {
			return routeOf(pattern), func(w http.ResponseWriter, r *http.Request) error {
				s.mux.ServeHTTP(w, r)
				return nil
			}
		}
		// Not found, or found with other methods: the mux's own answer
		// says which: only a 405 lists the methods in an Allow header.
		probe := headerProbe{}
		h.ServeHTTP(probe, r)
		if allow := probe.Header().Get("Allow"); allow != "" {
			other := *r
			other.Method, _, _ = strings.Cut(allow, ", ")
			_, pattern := s.mux.Handler(&other)
			route := routeOf(pattern)
			return route, func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Allow", allow)
				return phonebook.Errorf(phonebook.EMethod, "%s does not take %s; use %s", route, r.Method, strings.ReplaceAll(allow, ", ", " or "))
			}
		}
	}
	return "unknown", func(w http.ResponseWriter, r *http.Request) error {
		return phonebook.Errorf(phonebook.ENotFound, "no endpoint %s; see docs/api.md", r.URL.Path)
	}
}

// routeOf is the path of a mux pattern, "POST /v1/login" -> "/v1/login":
// the route label of the metrics and the key of Server.bodyLimits.
func routeOf(pattern string) string {
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return "unknown"
}

// headerProbe keeps the headers a handler sets and drops its answer.
type headerProbe http.Header

func (p headerProbe) Header() http.Header       { return http.Header(p) }
func (headerProbe) WriteHeader(int)             {}
func (headerProbe) Write(b []byte) (int, error) { return len(b), nil }

// PathParam returns the value of the route's last path segment when that
// is a {wildcard} ("GET /v1/media/{id}"), else "".
func PathParam(r *http.Request) string {
	seg := r.Pattern[strings.LastIndexByte(r.Pattern, '/')+1:]
	name, ok := strings.CutPrefix(seg, "{")
	if !ok {
		return ""
	}
	name = strings.TrimSuffix(strings.TrimSuffix(name, "}"), "...")
	return r.PathValue(name)
}

// AddrKey is the network the request's peer counts as in per-address
// limits (Config.AddrPrefixes).
func (s *Server) AddrKey(r *http.Request) string {
	return s.cfg.AddrPrefixes.KeyString(PeerAddr(r))
}

// limitIP counts a request from the peer's network against a daily limit.
func (s *Server) limitIP(r *http.Request, what string, limit int) error {
	return s.limit(r, []limitSpec{{"ip:" + what + ":" + s.AddrKey(r), 24 * time.Hour, limit,
		fmt.Sprintf("too many %s requests from your network today", what)}})
}

// limitSpec is one counter a request is counted on.
type limitSpec struct {
	key    string
	window time.Duration
	max    int
	what   string // "too many ... "
}

// limit counts the request on every counter (in one store write) and
// refuses it when any is over its limit.
func (s *Server) limit(r *http.Request, specs []limitSpec) error {
	if s.counter == nil {
		return nil
	}
	hits := make([]store.CounterHit, len(specs))
	for i, l := range specs {
		hits[i] = store.CounterHit{Name: l.key, Window: l.window}
	}
	counts, resets, err := s.counter.Hits(r.Context(), hits)
	if err != nil {
		return err
	}
	for i, l := range specs {
		if counts[i] > int64(l.max) {
			return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: resets[i],
				Message: fmt.Sprintf("%s; retry after %s", l.what, resets[i].Format(time.RFC3339))}
		}
	}
	return nil
}

// attempt runs fn as one attempt on the peer network's budget of failed
// attempts. A network already over its budget is refused without running
// fn. A failure is counted after fn, and a failure counted past the limit
// is answered rate_limited instead of with fn's own error: concurrent
// attempts may all run, but at most limit of them get an informative answer
// (not_registered versus invalid_credentials...), and a burst of good
// logins from one carrier NAT is never refused for others' attempts still
// in flight.
func (s *Server) attempt(r *http.Request, what string, window time.Duration, limit int, fn func() error) error {
	if s.counter == nil {
		return fn()
	}
	key := "fail:" + what + ":" + s.AddrKey(r)
	refuse := func(reset time.Time) error {
		return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: reset,
			Message: fmt.Sprintf("too many failed %s attempts from your network; retry after %s", what, reset.Format(time.RFC3339))}
	}
	n, reset, err := s.counter.Count(r.Context(), key, window)
	if err != nil {
		return err
	}
	if n >= int64(limit) {
		return refuse(reset)
	}
	err = fn()
	switch phonebook.ErrorCode(err) {
	case "", phonebook.EInternal, phonebook.EUnavailable: // succeeded, or not the caller's failure
		return err
	}
	counts, resets, herr := s.counter.Hits(context.WithoutCancel(r.Context()), []store.CounterHit{{Name: key, Window: window}})
	if herr != nil {
		return herr
	}
	if counts[0] > int64(limit) {
		return refuse(resets[0])
	}
	return err
}
