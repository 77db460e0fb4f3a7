package store

import (
	"context"
	"fmt"
	"time"
)

// AuditEntry is one operator action (console/): who did what, when, to
// which number.
type AuditEntry struct {
	ID     int64
	At     time.Time
	Actor  string // the name the operator signed in with
	Remote string // the operator's address
	Action string // "block", "unblock", "revoke_sessions", "resend_sms", "sign_in", ...
	Target string // the number acted on, "" for none
	Detail string
}

// AddAudit records an operator action. Fields longer than their columns
// are cut (at a character boundary).
func (d *DB) AddAudit(ctx context.Context, e AuditEntry) error {
	if e.At.IsZero() {
		e.At = now()
	}
	_, err := d.db.ExecContext(ctx, `INSERT INTO audit_log (at, actor, remote, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		micros(e.At), clip(e.Actor, 64), clip(e.Remote, 64), clip(e.Action, 32), clip(e.Target, 64), clip(e.Detail, 255))
	if err != nil {
		return fmt.Errorf("store: audit: %w", err)
	}
	return nil
}

// Audit returns the newest entries first, at most limit; those about target
// only when target is not "".
func (d *DB) Audit(ctx context.Context, target string, limit int) ([]AuditEntry, error) {
	q := `SELECT id, at, actor, remote, action, target, detail FROM audit_log`
	var args []any
	if target != "" {
		q += ` WHERE target = ?`
		args = append(args, target)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Remote, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("store: audit: %w", err)
		}
		e.At = fromMicros(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
