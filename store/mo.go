package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// MOFragment is one part of a concatenated inbound SMS.
type MOFragment struct {
	Link       string
	Source     string // as the SMSC sent it
	Dest       string
	Ref        int
	Total      int
	Seq        int
	DataCoding uint8
	Body       []byte // the text bytes after the UDH, still in DataCoding
	ReceivedAt time.Time
}

// MaxMOFragmentBody bounds one stored part; a deliver_sm's message_payload
// can be larger than a short message, but not larger than this.
const MaxMOFragmentBody = 64 << 10

// AddMOFragment stores a part durably (a part stored twice is stored once)
// and, when that completes the message and nobody else is delivering it,
// returns every part in order with a claim of claim: the caller delivers the
// message and calls FinishMO. Otherwise it returns nil. A message already
// delivered is not returned again, whichever part comes again.
func (d *DB) AddMOFragment(ctx context.Context, f MOFragment, claim time.Duration) ([]MOFragment, error) {
	if len(f.Body) > MaxMOFragmentBody || f.Total < 1 || f.Seq < 1 || f.Seq > f.Total {
		return nil, fmt.Errorf("store: mo fragment %d of %d with %d bytes is out of bounds", f.Seq, f.Total, len(f.Body))
	}
	var out []MOFragment
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		out = nil
		t := now()
		verb, tail := "INSERT IGNORE INTO", ""
		if d.dialect == SQLite {
			verb, tail = "INSERT INTO", " ON CONFLICT (link, source, ref, total, seq) DO NOTHING"
		}
		if _, err := tx.ExecContext(ctx, verb+` sms_mo_fragments (link, source, ref, total, seq, dest, data_coding, body, received_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`+tail,
			f.Link, f.Source, f.Ref, f.Total, f.Seq, f.Dest, int(f.DataCoding), f.Body, micros(t)); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT seq, dest, data_coding, body, received_at, done, claimed_until FROM sms_mo_fragments
			WHERE link = ? AND source = ? AND ref = ? AND total = ? ORDER BY seq`+d.forUpdate(),
			f.Link, f.Source, f.Ref, f.Total)
		if err != nil {
			return err
		}
		var parts []MOFragment
		busy := false
		for rows.Next() {
			p := MOFragment{Link: f.Link, Source: f.Source, Ref: f.Ref, Total: f.Total}
			var dc, done int
			var at, claimed int64
			if err := rows.Scan(&p.Seq, &p.Dest, &dc, &p.Body, &at, &done, &claimed); err != nil {
				rows.Close()
				return err
			}
			p.DataCoding, p.ReceivedAt = uint8(dc), fromMicros(at)
			busy = busy || done != 0 || claimed > micros(t)
			parts = append(parts, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil || busy || len(parts) != f.Total {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sms_mo_fragments SET claimed_until = ? WHERE link = ? AND source = ? AND ref = ? AND total = ?`,
			micros(t.Add(claim)), f.Link, f.Source, f.Ref, f.Total); err != nil {
			return err
		}
		out = parts
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: add mo fragment: %w", err)
	}
	return out, nil
}

// FinishMO ends the claim AddMOFragment gave: delivered marks the message
// done (its parts stay as tombstones until they expire); otherwise the
// message may be claimed again by the next part delivered again.
func (d *DB) FinishMO(ctx context.Context, f MOFragment, delivered bool) error {
	q := `UPDATE sms_mo_fragments SET claimed_until = 0 WHERE link = ? AND source = ? AND ref = ? AND total = ?`
	if delivered {
		q = `UPDATE sms_mo_fragments SET done = 1, claimed_until = 0 WHERE link = ? AND source = ? AND ref = ? AND total = ?`
	}
	if _, err := d.db.ExecContext(ctx, q, f.Link, f.Source, f.Ref, f.Total); err != nil {
		return fmt.Errorf("store: finish mo: %w", err)
	}
	return nil
}

// ExpireMOFragments deletes parts received before before: parts of
// messages that never completed, and tombstones of delivered ones.
func (d *DB) ExpireMOFragments(ctx context.Context, before time.Time) (int64, error) {
	res, err := d.db.ExecContext(ctx, `DELETE FROM sms_mo_fragments WHERE received_at < ?`, micros(before))
	if err != nil {
		return 0, fmt.Errorf("store: expire mo fragments: %w", err)
	}
	return res.RowsAffected()
}
