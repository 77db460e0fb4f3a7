// Package accounts owns users, device credentials and sessions: the patent's
// registration and login unit (622, steps S106–S112). Every way of proving a
// phone number (SMS code, inbound SMS, client assertion, operator header,
// rescue password) ends in the same step, Prove: "this number is proven for
// this identity", which creates the user or replaces their identity.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// Method names how a number was proven.
type Method string

const (
	MethodSMS    Method = "sms"    // A: code sent by SMS, typed back
	MethodClient Method = "client" // B: number asserted by the client
	MethodMO     Method = "mo"     // C: inbound SMS carrying a token
	MethodHeader Method = "header" // D: operator gateway header
	MethodRescue Method = "rescue" // rescue password on a new phone or SIM
)

// Config holds the account rules. Zero values mean the defaults.
type Config struct {
	DefaultRegion        string        // region for national-format numbers; default "CN"
	SessionTTL           time.Duration // default 30 days
	LoginFailuresPerHour int           // wrong device keys per number per hour; default 20
	RescueFailuresPerDay int           // wrong rescue passwords per number per day, per budget; default 10
	// RescueHashSlots bounds the rescue-password hashes (argon2id, 19 MiB
	// each) computed at once; RescueHashQueue the checks waiting for a
	// slot, beyond which a check is refused with rate_limited. Defaults 2
	// and 32: at most 2 x 19 MiB however many guesses arrive together.
	RescueHashSlots   int
	RescueHashQueue   int
	TrustClientNumber bool // method B
	TrustedProxies    []netip.Prefix
	// RecycleAfter: a number proven with a new SIM after its user has
	// been inactive this long is taken to belong to a new subscriber (see
	// store.DB.BindIdentity). 0: never.
	RecycleAfter time.Duration
	// Now is the clock the recycling decision reads (nil: time.Now);
	// tests move it instead of sleeping.
	Now func() time.Time
}

// DefaultConfig returns the values a zero Config stands for.
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

func (c *Config) fill() {
	if c.DefaultRegion == "" {
		c.DefaultRegion = phonebook.DefaultRegion
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 30 * 24 * time.Hour
	}
	if c.LoginFailuresPerHour <= 0 {
		c.LoginFailuresPerHour = 20
	}
	if c.RescueFailuresPerDay <= 0 {
		c.RescueFailuresPerDay = 10
	}
	if c.RescueHashSlots <= 0 {
		c.RescueHashSlots = 2
	}
	if c.RescueHashQueue <= 0 {
		c.RescueHashQueue = 32
	}
}

// Service is the account service. It is safe for concurrent use.
type Service struct {
	db       *store.DB
	cfg      Config
	log      *slog.Logger
	logins   *prometheus.CounterVec
	proofs   *prometheus.CounterVec
	recycled prometheus.Counter
	storeMs  *prometheus.HistogramVec
	hashes   *hashGate

	registered atomic.Pointer[func(context.Context, phonebook.MSISDN)]
	revoked    atomic.Pointer[func(context.Context, phonebook.MSISDN)]
}

// OnSessionsRevoked sets a function called after sessions of a number were
// revoked here (a known number proven again, logout), e.g. so that the
// relay closes connections that logged in with them (relay.Server.Recheck).
// Revocations by other processes (`phonebook admin user block`) and expiry
// are found by the relay's periodic check instead. It runs on the request's
// goroutine and should not block for long.
func (s *Service) OnSessionsRevoked(fn func(ctx context.Context, number phonebook.MSISDN)) {
	s.revoked.Store(&fn)
}

func (s *Service) sessionsRevoked(ctx context.Context, number phonebook.MSISDN) {
	if fn := s.revoked.Load(); fn != nil && *fn != nil {
		(*fn)(ctx, number)
	}
}

