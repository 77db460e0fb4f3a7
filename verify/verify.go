// Package verify proves phone numbers through the operator's SMS network:
// method A sends a code by SMS that the user types back; method C has the
// handset text a one-time token to the SP short number, and the number is
// taken from the SMS source address. Both end in accounts' one proving step.
package verify

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/store"
)

// Prover is the one step every method ends in; *accounts.Service has it.
type Prover interface {
	Prove(ctx context.Context, n phonebook.MSISDN, id phonebook.Identity, m accounts.Method) (accounts.Credentials, error)
}

// SMSSender hands a text to the durable SMS outbox.
type SMSSender interface {
	SendSMS(ctx context.Context, to phonebook.MSISDN, text string) error
}

// Config holds the verification rules. Zero values mean the defaults.
type Config struct {
	CodeTTL            time.Duration   // default 10 min
	MaxChecks          int             // per code; default 5
	ResendWaits        []time.Duration // default 1, 2, 5, 10 min
	Template           string          // must contain {code}
	MaxPerNumberDay    int             // codes sent per number per day; default 10
	MaxPerIPHour       int             // starts per client IP per hour; default 100
	MaxPerPrefixHour   int             // starts per country code + 4 digits per hour; default 1000
	AllowCountries     []string        // ISO regions; empty = all
	DenyCountries      []string        // ISO regions
	ShortNumber        string          // SP short number for method C
	TokenTTL           time.Duration   // default 10 min
	TokenPrefix        string          // default "PB"
	MaxTokensPerIPHour int             // default 100
	// MaxPollers bounds the method C polls waiting at once on this node
	// (each reads the store twice a second); one more is answered
	// rate_limited. Default 128.
	MaxPollers int
	// SecretKey, when set, is the HMAC key for codes and tokens; otherwise a
	// random key is generated once and kept in the store, shared by every
	// node. Changing it invalidates pending codes and tokens.
	SecretKey string
}

// DefaultConfig returns the values a zero Config stands for.
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

// Validate reports what New refuses.
func (c Config) Validate() error {
	if c.SecretKey != "" && len(c.SecretKey) < 16 {
		return fmt.Errorf("verify: secret_key must be at least 16 characters (or empty: a key is generated and kept in the store)")
	}
	if c.Template != "" && !strings.Contains(c.Template, "{code}") {
		return fmt.Errorf("verify: template must contain {code}")
	}
	return nil
}

func (c *Config) fill() {
	if c.CodeTTL <= 0 {
		c.CodeTTL = 10 * time.Minute
	}
	if c.MaxChecks <= 0 {
		c.MaxChecks = 5
	}
	if len(c.ResendWaits) == 0 {
		c.ResendWaits = []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute}
	}
	if c.Template == "" {
		c.Template = "Your Phonebook code is {code}. It expires in 10 minutes."
	}
	if c.MaxPerNumberDay <= 0 {
		c.MaxPerNumberDay = 10
	}
	if c.MaxPerIPHour <= 0 {
		c.MaxPerIPHour = 100
	}
	if c.MaxPerPrefixHour <= 0 {
		c.MaxPerPrefixHour = 1000
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 10 * time.Minute
	}
	if c.TokenPrefix == "" {
		c.TokenPrefix = "PB"
	}
	if c.MaxTokensPerIPHour <= 0 {
		c.MaxTokensPerIPHour = 100
	}
	if c.MaxPollers <= 0 {
		c.MaxPollers = 128
	}
	for i := range c.AllowCountries {
		c.AllowCountries[i] = strings.ToUpper(c.AllowCountries[i])
	}
	for i := range c.DenyCountries {
		c.DenyCountries[i] = strings.ToUpper(c.DenyCountries[i])
	}
}

// Service runs methods A and C.
type Service struct {
	db     *store.DB
	prover Prover
	sms    SMSSender
	cfg    Config
	region string
	log    *slog.Logger
	key    []byte // HMAC key for codes and tokens, shared through the store

	pollers chan struct{}   // a place per waiting poll (MaxPollers)
	pollMu  sync.Mutex      //
	polling map[string]bool // token ids with a poll waiting on this node

	starts *prometheus.CounterVec
	checks *prometheus.CounterVec
	mo     *prometheus.CounterVec
}

