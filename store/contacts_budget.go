package store

// This file holds the lookup budget: the per-owner token bucket that limits
// how many numbers new to an owner's contact list a sync may look up.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/phonebook/phonebook"
)

// LookupBudget is the anti-enumeration token bucket: each number new to an
// owner's contact list takes one token; the bucket holds Capacity tokens and
// refills RefillPerSecond. Capacity 0 disables it.
type LookupBudget struct {
	Capacity        int64
	RefillPerSecond float64
}

// lockBudget creates the owner's bucket row if missing (full), locks it and
// returns its state.
func (d *DB) lockBudget(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN, b LookupBudget, t time.Time) (int64, time.Time, error) {
	ins := "INSERT INTO lookup_budget (owner, tokens_milli, updated_at) VALUES (?, ?, ?) ON CONFLICT (owner) DO NOTHING"
	sel := "SELECT tokens_milli, updated_at FROM lookup_budget WHERE owner = ?"
	if d.dialect == MySQL {
		ins = "INSERT INTO lookup_budget (owner, tokens_milli, updated_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE owner = owner"
		sel += " FOR UPDATE"
	}
	if _, err := tx.ExecContext(ctx, ins, owner, b.Capacity*1000, t.UnixMicro()); err != nil {
		return 0, time.Time{}, err
	}
	var milli, at int64
	if err := tx.QueryRowContext(ctx, sel, owner).Scan(&milli, &at); err != nil {
		return 0, time.Time{}, formatError(err)
	}
	return milli, time.UnixMicro(at).UTC(), nil
}

// chargeBudget takes need tokens or fails with ERateLimited and the time the
// bucket will hold them.
func (d *DB) chargeBudget(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN, b LookupBudget, milli int64, at time.Time, need int64, t time.Time) error {
	if b.Capacity <= 0 || need == 0 {
		return nil
	}
	perMicro := b.RefillPerSecond * 1000 / 1e6
	level := b.level(milli, at, t)
	needMilli := float64(need * 1000)
	if level < needMilli {
		short := needMilli - level
		e := phonebook.Errorf(phonebook.ERateLimited,
			"this sync looks up %d new numbers; %d more may be looked up now", need, int64(level/1000))
		if need > b.Capacity {
			e.Message = fmt.Sprintf("this sync looks up %d new numbers; at most %d may be looked up at once", need, b.Capacity)
			short = float64(b.Capacity*1000) - level
		}
		if perMicro > 0 {
			e.RetryAfter = t.Add(time.Duration(math.Ceil(short/perMicro)) * time.Microsecond)
		} else {
			e.RetryAfter = t.Add(24 * time.Hour)
		}
		return e
	}
	_, err := tx.ExecContext(ctx, "UPDATE lookup_budget SET tokens_milli = ?, updated_at = ? WHERE owner = ?",
		int64(level-needMilli), t.UnixMicro(), owner)
	return err
}

// LookupTokens reports the owner's bucket level now (for tests and admin).
func (d *DB) LookupTokens(ctx context.Context, owner phonebook.MSISDN, b LookupBudget) (int64, error) {
	var milli, at int64
	err := d.db.QueryRowContext(ctx, "SELECT tokens_milli, updated_at FROM lookup_budget WHERE owner = ?", owner).Scan(&milli, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return b.Capacity, nil
	}
	if err != nil {
		return 0, err
	}
	return int64(b.level(milli, time.UnixMicro(at), now()) / 1000), nil
}

// level is the bucket's content in milli-tokens at t, refilled since at.
func (b LookupBudget) level(milli int64, at, t time.Time) float64 {
	elapsed := t.Sub(at).Microseconds()
	if elapsed < 0 {
		elapsed = 0 // another node's clock ran ahead; never refill backwards
	}
	return math.Min(float64(b.Capacity*1000), float64(milli)+float64(elapsed)*b.RefillPerSecond/1000)
}
