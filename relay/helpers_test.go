package relay_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/relaytest"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

const (
	alice = phonebook.MSISDN("+8613800138000")
	bob   = phonebook.MSISDN("+8613900139000")
	carol = phonebook.MSISDN("+8613700137000")
)

// tokenAuth is the test's Authenticator and Directory, with alice and bob.
type tokenAuth struct{ *relaytest.Tokens }

func newTokenAuth() *tokenAuth {
	a := &tokenAuth{relaytest.NewTokens()}
	a.add("tok-alice", alice, "dev-alice")
	a.add("tok-bob", bob, "dev-bob")
	return a
}

func (a *tokenAuth) add(token string, n phonebook.MSISDN, device string) { a.Add(token, n, device) }

// recordingFallback is a real Fallback that keeps what it was given, or
// refuses it with fail's error when fail is set.
type recordingFallback struct {
	mu       sync.Mutex
	sent     []relay.FallbackSMS
	fail     func(relay.FallbackSMS) error
	attempts int
}

func (f *recordingFallback) SendSMS(ctx context.Context, sms relay.FallbackSMS) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.fail != nil {
		if err := f.fail(sms); err != nil {
			return err
		}
	}
	f.sent = append(f.sent, sms)
	return nil
}

func (f *recordingFallback) setFail(fn func(relay.FallbackSMS) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func (f *recordingFallback) tries() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

func (f *recordingFallback) all() []relay.FallbackSMS {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]relay.FallbackSMS(nil), f.sent...)
}

type env struct {
	t        *testing.T
	db       *store.DB
	srv      *relay.Server
	addr     string
	auth     *tokenAuth
	fallback *recordingFallback
	reg      *prometheus.Registry
	media    relay.Media // nil: none
}

func testConfig() relay.Config {
	return relay.Config{NodeID: "test", DefaultRegion: "CN", SendRate: 1e6, SendBurst: 1e6}
}

func start(t *testing.T, cfg relay.Config, db *store.DB) *env {
	t.Helper()
	if db == nil {
		db = storetest.SQLite(t)
	}
	e := &env{t: t, db: db, auth: newTokenAuth(), fallback: &recordingFallback{}}
	e.startServer(cfg)
	return e
}

// startWithMedia is start with a Media service built on the env's store.
func startWithMedia(t *testing.T, cfg relay.Config, db *store.DB, newMedia func(*store.DB) relay.Media) *env {
	t.Helper()
	if db == nil {
		db = storetest.SQLite(t)
	}
	e := &env{t: t, db: db, auth: newTokenAuth(), fallback: &recordingFallback{}, media: newMedia(db)}
	e.startServer(cfg)
	return e
}

func (e *env) startServer(cfg relay.Config) {
	t := e.t
	e.reg = prometheus.NewRegistry()
	srv, err := relay.NewServer(cfg, relay.Deps{Auth: e.auth, Store: e.db, Directory: e.auth, Fallback: e.fallback,
		Metrics: e.reg, Media: e.media})
	if err != nil {
		t.Fatal(err)
	}
	e.serve(srv)
}

// serve runs srv on a fresh loopback port as e's server and shuts it down
// when the test ends.
func (e *env) serve(srv *relay.Server) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go srv.Serve(ln)
	e.srv, e.addr = srv, ln.Addr().String()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
}

func (e *env) dial(token, device string, o client.Options) *client.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.Token, o.DeviceID = token, device
	c, err := client.Dial(ctx, e.addr, o)
	if err != nil {
		e.t.Fatalf("dial as %s: %v", token, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) alice(o client.Options) *client.Client { return e.dial("tok-alice", "dev-alice", o) }
func (e *env) bob(o client.Options) *client.Client   { return e.dial("tok-bob", "dev-bob", o) }

// waitFor polls cond until it holds or the test runs out of patience.
var waitFor = poll.Until

func wait(t *testing.T, p *client.Pending) (id string, state string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("SendResult of %s: %v", p.ClientMsgID, err)
	}
	return r.ServerMsgId, r.State.String()
}

func online(srv *relay.Server, n phonebook.MSISDN) int {
	k := 0
	for _, c := range srv.Connections() {
		if c.Number == n {
			k++
		}
	}
	return k
}

// counter returns the value of a counter (summed over labels) in e's registry.
func (e *env) counter(name string) float64 {
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