// New returns the service. The HMAC key is read from (or created in) the
// store so every node agrees on it.
func New(ctx context.Context, db *store.DB, prover Prover, sms SMSSender, cfg Config, region string, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	if log == nil {
		log = slog.Default()
	}
	key := []byte(cfg.SecretKey)
	if len(key) == 0 {
		var err error
		if key, err = db.Secret(ctx, "verify_hmac"); err != nil {
			return nil, fmt.Errorf("verify: hmac key: %w", err)
		}
	}
	s := &Service{db: db, prover: prover, sms: sms, cfg: cfg, region: region, log: log, key: key,
		pollers: make(chan struct{}, cfg.MaxPollers), polling: map[string]bool{},
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_verify_starts_total", Help: "Verification starts by method and outcome.",
		}, []string{"method", "outcome"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_verify_checks_total", Help: "SMS code checks by outcome.",
		}, []string{"outcome"}),
		mo: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_verify_mo_total", Help: "Inbound SMS seen by method C, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(s.starts, s.checks, s.mo)
	}
	return s, nil
}

func (s *Service) mac(parts ...string) []byte {
	h := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

// Started is the answer to a start or resend of method A.
type Started struct {
	Number       phonebook.MSISDN `json:"number"`
	ExpiresAt    time.Time        `json:"expires_at"`
	NextResendAt time.Time        `json:"next_resend_at"`
	ChecksLeft   int              `json:"checks_left"`
}

// StartSMS sends a code to number for identity (method A). A second start for
// the same number and identity is a resend: allowed only after a growing
// wait, and it replaces that identity's code. Another identity's start
// gets its own code and leaves this one working; the per-number daily cap
// (MaxPerNumberDay) bounds both the SMS sent to a number and its pending
// codes.
func (s *Service) StartSMS(ctx context.Context, raw string, id phonebook.Identity, ip string) (st Started, err error) {
	defer func() { s.starts.WithLabelValues("sms", outcome(err)).Inc() }()
	number, err := phonebook.NormalizeMSISDN(raw, s.region)
	if err != nil {
		return Started{}, err
	}
	if err := id.Validate(); err != nil {
		return Started{}, err
	}
	if err := s.allowed(number); err != nil {
		return Started{}, err
	}
	now := time.Now().UTC()
	prev, err := s.db.VerifyCode(ctx, number, id)
	if err != nil && phonebook.ErrorCode(err) != phonebook.ENotFound {
		return Started{}, err
	}
	sends := 1
	if prev != nil {
		if now.Before(prev.NextSendAt) {
			return Started{}, &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: prev.NextSendAt,
				Message: fmt.Sprintf("a code was sent recently; you can ask for another at %s", prev.NextSendAt.Format(time.RFC3339))}
		}
		if now.Before(prev.ExpiresAt.Add(s.cfg.ResendWaits[len(s.cfg.ResendWaits)-1])) {
			sends = prev.Sends + 1
		}
	}
	// Limits, most specific first, each counted in the store so it holds
	// across nodes.
	prefix := prefixOf(number)
	limits := []struct {
		key    string
		window time.Duration
		max    int
		what   string
	}{
		{"verify_ip:" + ip, time.Hour, s.cfg.MaxPerIPHour, "verification requests from your address"},
		{"verify_num:" + string(number), 24 * time.Hour, s.cfg.MaxPerNumberDay, "codes sent to this number today"},
		{"verify_prefix:" + prefix, time.Hour, s.cfg.MaxPerPrefixHour, "codes sent to numbers starting " + prefix},
	}
	hits := make([]store.CounterHit, len(limits))
	for i, l := range limits {
		hits[i] = store.CounterHit{Name: l.key, Window: l.window}
	}
	counts, resets, err := s.db.Hits(ctx, hits)
	if err != nil {
		return Started{}, err
	}
	for i, l := range limits {
		if counts[i] > int64(l.max) {
			return Started{}, &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: resets[i],
				Message: fmt.Sprintf("too many %s; retry after %s", l.what, resets[i].Format(time.RFC3339))}
		}
	}
	code, err := randomCode()
	if err != nil {
		return Started{}, err
	}
	wait := s.cfg.ResendWaits[min(sends-1, len(s.cfg.ResendWaits)-1)]
	v := store.VerifyCode{Number: number, DeviceID: id.DeviceID, SIMID: id.SIMID,
		CodeMAC: s.mac("code", string(number), code), CreatedAt: now, ExpiresAt: now.Add(s.cfg.CodeTTL),
		Sends: sends, NextSendAt: now.Add(wait)}
	if err := s.db.PutVerifyCode(ctx, v); err != nil {
		return Started{}, err
	}
	text := strings.ReplaceAll(s.cfg.Template, "{code}", code)
	if err := s.sms.SendSMS(ctx, number, text); err != nil {
		s.db.DeleteVerifyCode(ctx, number, id)
		return Started{}, fmt.Errorf("verify: queue code SMS: %w", err)
	}
	s.log.Info("verification code queued", "number", number, "send", sends)
	return Started{Number: number, ExpiresAt: v.ExpiresAt.Truncate(time.Second), NextResendAt: v.NextSendAt.Truncate(time.Second), ChecksLeft: s.cfg.MaxChecks}, nil
}