// InvalidTokenHashes returns the token hashes (phonebook.TokenHash) among
// hashes whose tokens no longer authenticate: unknown, revoked, expired, or
// of a blocked user (relay.TokenChecker).
func (s *Service) InvalidTokenHashes(ctx context.Context, hashes [][]byte) ([][]byte, error) {
	valid, err := s.db.ValidSessions(ctx, hashes, time.Now())
	if err != nil {
		return nil, err
	}
	var invalid [][]byte
	for _, h := range hashes {
		if !valid[string(h)] {
			invalid = append(invalid, h)
		}
	}
	return invalid, nil
}

// OnRegistered sets a function called after a number becomes a new user
// (not when a known number is proven again), e.g. to tell the contacts
// service so that those who have the number learn it joined. It runs on
// the registering request's goroutine and should not block.
func (s *Service) OnRegistered(fn func(ctx context.Context, number phonebook.MSISDN)) {
	s.registered.Store(&fn)
}

// New returns the service. reg may be nil.
func New(db *store.DB, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Service {
	cfg.fill()
	if log == nil {
		log = slog.Default()
	}
	s := &Service{
		db:  db,
		cfg: cfg,
		log: log,
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_logins_total", Help: "Login attempts by outcome (ok or error code).",
		}, []string{"outcome"}),
		proofs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_registrations_total", Help: "Number proofs (registrations) by method and outcome.",
		}, []string{"method", "outcome"}),
		recycled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phonebook_numbers_recycled_total",
			Help: "Numbers proven with a new SIM after registration.recycle_after of inactivity: accounts started again.",
		}),
		storeMs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "phonebook_store_seconds", Help: "Store call latency by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"op"}),
	}
	s.hashes = newHashGate(cfg.RescueHashSlots, cfg.RescueHashQueue)
	if reg != nil {
		reg.MustRegister(s.logins, s.proofs, s.recycled, s.storeMs, s.hashes.checks, s.hashes.refused)
	}
	return s
}

// Config returns the effective configuration.
func (s *Service) Config() Config { return s.cfg }

// Normalize normalises a number in the configured default region.
func (s *Service) Normalize(raw string) (phonebook.MSISDN, error) {
	return phonebook.NormalizeMSISDN(raw, s.cfg.DefaultRegion)
}

func (s *Service) timed(op string) func() {
	t := time.Now()
	return func() { s.storeMs.WithLabelValues(op).Observe(time.Since(t).Seconds()) }
}

// Credentials are returned once, when a number is proven for an identity.
// The device key is never stored; the client keeps it and presents it at
// every login.
type Credentials struct {
	Number    phonebook.MSISDN `json:"number"`
	DeviceKey string           `json:"device_key"`
	Created   bool             `json:"created"`
	// Recycled: the number had a user, inactive for longer than
	// registration.recycle_after, with another SIM; the account was started
	// again (Created is true too) and the previous user's data deleted.
	Recycled bool `json:"recycled,omitempty"`
}

// Prove is the one step every registration method ends in: number is proven
// for identity. A new number gets a user; a known number gets its identity and
// device key replaced and its old sessions revoked. Blocked accounts stay
// blocked. A known number proven with another SIM after RecycleAfter without
// a login has a new subscriber: its account starts again (Recycled), unless
// the proof is the rescue password, which only the previous user knows.
func (s *Service) Prove(ctx context.Context, number phonebook.MSISDN, id phonebook.Identity, m Method) (creds Credentials, err error) {
	defer func() { s.proofs.WithLabelValues(string(m), outcome(err)).Inc() }()
	if err := id.Validate(); err != nil {
		return Credentials{}, err
	}
	u, err := s.db.User(ctx, number)
	if err != nil && phonebook.ErrorCode(err) != phonebook.ENotFound {
		return Credentials{}, err
	}
	if u != nil && !u.Valid {
		return Credentials{}, phonebook.Errorf(phonebook.EBlocked, "the account for %s is blocked", number)
	}
	key, hash := newSecret()
	var recycleBefore time.Time
	if s.cfg.RecycleAfter > 0 && m != MethodRescue { // the rescue password proves the same person
		now := time.Now
		if s.cfg.Now != nil {
			now = s.cfg.Now
		}
		recycleBefore = now().Add(-s.cfg.RecycleAfter)
	}
	created, recycled, err := s.db.BindIdentity(ctx, number, id, hash, string(m), recycleBefore)
	if err != nil {
		return Credentials{}, err
	}
	if recycled {
		s.recycled.Inc()
		s.log.Warn("number recycled: a new SIM after the user's inactivity; the previous user's data was deleted",
			"number", number, "method", m, "recycle_after", s.cfg.RecycleAfter)
	}
	s.log.Info("number proven", "number", number, "method", m, "created", created)
	if u != nil {
		s.sessionsRevoked(ctx, number) // the previous identity's, or the previous user's
	}
	if fn := s.registered.Load(); created && fn != nil && *fn != nil {
		(*fn)(ctx, number)
	}
	return Credentials{Number: number, DeviceKey: key, Created: created, Recycled: recycled}, nil
}

