package relay

import (
	"context"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
)

// AccountsAuth authenticates relay logins with the accounts service: by
// session token over TCP, by the token's public id over UDP
// (UDPAuthenticator), and checks live sessions' tokens again
// (TokenChecker), so that revoked sessions and blocked accounts are
// disconnected.
type AccountsAuth struct{ Accounts *accounts.Service }

var (
	_ Authenticator    = AccountsAuth{}
	_ TokenChecker     = AccountsAuth{}
	_ UDPAuthenticator = AccountsAuth{}
)

// Authenticate implements Authenticator.
func (a AccountsAuth) Authenticate(ctx context.Context, token string) (phonebook.MSISDN, string, error) {
	p, err := a.Accounts.Authenticate(ctx, token)
	return p.Number, p.DeviceID, err
}

// InvalidTokenHashes implements TokenChecker.
func (a AccountsAuth) InvalidTokenHashes(ctx context.Context, hashes [][]byte) ([][]byte, error) {
	return a.Accounts.InvalidTokenHashes(ctx, hashes)
}

// AuthenticateUDP implements UDPAuthenticator.
func (a AccountsAuth) AuthenticateUDP(ctx context.Context, udpID []byte) (phonebook.MSISDN, string, []byte, error) {
	p, err := a.Accounts.AuthenticateUDP(ctx, udpID)
	return p.Number, p.DeviceID, p.Token, err
}
