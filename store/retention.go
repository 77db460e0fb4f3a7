package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CounterRetention is how long rate-limit counters are kept after their
// window started: the longest window any limit uses is a day, so a counter
// older than two is dead.
const CounterRetention = 48 * time.Hour

// Expired says how many rows DeleteExpired removed.
type Expired struct {
	Sessions      int64 // sessions past their expiry
	Verifications int64 // verification codes and method-C tokens past theirs
	Counters      int64 // rate-limit counters older than CounterRetention
}

// DeleteExpired is the retention policy: it removes what has expired at
// now: sessions, verification codes (once no resend is due either) and
// tokens, and rate-limit counters of past windows. Every node may run it
// at any time; the deletes are idempotent. Each kind is tried even when
// another failed; the errors are joined.
func (d *DB) DeleteExpired(ctx context.Context, now time.Time) (Expired, error) {
	var n Expired
	var errs []error
	del := func(what string, count *int64, q string, args ...any) {
		res, err := d.db.ExecContext(ctx, q, args...)
		if err == nil {
			var k int64
			k, err = res.RowsAffected()
			*count += k
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("store: delete expired %s: %w", what, err))
		}
	}
	del("sessions", &n.Sessions, "DELETE FROM sessions WHERE expires_at < ?", us(now))
	del("verification codes", &n.Verifications, "DELETE FROM verify_codes WHERE expires_at < ? AND next_send_at < ?", us(now), us(now))
	del("verification tokens", &n.Verifications, "DELETE FROM verify_tokens WHERE expires_at < ?", us(now))
	del("counters", &n.Counters, "DELETE FROM counters WHERE window_start < ?", us(now.Add(-CounterRetention)))
	return n, errors.Join(errs...)
}