// RegisterClientNumber is method B: the client reads its own number from the
// phone and asserts it. Only trustworthy inside a closed operator deployment,
// so it is off unless registration.trust_client_number is set.
func (s *Service) RegisterClientNumber(ctx context.Context, raw string, id phonebook.Identity) (Credentials, error) {
	if !s.cfg.TrustClientNumber {
		s.proofs.WithLabelValues(string(MethodClient), string(phonebook.EMethodDisabled)).Inc()
		return Credentials{}, phonebook.Errorf(phonebook.EMethodDisabled,
			"registration by client-asserted number is disabled on this server (registration.trust_client_number)")
	}
	n, err := s.Normalize(raw)
	if err != nil {
		return Credentials{}, err
	}
	return s.Prove(ctx, n, id, MethodClient)
}

// RegisterHeader is method D: the operator's WAP/HTTP gateway inserted the
// number as a header. It is believed only from a trusted gateway address.
func (s *Service) RegisterHeader(ctx context.Context, peer netip.Addr, header string, id phonebook.Identity) (Credentials, error) {
	if !s.TrustedPeer(peer) {
		s.proofs.WithLabelValues(string(MethodHeader), string(phonebook.EUntrustedSource)).Inc()
		return Credentials{}, phonebook.Errorf(phonebook.EUntrustedSource,
			"the number header is accepted only from the operator gateway; %s is not a trusted proxy", peer)
	}
	if header == "" {
		return Credentials{}, phonebook.Errorf(phonebook.EInvalid, "the gateway did not insert the number header")
	}
	n, err := s.Normalize(header)
	if err != nil {
		return Credentials{}, err
	}
	return s.Prove(ctx, n, id, MethodHeader)
}

