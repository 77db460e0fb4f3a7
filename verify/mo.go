package verify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/store"
)

// tokenAlphabet has no 0/O, 1/I/L: people copy tokens by hand.
const tokenAlphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

const tokenLen = 6

// TokenStarted is the answer to a method C start.
type TokenStarted struct {
	ID          string    `json:"id"`
	PollSecret  string    `json:"poll_secret"`
	Token       string    `json:"token"`
	ShortNumber string    `json:"short_number"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// StartMO issues a one-time token for identity (method C). The handset texts
// the token to the short number; the client polls with id and poll secret.
func (s *Service) StartMO(ctx context.Context, id phonebook.Identity, ip string) (ts TokenStarted, err error) {
	defer func() { s.starts.WithLabelValues("mo", outcome(err)).Inc() }()
	if err := id.Validate(); err != nil {
		return TokenStarted{}, err
	}
	if s.cfg.ShortNumber == "" {
		return TokenStarted{}, phonebook.Errorf(phonebook.EMethodDisabled, "verification by inbound SMS is not configured (verify.short_number)")
	}
	n, reset, err := s.db.Hit(ctx, "verify_mo_ip:"+ip, time.Hour)
	if err != nil {
		return TokenStarted{}, err
	}
	if n > int64(s.cfg.MaxTokensPerIPHour) {
		return TokenStarted{}, &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: reset,
			Message: fmt.Sprintf("too many verification requests from your address; retry after %s", reset.Format(time.RFC3339))}
	}
	now := time.Now().UTC()
	for attempt := 0; attempt < 5; attempt++ {
		tok, err := randomToken()
		if err != nil {
			return TokenStarted{}, err
		}
		tid, err := randomID(12)
		if err != nil {
			return TokenStarted{}, err
		}
		poll, err := randomID(24)
		if err != nil {
			return TokenStarted{}, err
		}
		ph := sha256.Sum256([]byte(poll))
		t := store.VerifyToken{ID: tid, TokenMAC: s.mac("token", tok), PollHash: ph[:], DeviceID: id.DeviceID, SIMID: id.SIMID,
			CreatedAt: now, ExpiresAt: now.Add(s.cfg.TokenTTL)}
		err = s.db.PutVerifyToken(ctx, t)
		if phonebook.ErrorCode(err) == phonebook.EConflict {
			continue // the same token is live for someone else: draw again
		}
		if err != nil {
			return TokenStarted{}, err
		}
		return TokenStarted{ID: tid, PollSecret: poll, Token: s.cfg.TokenPrefix + " " + tok,
			ShortNumber: s.cfg.ShortNumber, ExpiresAt: t.ExpiresAt.Truncate(time.Second)}, nil
	}
	return TokenStarted{}, fmt.Errorf("verify: could not draw a unique token")
}

// HandleMO takes an inbound SMS. When its text carries a live token and it
// was sent to the short number, the sender's number is proven for the
// token's identity. It reports whether the SMS was a method C token; unknown,
// reused and expired tokens are not errors (the SMS is acknowledged and
// counted).
func (s *Service) HandleMO(ctx context.Context, from phonebook.MSISDN, to, text string) (bool, error) {
	tok, ok := s.parseToken(text)
	if !ok {
		s.mo.WithLabelValues("not_a_token").Inc()
		return false, nil
	}
	if s.cfg.ShortNumber != "" && !strings.HasPrefix(strings.TrimPrefix(to, "+"), strings.TrimPrefix(s.cfg.ShortNumber, "+")) {
		s.mo.WithLabelValues("wrong_destination").Inc()
		s.log.Warn("token SMS sent to another number", "to", to)
		return false, nil
	}
	proven, err := s.db.ProveToken(ctx, s.mac("token", tok), from, time.Now())
	if err != nil {
		return true, err
	}
	if !proven {
		s.mo.WithLabelValues("unknown_or_used").Inc()
		s.log.Info("inbound SMS with an unknown, used or expired token", "from", from)
		return true, nil
	}
	s.mo.WithLabelValues("proven").Inc()
	s.log.Info("number proven by inbound SMS, waiting for the client to claim", "number", from)
	return true, nil
}

// parseToken finds "PB 7KF3Q9" in free text, whatever the case and spacing
// ("pb7kf3q9", "PB-7KF 3Q9").
func (s *Service) parseToken(text string) (string, bool) {
	var b strings.Builder
	for _, r := range strings.ToUpper(text) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	t := b.String()
	prefix := strings.ToUpper(s.cfg.TokenPrefix)
	i := strings.Index(t, prefix)
	if i < 0 {
		return "", false
	}
	t = t[i+len(prefix):]
	if len(t) < tokenLen {
		return "", false
	}
	t = t[:tokenLen]
	for _, r := range t {
		if !strings.ContainsRune(tokenAlphabet, r) {
			return "", false
		}
	}
	return t, true
}

// PollResult is what a poll returns: pending, or the credentials once.
type PollResult struct {
	State string `json:"state"` // pending or proven
	accounts.Credentials
	ExpiresAt time.Time `json:"expires_at"`
}

// pollInterval is how often a waiting poll reads the token's state.
const pollInterval = 500 * time.Millisecond

// Poll waits up to wait for the token to be proven and then, exactly once,
// proves the number for the token's identity and returns the credentials.
// The token is claimed for the proof, and given back when the proof fails
// (a blocked account, the store down), so that a later poll can try again
// instead of starting over. Polls that wait are bounded: one per token and
// MaxPollers in all on this node; one more is answered rate_limited.
func (s *Service) Poll(ctx context.Context, id, pollSecret string, wait time.Duration) (PollResult, error) {
	if wait > 30*time.Second {
		wait = 30 * time.Second
	}
	busy := func(what string) error {
		return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: time.Now().Add(time.Second),
			Message: what + "; poll again in a second"}
	}
	s.pollMu.Lock()
	if s.polling[id] {
		s.pollMu.Unlock()
		return PollResult{}, busy("another poll of this verification is waiting")
	}
	select {
	case s.pollers <- struct{}{}:
	default:
		s.pollMu.Unlock()
		return PollResult{}, busy("too many polls are waiting on this server")
	}
	s.polling[id] = true
	s.pollMu.Unlock()
	defer func() {
		s.pollMu.Lock()
		delete(s.polling, id)
		<-s.pollers
		s.pollMu.Unlock()
	}()
	deadline := time.Now().Add(wait)
	for {
		t, err := s.db.VerifyToken(ctx, id)
		if phonebook.ErrorCode(err) == phonebook.ENotFound {
			return PollResult{}, phonebook.Errorf(phonebook.ENotFound, "no verification %q", id)
		}
		if err != nil {
			return PollResult{}, err
		}
		ph := sha256.Sum256([]byte(pollSecret))
		if subtle.ConstantTimeCompare(ph[:], t.PollHash) != 1 {
			return PollResult{}, phonebook.Errorf(phonebook.EUnauthorized, "the poll secret is wrong")
		}
		switch t.State {
		case store.TokenClaimed:
			return PollResult{}, phonebook.Errorf(phonebook.EExpired, "the credentials for this verification were already handed out")
		case store.TokenProven:
			won, err := s.db.ClaimToken(ctx, id)
			if err != nil {
				return PollResult{}, err
			}
			if !won {
				return PollResult{}, phonebook.Errorf(phonebook.EExpired, "the credentials for this verification were already handed out")
			}
			creds, err := s.prover.Prove(ctx, t.Number, phonebook.Identity{DeviceID: t.DeviceID, SIMID: t.SIMID}, accounts.MethodMO)
			if err != nil {
				if uerr := s.db.UnclaimToken(context.WithoutCancel(ctx), id); uerr != nil {
					s.log.Warn("give back a method C token after a failed proof", "id", id, "err", uerr)
				}
				return PollResult{}, err
			}
			return PollResult{State: "proven", Credentials: creds, ExpiresAt: t.ExpiresAt}, nil
		}
		if time.Now().After(t.ExpiresAt) {
			return PollResult{}, phonebook.Errorf(phonebook.EExpired, "the token has expired; start again")
		}
		if !time.Now().Before(deadline) {
			return PollResult{State: "pending", ExpiresAt: t.ExpiresAt}, nil
		}
		select {
		case <-ctx.Done():
			return PollResult{}, ctx.Err()
		case <-time.After(min(pollInterval, time.Until(deadline))):
		}
	}
}

func randomToken() (string, error) {
	b := make([]byte, tokenLen)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	out := make([]byte, tokenLen)
	// 256 is not a multiple of 31: reject bytes past the last full multiple so
	// every symbol is equally likely.
	limit := byte(256 - 256%len(tokenAlphabet))
	for i := 0; i < tokenLen; {
		if b[i] < limit {
			out[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
			i++
			continue
		}
		if _, err := rand.Read(b[i : i+1]); err != nil {
			return "", err
		}
	}
	return string(out), nil
}