// CheckSMS checks a code typed back by the user. Each code allows MaxChecks
// checks; after that even the right code fails. A check counts against the
// code of the identity that checks: another identity's checks, right code
// or not, never spend the victim's.
func (s *Service) CheckSMS(ctx context.Context, raw string, id phonebook.Identity, code string) (creds accounts.Credentials, err error) {
	defer func() { s.checks.WithLabelValues(outcome(err)).Inc() }()
	number, err := phonebook.NormalizeMSISDN(raw, s.region)
	if err != nil {
		return accounts.Credentials{}, err
	}
	if err := id.Validate(); err != nil {
		return accounts.Credentials{}, err
	}
	code = strings.TrimSpace(code)
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return accounts.Credentials{}, phonebook.Errorf(phonebook.EInvalid, "the code is 6 digits")
	}
	v, ok, err := s.db.CountVerifyCheck(ctx, number, id, s.cfg.MaxChecks)
	if phonebook.ErrorCode(err) == phonebook.ENotFound {
		return accounts.Credentials{}, phonebook.Errorf(phonebook.ENotFound, "no code is pending for %s on this phone and SIM; start verification first", number)
	}
	if err != nil {
		return accounts.Credentials{}, err
	}
	if time.Now().After(v.ExpiresAt) {
		return accounts.Credentials{}, phonebook.Errorf(phonebook.EExpired, "the code has expired; ask for a new one")
	}
	if !ok {
		return accounts.Credentials{}, &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: v.NextSendAt,
			Message: fmt.Sprintf("too many wrong codes; ask for a new code after %s", v.NextSendAt.Format(time.RFC3339))}
	}
	// The code is the identity's own (the row is keyed by it).
	if subtle.ConstantTimeCompare(s.mac("code", string(number), code), v.CodeMAC) != 1 {
		left := s.cfg.MaxChecks - v.Checks
		return accounts.Credentials{}, phonebook.Errorf(phonebook.ECredentials, "the code is wrong; %d checks left", left)
	}
	if deleted, err := s.db.DeleteVerifyCode(ctx, number, id); err != nil {
		return accounts.Credentials{}, err
	} else if !deleted {
		// A concurrent check used the code first.
		return accounts.Credentials{}, phonebook.Errorf(phonebook.EExpired, "the code was already used")
	}
	creds, err = s.prover.Prove(ctx, number, id, accounts.MethodSMS)
	if err == nil {
		// The number is proven: other identities' codes for it are moot.
		if derr := s.db.DeleteVerifyCodes(ctx, number); derr != nil {
			s.log.Warn("delete a proven number's other codes", "number", number, "err", derr)
		}
	}
	return creds, err
}

// allowed applies the country allow and deny lists (SMS-pumping defence).
func (s *Service) allowed(n phonebook.MSISDN) error {
	region := phonebook.RegionOf(n)
	if slices.Contains(s.cfg.DenyCountries, region) ||
		(len(s.cfg.AllowCountries) > 0 && !slices.Contains(s.cfg.AllowCountries, region)) {
		return phonebook.Errorf(phonebook.ENumberNotAllowed, "this server does not send codes to numbers in %s", regionName(region))
	}
	return nil
}

func regionName(r string) string {
	if r == "" {
		return "that region"
	}
	return r
}

// prefixOf is country code + the next 4 digits, the unit SMS-pumping fraud
// rotates numbers within.
func prefixOf(n phonebook.MSISDN) string {
	cc := fmt.Sprint(phonebook.CountryCode(n))
	end := 1 + len(cc) + 4
	if end > len(n) {
		end = len(n)
	}
	return string(n[:end])
}

func randomCode() (string, error) {
	v, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%06d", v.Int64()), nil
}

func randomID(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return string(phonebook.ErrorCode(err))
}