// TrustedPeer reports whether addr is inside a trusted proxy prefix.
func (s *Service) TrustedPeer(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// LoginRequest is what a client presents at login (S107).
type LoginRequest struct {
	Number         string
	Identity       phonebook.Identity
	DeviceKey      string
	RescuePassword string // required in secure mode
}

// Session is an issued login session. The token is returned once.
type Session struct {
	Number    phonebook.MSISDN `json:"number"`
	Token     string           `json:"token"`
	ExpiresAt time.Time        `json:"expires_at"`
}

// Login checks number, identity and device key (and the rescue password in
// secure mode) and issues a session token (S108–S112).
func (s *Service) Login(ctx context.Context, r LoginRequest) (sess Session, err error) {
	defer func() { s.logins.WithLabelValues(outcome(err)).Inc() }()
	number, err := s.Normalize(r.Number)
	if err != nil {
		return Session{}, err
	}
	if err := r.Identity.Validate(); err != nil {
		return Session{}, err
	}
	if r.DeviceKey == "" {
		return Session{}, phonebook.Errorf(phonebook.EInvalid, "device_key is required")
	}
	done := s.timed("user")
	u, err := s.db.User(ctx, number)
	done()
	if phonebook.ErrorCode(err) == phonebook.ENotFound {
		return Session{}, phonebook.Errorf(phonebook.ENotRegistered, "%s is not registered; prove the number first", number)
	}
	if err != nil {
		return Session{}, err
	}
	if !u.Valid {
		return Session{}, phonebook.Errorf(phonebook.EBlocked, "the account for %s is blocked", number)
	}
	// The key before the identity: without the number's device key a caller
	// learns nothing about the phone or SIM it is registered with.
	if !matchSecret(r.DeviceKey, u.DeviceKeyHash) {
		// Device keys are 256-bit random values, so guessing is hopeless; the
		// limit bounds the load a client sending wrong keys can cause, and
		// since it applies only to wrong keys nobody can lock the owner out.
		n, reset, err := s.db.Hit(ctx, "login_fail:"+string(number), time.Hour)
		if err != nil {
			return Session{}, err
		}
		if n > int64(s.cfg.LoginFailuresPerHour) {
			return Session{}, &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: reset,
				Message: fmt.Sprintf("too many wrong device keys for this number; retry after %s", reset.Format(time.RFC3339))}
		}
		return Session{}, phonebook.Errorf(phonebook.ECredentials, "the device key is wrong")
	}
	if u.DeviceID != r.Identity.DeviceID || u.SIMID != r.Identity.SIMID {
		return Session{}, phonebook.Errorf(phonebook.EIdentityChanged,
			"%s is registered with another phone or SIM; give the rescue password or prove the number again", number)
	}
	if u.SecureMode {
		if r.RescuePassword == "" {
			return Session{}, phonebook.Errorf(phonebook.ERescueRequired, "secure login mode is on: give the rescue password")
		}
		// The device key proved the registered device: its guesses have
		// their own budget, which guesses from elsewhere cannot spend.
		if err := s.checkRescue(ctx, u, r.RescuePassword, budgetOwner); err != nil {
			return Session{}, err
		}
	}
	return s.issue(ctx, number, r.Identity.DeviceID)
}

// Rescue proves a known number on a new phone or SIM with the rescue password
// (S110/S111): it replaces the identity, revokes old sessions, and returns new
// credentials and a session.
func (s *Service) Rescue(ctx context.Context, raw string, id phonebook.Identity, password string) (Credentials, Session, error) {
	number, err := s.Normalize(raw)
	if err != nil {
		return Credentials{}, Session{}, err
	}
	if err := id.Validate(); err != nil {
		return Credentials{}, Session{}, err
	}
	if password == "" {
		return Credentials{}, Session{}, phonebook.Errorf(phonebook.EInvalid, "rescue_password is required")
	}
	u, err := s.db.User(ctx, number)
	if phonebook.ErrorCode(err) == phonebook.ENotFound {
		return Credentials{}, Session{}, phonebook.Errorf(phonebook.ENotRegistered, "%s is not registered", number)
	}
	if err != nil {
		return Credentials{}, Session{}, err
	}
	if !u.Valid {
		return Credentials{}, Session{}, phonebook.Errorf(phonebook.EBlocked, "the account for %s is blocked", number)
	}
	if err := s.checkRescue(ctx, u, password, budgetAnyone); err != nil {
		return Credentials{}, Session{}, err
	}
	creds, err := s.Prove(ctx, number, id, MethodRescue)
	if err != nil {
		return Credentials{}, Session{}, err
	}
	sess, err := s.issue(ctx, number, id.DeviceID)
	return creds, sess, err
}

// rescueBudget names whose daily allowance of wrong rescue passwords a
// check spends.
type rescueBudget string

const (
	// budgetAnyone: /v1/login/rescue, from a phone or SIM the number is not
	// registered with: anyone who knows the number can try.
	budgetAnyone rescueBudget = "rescue_fail:"
	// budgetOwner: the registered device, proven by its device key (secure
	// login mode), or a logged-in session changing the password.
	budgetOwner rescueBudget = "rescue_fail_owner:"
)

