// Package relaytest holds real, in-memory implementations of the relay's
// dependencies for tests and benchmarks that start relays without the
// accounts service.
package relaytest

import (
	"bytes"
	"context"
	"sync"

	"github.com/phonebook/phonebook"
)

// Tokens is an Authenticator over a token table; it is also a Directory: a
// number with a token is registered.
type Tokens struct {
	mu     sync.Mutex
	tokens map[string]entry
}

type entry struct {
	number phonebook.MSISDN
	device string
}

// NewTokens returns an empty table.
func NewTokens() *Tokens { return &Tokens{tokens: map[string]entry{}} }

// Add lets token log in as number on device.
func (t *Tokens) Add(token string, n phonebook.MSISDN, device string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tokens[token] = entry{n, device}
}

// Authenticate implements relay.Authenticator.
func (t *Tokens) Authenticate(ctx context.Context, token string) (phonebook.MSISDN, string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.tokens[token]
	if !ok {
		return "", "", phonebook.Errorf(phonebook.EUnauthorized, "unknown session token")
	}
	return e.number, e.device, nil
}

// IsRegistered implements relay.Directory.
func (t *Tokens) IsRegistered(ctx context.Context, n phonebook.MSISDN) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.tokens {
		if e.number == n {
			return true, nil
		}
	}
	return false, nil
}

// Revoke makes token stop authenticating, as logout or a new login
// elsewhere does.
func (t *Tokens) Revoke(token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.tokens, token)
}

// InvalidTokenHashes implements relay.TokenChecker.
func (t *Tokens) InvalidTokenHashes(ctx context.Context, hashes [][]byte) ([][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	valid := make(map[string]bool, len(t.tokens))
	for tok := range t.tokens {
		valid[string(phonebook.TokenHash(tok))] = true
	}
	var out [][]byte
	for _, h := range hashes {
		if !valid[string(h)] {
			out = append(out, h)
		}
	}
	return out, nil
}

// AuthenticateUDP implements relay.UDPAuthenticator.
func (t *Tokens) AuthenticateUDP(ctx context.Context, udpID []byte) (phonebook.MSISDN, string, []byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for tok, e := range t.tokens {
		if h := phonebook.TokenHash(tok); bytes.Equal(phonebook.UDPTokenID(h), udpID) {
			return e.number, e.device, h, nil
		}
	}
	return "", "", nil, phonebook.Errorf(phonebook.EUnauthorized, "unknown session token")
}
