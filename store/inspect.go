package store

import (
	"context"
	"fmt"
	"time"

	"github.com/phonebook/phonebook"
)

// Reads for operators (the console): a number's sessions and SMS, and the
// outbox at a glance. None of them is on a hot path.

// Sessions returns the number's sessions that have not expired, newest
// first, revoked ones included (TokenHash is left empty).
func (d *DB) Sessions(ctx context.Context, number phonebook.MSISDN, limit int) ([]Session, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT device_id, created_at, expires_at, revoked FROM sessions
		WHERE number = ? AND expires_at > ? ORDER BY created_at DESC LIMIT ?`, number, us(now()), limit)
	if err != nil {
		return nil, fmt.Errorf("store: sessions: %w", err)
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		s := Session{Number: number}
		var created, expires int64
		var revoked int
		if err := rows.Scan(&s.DeviceID, &created, &expires, &revoked); err != nil {
			return nil, fmt.Errorf("store: sessions: %w", err)
		}
		s.CreatedAt, s.ExpiresAt, s.Revoked = fromUS(created), fromUS(expires), revoked == 1
		out = append(out, s)
	}
	return out, rows.Err()
}

// SMSWithParts is a message and the parts an SMSC accepted, each with the
// state its receipt gave it.
type SMSWithParts struct {
	SMS
	Parts []SMSPart
}

// RecentSMS returns the newest messages to dest, at most limit, with their
// parts.
func (d *DB) RecentSMS(ctx context.Context, dest phonebook.MSISDN, limit int) ([]SMSWithParts, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT id FROM sms_outbox WHERE dest = ? ORDER BY id DESC LIMIT ?`, string(dest), limit)
	if err != nil {
		return nil, fmt.Errorf("store: recent sms: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: recent sms: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: recent sms: %w", err)
	}
	out := make([]SMSWithParts, 0, len(ids))
	for _, id := range ids {
		m, parts, err := d.GetSMS(ctx, id)
		if phonebook.ErrorCode(err) == phonebook.ENotFound {
			continue // purged in between
		}
		if err != nil {
			return nil, err
		}
		out = append(out, SMSWithParts{SMS: m, Parts: parts})
	}
	return out, nil
}

// OutboxOverview is the outbox at a glance, across every node.
type OutboxOverview struct {
	Queued    int64     // waiting to be submitted
	Submitted int64     // accepted by an SMSC, waiting for a receipt
	Failed    int64     // failed, expired or undeliverable since the time asked
	Oldest    time.Time // when the oldest queued message was queued; zero when none
}

// SMSOverview counts the outbox's messages by state; Failed counts those
// that ended badly after since. It reads index ranges as long as the
// counts (BenchmarkSMSOverview): callers should not run it often.
func (d *DB) SMSOverview(ctx context.Context, since time.Time) (OutboxOverview, error) {
	var o OutboxOverview
	n, oldest, err := d.SMSDepth(ctx)
	if err != nil {
		return o, err
	}
	o.Queued, o.Oldest = n, oldest
	err = d.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM sms_outbox WHERE state = ?),
		(SELECT COUNT(*) FROM sms_outbox WHERE state IN (?, ?, ?) AND updated_at > ?)`,
		smsSubmitted, smsFailed, smsExpired, smsUndeliverable, micros(since)).Scan(&o.Submitted, &o.Failed)
	if err != nil {
		return o, fmt.Errorf("store: sms overview: %w", err)
	}
	return o, nil
}

// SMSFinishedBadly reports whether a state is one a message ends in without
// having been delivered: failed, expired or undeliverable.
func SMSFinishedBadly(state string) bool {
	return state == smsFailed || state == smsExpired || state == smsUndeliverable
}
