package accounts_test

import (
	"context"
	"sync"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// revocations records the numbers OnSessionsRevoked was told of.
type revocations struct {
	mu sync.Mutex
	ns []phonebook.MSISDN
}

func (r *revocations) add(_ context.Context, n phonebook.MSISDN) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ns = append(r.ns, n)
}

func (r *revocations) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ns)
}

// login registers number (header method) and logs it in: its session token.
func login(t *testing.T, acc *accounts.Service, number phonebook.MSISDN) string {
	t.Helper()
	ctx := context.Background()
	id := phonebook.Identity{DeviceID: "imei-1", SIMID: "sim-1"}
	creds, err := acc.Prove(ctx, number, id, accounts.MethodHeader)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := acc.Login(ctx, accounts.LoginRequest{Number: string(number), Identity: id, DeviceKey: creds.DeviceKey})
	if err != nil {
		t.Fatal(err)
	}
	return sess.Token
}

// The operator actions, whoever calls them (the console, `phonebook admin
// user`): a block revokes the sessions, tells the relay (OnSessionsRevoked)
// and refuses the account's tokens and logins with account_blocked; an
// unblock lets it log in again, its old sessions staying revoked; a delete
// removes the account and its sessions and tells the relay too.
func TestOperatorActions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		acc := accounts.New(db, accounts.Config{}, nil, nil)
		var rev revocations
		acc.OnSessionsRevoked(rev.add)
		const n = phonebook.MSISDN("+8613800138000")
		token := login(t, acc, n)

		revoked, err := acc.Block(ctx, n)
		if err != nil || revoked != 1 || rev.count() != 1 {
			t.Fatalf("block: %d revoked, %v; relay told %d times", revoked, err, rev.count())
		}
		if _, err := acc.Authenticate(ctx, token); phonebook.ErrorCode(err) != phonebook.EUnauthorized {
			t.Fatalf("revoked token: %v", err)
		}
		if u, err := acc.User(ctx, n); err != nil || u.Valid {
			t.Fatalf("blocked user: %+v %v", u, err)
		}
		id := phonebook.Identity{DeviceID: "imei-1", SIMID: "sim-1"}
		if _, err := acc.Prove(ctx, n, id, accounts.MethodHeader); phonebook.ErrorCode(err) != phonebook.EBlocked {
			t.Fatalf("prove while blocked: %v, want account_blocked", err)
		}

		if err := acc.Unblock(ctx, n); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Authenticate(ctx, token); phonebook.ErrorCode(err) != phonebook.EUnauthorized {
			t.Fatalf("old token after unblock: %v", err)
		}
		token = login(t, acc, n)
		if p, err := acc.Authenticate(ctx, token); err != nil || p.Number != n {
			t.Fatalf("new login after unblock: %+v %v", p, err)
		}

		before := rev.count()
		if err := acc.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
		if rev.count() != before+1 {
			t.Fatal("the relay was not told of the deleted user's sessions")
		}
		if _, err := acc.User(ctx, n); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("deleted user: %v", err)
		}
		if _, err := acc.Authenticate(ctx, token); phonebook.ErrorCode(err) != phonebook.EUnauthorized {
			t.Fatalf("deleted user's token: %v", err)
		}
		if err := acc.Delete(ctx, n); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("second delete: %v", err)
		}
		if _, err := acc.Block(ctx, n); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("block of no one: %v", err)
		}
	})
}
