package storetest

import (
	"context"
	"strings"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// SeedUsers inserts registered users straight into the users table with
// dummy identities, in multi-row INSERTs, for tests and benchmarks of code
// that only reads users (contacts matching, presence). It is not how
// accounts are made.
func SeedUsers(ctx context.Context, db *store.DB, numbers ...phonebook.MSISDN) error {
	const per = 500
	for start := 0; start < len(numbers); start += per {
		part := numbers[start:min(start+per, len(numbers))]
		vals := make([]string, len(part))
		args := make([]any, 0, len(part)*8)
		for i, n := range part {
			vals[i] = "(?, ?, ?, ?, ?, ?, ?, ?)"
			args = append(args, string(n), "imei-seed", "sim-seed", []byte("0123456789abcdef0123456789abcdef"), 1, 1, 1, "seed")
		}
		_, err := db.SQL().ExecContext(ctx, "INSERT INTO users (number, device_id, sim_id, device_key_hash, created_at, updated_at, valid, proven_by) VALUES "+
			strings.Join(vals, ","), args...)
		if err != nil {
			return err
		}
	}
	return nil
}

// Users is SeedUsers for tests: it fails the test on error.
func Users(t testing.TB, db *store.DB, numbers ...phonebook.MSISDN) {
	t.Helper()
	if err := SeedUsers(context.Background(), db, numbers...); err != nil {
		t.Fatalf("seed users: %v", err)
	}
}