// checkRescue verifies a rescue password under the daily failure limit of
// the budget. The attempt is counted before the hash is computed and given
// back when the password is right, so concurrent guesses cannot exceed the
// limit; the hash itself waits for one of a few slots (hashGate).
func (s *Service) checkRescue(ctx context.Context, u *store.User, password string, b rescueBudget) error {
	if u.RescueHash == "" {
		return phonebook.Errorf(phonebook.ENoRescue, "no rescue password is set for %s; prove the number by SMS instead", u.Number)
	}
	limit := int64(s.cfg.RescueFailuresPerDay)
	res, err := s.db.Reserve(ctx, string(b)+string(u.Number), 24*time.Hour)
	if err != nil {
		return err
	}
	if res.Count > limit {
		return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: res.ResetAt,
			Message: fmt.Sprintf("too many wrong rescue passwords for this number; retry after %s", res.ResetAt.Format(time.RFC3339))}
	}
	ok, err := s.hashes.check(ctx, password, u.RescueHash)
	if err != nil || ok {
		// Not a wrong password (the right one, or not checked at all):
		// give the attempt back. A failed release costs the owner one
		// attempt, nothing more.
		if rerr := s.db.Release(context.WithoutCancel(ctx), res); rerr != nil {
			s.log.Warn("release a rescue-password attempt", "number", u.Number, "err", rerr)
		}
		return err
	}
	if left := limit - res.Count; left > 0 {
		return phonebook.Errorf(phonebook.ECredentials, "the rescue password is wrong; %d attempts left today", left)
	}
	return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: res.ResetAt,
		Message: fmt.Sprintf("the rescue password is wrong; no attempts left until %s", res.ResetAt.Format(time.RFC3339))}
}

func (s *Service) issue(ctx context.Context, number phonebook.MSISDN, deviceID string) (Session, error) {
	token, hash := newSecret()
	t := time.Now().UTC()
	sess := store.Session{TokenHash: hash, UDPID: phonebook.UDPTokenID(hash), Number: number, DeviceID: deviceID, CreatedAt: t, ExpiresAt: t.Add(s.cfg.SessionTTL)}
	done := s.timed("record_login")
	err := s.db.RecordLogin(ctx, sess)
	done()
	if err != nil {
		return Session{}, err
	}
	return Session{Number: number, Token: token, ExpiresAt: sess.ExpiresAt.Truncate(time.Second)}, nil
}

// Principal is the authenticated caller of a session.
type Principal struct {
	Number   phonebook.MSISDN
	DeviceID string
	Token    []byte // token hash (phonebook.TokenHash), for logout
}

// Authenticate resolves a session token to its user. Unknown, expired and
// revoked tokens, and tokens of blocked users, are refused alike.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	unauth := phonebook.Errorf(phonebook.EUnauthorized, "the session token is missing, expired or revoked")
	if token == "" || len(token) > 128 {
		return Principal{}, unauth
	}
	sess, err := s.db.Session(ctx, hashSecret(token))
	return s.principal(ctx, sess, err)
}

// AuthenticateUDP resolves the public id a UDP login names its token by
// (phonebook.UDPTokenID) to its user, as Authenticate does. The
// Principal's Token, the token's hash, is what the relay checks the
// login's proof with.
func (s *Service) AuthenticateUDP(ctx context.Context, udpID []byte) (Principal, error) {
	sess, err := s.db.SessionByUDPID(ctx, udpID)
	return s.principal(ctx, sess, err)
}

func (s *Service) principal(ctx context.Context, sess *store.Session, err error) (Principal, error) {
	unauth := phonebook.Errorf(phonebook.EUnauthorized, "the session token is missing, expired or revoked")
	if phonebook.ErrorCode(err) == phonebook.ENotFound {
		return Principal{}, unauth
	}
	if err != nil {
		return Principal{}, err
	}
	if sess.Revoked || time.Now().After(sess.ExpiresAt) {
		return Principal{}, unauth
	}
	u, err := s.db.User(ctx, sess.Number)
	if err != nil {
		return Principal{}, unauth
	}
	if !u.Valid {
		return Principal{}, phonebook.Errorf(phonebook.EBlocked, "the account for %s is blocked", u.Number)
	}
	return Principal{Number: sess.Number, DeviceID: sess.DeviceID, Token: sess.TokenHash}, nil
}

