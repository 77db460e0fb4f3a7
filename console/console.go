// Package console is the operators' web console on the admin listener:
// an overview of the SMSC links, the SMS outbox, the relay's connections,
// logins, verifications and rate-limit refusals, updated live with
// server-sent events; a page per number (account, sessions, live
// connections, recent SMS with their receipts, the audit trail); and the
// actions block, unblock, revoke sessions and resend a failed SMS, each
// confirmed first and written to the audit log. Pages are rendered on the
// server from templates embedded in the binary; the only script is a small
// file that applies the live updates. Every path needs the admin token: as
// a bearer token, or through a sign-in form that sets a session cookie.
package console

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/store"
)

// Prefix is where the console is mounted on the admin listener.
const Prefix = "/console/"

// Store is what the console reads and writes in the store (*store.DB).
type Store interface {
	User(ctx context.Context, n phonebook.MSISDN) (*store.User, error)
	Sessions(ctx context.Context, n phonebook.MSISDN, limit int) ([]store.Session, error)
	RecentSMS(ctx context.Context, n phonebook.MSISDN, limit int) ([]store.SMSWithParts, error)
	GetSMS(ctx context.Context, id int64) (store.SMS, []store.SMSPart, error)
	SMSOverview(ctx context.Context, since time.Time) (store.OutboxOverview, error)
	SMSOptOuts(ctx context.Context, n phonebook.MSISDN, limit int) ([]store.SMSOptOut, error)
	AddAudit(ctx context.Context, e store.AuditEntry) error
	Audit(ctx context.Context, target string, limit int) ([]store.AuditEntry, error)
}

// Accounts blocks, unblocks and revokes (*accounts.Service, which also tells
// the relay to close the connections of revoked sessions).
type Accounts interface {
	Block(ctx context.Context, n phonebook.MSISDN) (int64, error)
	Unblock(ctx context.Context, n phonebook.MSISDN) error
	RevokeSessions(ctx context.Context, n phonebook.MSISDN) (int64, error)
}

// Outbox queues an SMS again (*smsc.Outbox).
type Outbox interface {
	Enqueue(ctx context.Context, s smsc.SMS) (int64, error)
}

// Services are the parts of the server the console shows and acts on.
// Links, Connections and Metrics may be nil.
type Services struct {
	Store       Store
	Accounts    Accounts
	Outbox      Outbox
	Links       func() []smsc.LinkState
	Connections func() []relay.ConnInfo // the whole cluster's, from any node
	Metrics     prometheus.Gatherer     // this node's registry
}

// Config tunes the console. Zero values mean the defaults in brackets.
type Config struct {
	// Token is admin.token. Without one the console is off: every path
	// answers 401 and says so.
	Token    string
	Node     string        // this node's name, shown in the header
	Region   string        // for numbers typed in national format ["CN"]
	Interval time.Duration // live updates and metric samples [2s]
	// OutboxEvery is how often the outbox is counted, however many
	// consoles are open: the counts read the outbox's indexes [10s].
	OutboxEvery time.Duration
	// SessionTTL is how long a sign-in lasts [12h].
	SessionTTL time.Duration
	// MaxStreams bounds the live-update streams open at once [64].
	MaxStreams int
}

func (c *Config) defaults() {
	if c.Region == "" {
		c.Region = "CN"
	}
	if c.Interval <= 0 {
		c.Interval = 2 * time.Second
	}
	if c.OutboxEvery <= 0 {
		c.OutboxEvery = 10 * time.Second
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 64
	}
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console is the console's http.Handler; mount it at Prefix.
type Console struct {
	cfg  Config
	svc  Services
	log  *slog.Logger
	mux  *http.ServeMux
	tmpl map[string]*template.Template

	auth    *authenticator
	sampler *sampler
	streams chan struct{} // one token per open live-update stream

	outboxMu sync.Mutex // guards the last outbox overview and its time
	outbox   store.OutboxOverview
	outboxAt time.Time

	done     chan struct{}
	stopOnce sync.Once
}

// New builds the console. Start must run for the live counters to move.
func New(cfg Config, svc Services, log *slog.Logger) (*Console, error) {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Console{
		cfg: cfg, svc: svc, log: log.With("component", "console"),
		auth:    newAuthenticator(cfg.Token, cfg.SessionTTL, rate.NewLimiter(rate.Every(time.Second), 10)),
		sampler: newSampler(svc.Metrics, 64),
		streams: make(chan struct{}, cfg.MaxStreams),
		done:    make(chan struct{}),
	}
	var err error
	if c.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// Start samples the metrics every Interval until ctx ends or Close.
func (c *Console) Start(ctx context.Context) {
	c.sampler.sample(time.Now())
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case now := <-t.C:
			c.sampler.sample(now)
		}
	}
}

// Close ends the live-update streams (so that the admin server's shutdown
// does not wait for them) and stops Start.
func (c *Console) Close() { c.stopOnce.Do(func() { close(c.done) }) }

func (c *Console) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /console/login", c.loginPage)
	m.HandleFunc("POST /console/login", c.login)
	m.Handle("POST /console/logout", c.authed(c.logout))
	m.Handle("GET /console/{$}", c.authed(c.overview))
	m.Handle("GET /console/events", c.authed(c.events))
	m.Handle("GET /console/number", c.authed(c.findNumber))
	m.Handle("GET /console/numbers/{number}", c.authed(c.numberPage))
	m.Handle("GET /console/numbers/{number}/confirm", c.authed(c.confirmPage))
	m.Handle("POST /console/numbers/{number}/actions", c.authed(c.action))
	m.Handle("GET /console/audit", c.authed(c.auditPage))
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /console/static/", c.authed(func(w http.ResponseWriter, r *http.Request, _ *operator) {
		http.StripPrefix("/console/static/", http.FileServerFS(static)).ServeHTTP(w, r)
	}))
	m.Handle("/console/", c.authed(func(w http.ResponseWriter, r *http.Request, op *operator) {
		c.fail(w, r, op, http.StatusNotFound, "not_found", "There is no console page at this address.")
	}))
	c.mux = m
}

// ServeHTTP serves the console's paths with headers that keep its pages
// out of frames, caches and other origins' scripts.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	nonce := newNonce()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-"+nonce+"'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nonceKey{}, nonce)))
}

type nonceKey struct{}

func newNonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func nonceOf(r *http.Request) string {
	s, _ := r.Context().Value(nonceKey{}).(string)
	return s
}