// Logout revokes the caller's session.
func (s *Service) Logout(ctx context.Context, p Principal) error {
	if err := s.db.RevokeSession(ctx, p.Token); err != nil {
		return err
	}
	s.sessionsRevoked(ctx, p.Number)
	return nil
}

// SetRescue sets or changes the rescue password and the login mode. Changing
// an existing password requires the current one.
func (s *Service) SetRescue(ctx context.Context, p Principal, password, current string, secure bool) error {
	u, err := s.db.User(ctx, p.Number)
	if err != nil {
		return err
	}
	if u.RescueHash != "" {
		if current == "" {
			return phonebook.Errorf(phonebook.EInvalid, "current_password is required to change the rescue password")
		}
		if err := s.checkRescue(ctx, u, current, budgetOwner); err != nil {
			return err
		}
	}
	hash := u.RescueHash
	if password != "" {
		if n := len([]rune(password)); n < 8 || n > 128 {
			return phonebook.Errorf(phonebook.EInvalid, "the rescue password must be 8 to 128 characters")
		}
		hash = hashPassword(password)
	}
	if secure && hash == "" {
		return phonebook.Errorf(phonebook.EInvalid, "secure login mode needs a rescue password: set password too")
	}
	return s.db.SetRescue(ctx, p.Number, hash, secure)
}

// Block blocks the account and revokes its sessions, so that the relay
// disconnects it at once (OnSessionsRevoked) and every login is refused
// with account_blocked. It returns how many sessions were revoked.
func (s *Service) Block(ctx context.Context, n phonebook.MSISDN) (int64, error) {
	if err := s.db.SetValid(ctx, n, false); err != nil {
		return 0, err
	}
	return s.RevokeSessions(ctx, n)
}

// Unblock lets the account log in again (its revoked sessions stay revoked).
func (s *Service) Unblock(ctx context.Context, n phonebook.MSISDN) error {
	return s.db.SetValid(ctx, n, true)
}

// RevokeSessions ends every session of the number: its devices must log in
// again, and the relay closes their connections.
func (s *Service) RevokeSessions(ctx context.Context, n phonebook.MSISDN) (int64, error) {
	revoked, err := s.db.RevokeSessions(ctx, n)
	if err != nil {
		return 0, err
	}
	s.sessionsRevoked(ctx, n)
	return revoked, nil
}

// Delete removes the account, its sessions (the relay closes their
// connections, as after RevokeSessions), and its address book, contact
// list and status, so that whoever gets the number next cannot restore
// them.
func (s *Service) Delete(ctx context.Context, n phonebook.MSISDN) error {
	if err := s.db.DeleteUser(ctx, n); err != nil {
		return err
	}
	s.sessionsRevoked(ctx, n)
	return nil
}

// User returns the account record.
func (s *Service) User(ctx context.Context, n phonebook.MSISDN) (*store.User, error) {
	return s.db.User(ctx, n)
}

// IsRegistered reports whether the number has an account.
func (s *Service) IsRegistered(ctx context.Context, n phonebook.MSISDN) (bool, error) {
	return s.db.UserExists(ctx, n)
}

// newSecret returns a 256-bit random secret, base64url-encoded, and its
// SHA-256. Device keys and session tokens are high-entropy, so a fast hash is
// the right one: it makes a stolen table useless without costing logins.
func newSecret() (string, []byte) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	s := base64.RawURLEncoding.EncodeToString(b)
	return s, hashSecret(s)
}

func hashSecret(s string) []byte { return phonebook.TokenHash(s) }

func matchSecret(s string, hash []byte) bool {
	return subtle.ConstantTimeCompare(hashSecret(s), hash) == 1
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return string(phonebook.ErrorCode(err))
}
